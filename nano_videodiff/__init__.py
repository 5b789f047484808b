"""nano-videodiff: a minimal, tested reference implementation of video diffusion transformers.

One module per idea (see README.md). The diffusion ideas sit at the top of the package:

- ``edm``          EDM's denoiser D with Snap Video's input scaling ``sigma_in``; given content in D; the loss.
- ``sampler``      EDM's Heun/Euler sampler (Alg. 1 and 2) with guidance and a state hook.
- ``masking``      VDT's task masks and training mixture: which positions are given.
- ``modality``     images as infinite-fps videos, variable frame rate, joint image+video batches (Snap Video).
- ``latent``       latent diffusion on W.A.L.T's causal autoencoder: shapes, given frames, stage-1 weights.
- ``generation``   sampling videos (with given content, guidance, latents) from a trained denoiser.
- ``conditioning`` ``Cond``, what a backbone is given, and ``Batch``, what a training step is given.
- ``models``       the denoiser around the backbone a config names; loading a trained checkpoint.
- ``hardware``, ``shipped``  the device and precision choice; the shipped checkpoints and their checks.
- ``errors``, ``files``  user errors (``error: <message>``, exit status 2); atomic writes and folder locks.

``backbones/`` holds the networks F (VDT, FIT, W.A.L.T, U-Net, Video LDM, the causal autoencoder) and their
registry; ``training/`` what train.py is built from (config, presets, batches, objectives, optimizer,
distributed, checkpoints, previews); ``evaluation/`` metrics, the physics evaluation and video files.
"""

__version__ = "0.1.0"
