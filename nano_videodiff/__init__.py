"""nano-videodiff: a minimal, tested reference implementation of video diffusion transformers.

One module per idea (see README.md and ../DESIGN notes):

- ``edm``         EDM preconditioning with Snap Video's input scaling ``sigma_in``; the loss.
- ``sampler``     EDM's Heun/Euler sampler (Alg. 1 and 2) with guidance and a state hook.
- ``conditioning`` the ``Cond`` dataclass every backbone receives.
- ``layers``      attention, MLP, adaLN modulation, embeddings, patchify: shared by backbones.
- ``vdt``         VDT's space-time transformer (the first backbone).
- ``config``      dataclass configs, named presets, ``--key=value`` overrides.
"""

__version__ = "0.1.0"
