"""Real data: your own videos (``videos.py``) and a DataLoader that keeps the (seed, step) batch (``loader.py``).

``toy_data.build_dataset`` stays the one entry point: ``--dataset=videos --data_root=PATH`` builds a
``videos.VideoDataset`` from there, next to the procedural toy datasets.
"""
