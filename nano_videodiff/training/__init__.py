"""Training: what ``train.py`` is built from, around the diffusion ideas of the package.

- ``config``        the run's typed dataclasses and the one ``--key=value`` parser (a leaf: imports nothing).
- ``presets``, ``paper_configs``  named experiments (toy sizes; the papers' full-size models).
- ``batches``       the global batch of a step as a named ``Batch``, drawn from per-step generators.
- ``objectives``    one objective per trainable model: ``loss = objective(batch)``, previews, finishing.
- ``optim``, ``lamb``  AdamW/LAMB, the learning-rate schedule, the EMA of the weights.
- ``distributed``   DDP / FSDP2, activation checkpointing, gradient accumulation, precision.
- ``checkpoint``    safe, atomic checkpoints; strict loading with clear errors (damaged files, NaN weights).
- ``previews``      preview videos and the loss curve written while a run trains.
- ``runs``          a run's folder: what it holds, its log, Ctrl-C / SIGTERM (save, then stop).
"""
