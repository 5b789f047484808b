"""Real data: your own videos (``videos.py``), a DataLoader that keeps the (seed, step) batch (``loader.py``),
and WebDataset shards of clips or of cached latents (``shards.py``).

``toy_data.build_dataset`` stays the one entry point: ``--dataset=videos`` and ``--dataset=webdataset`` build
their datasets from there, next to the procedural toy datasets.
"""
