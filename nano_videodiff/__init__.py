"""nano-videodiff: a minimal, tested reference implementation of video diffusion transformers.

One module per idea (see README.md):

- ``edm``          EDM preconditioning with Snap Video's input scaling ``sigma_in``; SNR helpers; the loss.
- ``sampler``      EDM's Heun/Euler sampler (Alg. 1 and 2) with guidance and a state hook.
- ``modality``     images as infinite-fps videos, variable frame rate, joint image+video batches (Snap Video).
- ``masking``      VDT's task masks, the training mixture, and the one place a mask is applied.
- ``vdt``          VDT's space-time transformer (three ways to condition on given frames).
- ``fit``          Snap Video's FIT: patch groups, latent tokens, read/compute/write, self-conditioning.
- ``window_attention``, ``walt``  W.A.L.T's spatial/spatiotemporal windows, identity mask, AdaLN-LoRA.
- ``causal_vae``, ``latent``      W.A.L.T's causal 3D autoencoder; latent diffusion through train.py.
- ``unet``, ``temporal_alignment``  an ADM-style image U-Net; Video LDM's temporal layers and alpha.
- ``distributed``  DDP / FSDP2, activation checkpointing, accumulation, precision, full checkpoints.
- ``layers``       attention, MLP, adaLN modulation, embeddings, patchify: shared by the backbones.
- ``conditioning`` the ``Cond`` dataclass every backbone receives.
- ``metrics``, ``physics_eval``  PSNR/SSIM/MSE, object trajectories and contact; model vs baselines.
- ``config``, ``presets``, ``paper_configs``, ``models``, ``batches``, ``generation``, ``previews``,
  ``checkpoint``, ``video_io``, ``lamb``: the plumbing that train.py and sample.py are built from.
"""

__version__ = "0.1.0"
