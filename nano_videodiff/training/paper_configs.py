"""The papers' full-size models as presets: ``python train.py --config=vdt_l2`` (on a GPU cluster).

Each preset is the paper's network at the paper's width, depth and heads, fed with the toy data at a shape
that gives the paper's token grid. The transformer is then the paper's; only the first and last layers
(patch embedding and output projection) differ where the paper reads latents of a pretrained autoencoder
and we read pixels. ``PAPER_PARAMETERS`` holds the size each paper names; ``tests/test_paper_configs.py``
builds every preset on the ``meta`` device (no memory is allocated) and compares, and ``docs/results.md``
lists both. Every preset trains as it is (``tests/test_every_preset.py``: its ``reduced`` variant, the same
shapes with a narrow network, for one step; the full size under ``pytest -m slow``); ``python train.py
--config=NAME --plan`` says what hardware it needs (``planner.py``, ``docs/paper_presets.md``).

Sources: VDT (arXiv 2305.13311), the VDT-S/2 and VDT-L/2 configurations of its official code
(github.com/RERV/VDT, ``models.py``); Snap Video (arXiv 2402.14797), Table 8 for FIT (also
``fit.SNAPVIDEO_PRESETS``) and Table 7 for the U-Net; W.A.L.T (arXiv 2312.06662), Tables 1, 3d and 8
(also ``walt.WALT_PRESETS``).
"""
from __future__ import annotations

import copy
from dataclasses import fields
from pathlib import Path
from typing import Callable, Dict, List

from .config import Config
from ..errors import MissingFile

# The frame rate of every paper preset on toy Physion, which simulates at 30 fps and sub-samples by an
# integer stride: 10 fps (every 3rd frame, VDT's and SlotFormer's Physion protocol). Rates that do not divide
# 30 (the 8 fps these presets once asked for) need real clips: ``--dataset=videos`` (any ``--fps``).
PAPER_FPS = 10.0


def _vdt(depth: int, dim: int, heads: int) -> Callable[[], Config]:
    """VDT on Physion (its Sec. 4 setting): 16 frames, 8 given, 8 predicted.

    VDT works on 16x16x4 Stable-Diffusion-VAE latents of 128x128 frames with patch 2: an 8x8 token grid.
    Reading 128x128 pixels with patch 16 gives the same 8x8 grid, so the transformer is the paper's.
    """
    def preset() -> Config:
        cfg = Config()
        d, m = cfg.data, cfg.model
        d.dataset, d.scenario, d.fps, d.num_frames, d.height, d.width = "physion", "collide", PAPER_FPS, 16, 128, 128
        d.num_train_clips = 0
        m.backbone, m.depth, m.dim, m.heads, m.patch_size, m.mlp_ratio = "vdt", depth, dim, heads, 16, 4.0
        cfg.task.masking, cfg.task.num_context, cfg.task.context_dropout = "predict", 8, 0.1
        cfg.optim.batch_size, cfg.optim.lr, cfg.optim.max_steps = 256, 1e-4, 400_000
        cfg.run.out_dir = f"out/vdt_{'l' if depth == 28 else 's'}2"
        return cfg
    return preset


def _snapvideo(name: str) -> Callable[[], Config]:
    """Snap Video's FIT (Table 8) with its diffusion framework: sigma_data = 1, sigma_in = s*sqrt(T), LAMB.

    The paper's first stage is 16 frames of 36x64 (H x W), which FIT pads by 4 rows to 40x64 (App. A): a
    10x16 patch grid in 2x4 groups of 5x4 patches (``FIT.padding``). Toy Physion renders 36x64 frames.
    """
    from ..backbones.fit import snapvideo_config

    def preset() -> Config:
        k = snapvideo_config(name)
        cfg = Config()
        d, m = cfg.data, cfg.model
        d.dataset, d.num_frames, d.height, d.width, d.image_fraction, d.max_frame_stride = "physion", 16, 36, 64, 0.5, 4
        d.scenario, d.fps = "all", PAPER_FPS
        m.backbone, m.depth, m.dim, m.heads, m.patch_size = "fit", k["depth"], k["dim"], k["heads"], k["patch_size"]
        m.mlp_ratio, m.fit_latent_dim, m.fit_latent_heads = k["mlp_ratio"], k["latent_dim"], k["latent_heads"]
        m.fit_num_latents, m.fit_global_layers, m.fit_local_layers = (k["num_latents"], k["global_layers"],
                                                                      k["local_layers"])
        m.fit_group_h, m.fit_group_w = k["group_size"]
        m.fit_dropout, m.fit_self_cond_prob = k["dropout"], 0.9  # RIN self-conditioning rate (Snap Video)
        cfg.diffusion.sigma_data, cfg.diffusion.sigma_in = 1.0, 0.0  # 0 = auto: s * sqrt(T)
        o = cfg.optim
        # Table 9: LAMB, lr 5e-3, betas 0.9/0.99, batch 4096 (half images), 550k steps, warm-up 10k,
        # EMA half-life 6000 steps
        o.optimizer, o.lr, o.beta1, o.beta2, o.batch_size, o.max_steps = "lamb", 5e-3, 0.9, 0.99, 4096, 550_000
        o.warmup_steps, o.ema_halflife, o.weight_decay = 10_000, 6000.0, 0.01
        cfg.run.out_dir = f"out/{name}"
        return cfg
    return preset


def _walt(stage: str) -> Callable[[], Config]:
    """W.A.L.T (Sec. 4, Table 8): a causal autoencoder (17 x 128^2 -> 5 x 16^2 x 8), then the transformer.

    ``walt_vae`` is stage 1 (f_s = 8, f_t = 4, c = 8, base width 128, multipliers 1,2,2,4). ``walt_l`` is the
    Kinetics-600 model (frame prediction from 5 frames = 2 latent frames), ``walt_xl`` the UCF-101 one
    (class-conditional; here the 8 toy Physion scenarios are the classes). Both read 5 x 16 x 16 latents
    with patch 1 and 5 x 8 x 8 spatiotemporal windows, AdaLN-LoRA r = 2, AdamW lr 5e-4 (Table 8).
    """
    from ..backbones.walt import LATENT_INPUT, WALT_SIZES

    def preset() -> Config:
        cfg = Config()
        d, m = cfg.data, cfg.model
        d.dataset, d.scenario, d.fps, d.num_frames, d.height, d.width = "physion", "all", PAPER_FPS, 17, 128, 128
        d.num_train_clips = 0
        m.vae_channels, m.vae_channel_mult, m.vae_latent_channels = 128, "1,2,2,4", 8
        m.vae_spatial_down, m.vae_temporal_down = 8, 4
        cfg.optim.lr, cfg.optim.batch_size = 5e-4, 256
        cfg.run.out_dir = f"out/{stage}"
        if stage == "walt_vae":
            m.backbone = "causal_vae"
            cfg.optim.max_steps = 270_000
            return cfg
        d.autoencoder = "out/walt_vae/ckpt.pt"
        cfg.diffusion.sigma_data = 1.0  # the latents are normalised to unit variance
        size, latent = WALT_SIZES[stage], LATENT_INPUT
        m.backbone, m.depth, m.dim, m.heads = "walt", size["depth"], size["dim"], size["heads"]
        m.patch_size, m.adaln_lora_rank, m.mlp_ratio = latent["patch_size"], latent["adaln_lora_rank"], latent["mlp_ratio"]
        m.walt_window_t, m.walt_window_h, m.walt_window_w = 0, *latent["window"][1:]  # 0 = all 5 latent frames
        if stage == "walt_l":
            cfg.task.masking, cfg.task.num_context = "predict", 5
            cfg.optim.max_steps = 270_000
        else:
            d.num_classes = 8  # the 8 toy Physion scenarios stand in for UCF-101's 101 classes
            cfg.optim.max_steps = 60_000
        return cfg
    return preset


def _unet_284m() -> Config:
    """Snap Video's U-Net baseline (Table 7): the 284M video U-Net (spatial U-Net + temporal layers, trained
    end to end) at the paper's input of 16 x 40 x 64 (T x H x W: the first stage's 36 rows padded to 40, which
    the U-Net's three 2x downsamplings need)."""
    from ..backbones.unet import unet_config
    k = unet_config("unet_284m")
    cfg = _snapvideo("snapvideo_500m")()  # same data, diffusion framework and schedule as FIT
    m = cfg.model
    cfg.data.height = 40
    # "the ADM U-Net ... adapted to video by interleaving temporal attention": temporal attention only
    m.backbone, m.freeze_image_model, m.unet_dropout = "videoldm", False, k["dropout"]
    m.vldm_temporal_conv = m.vldm_context = False
    m.unet_channels, m.unet_num_res_blocks = k["channels"], k["num_res_blocks"]
    m.unet_channel_mult = ",".join(map(str, k["channel_mult"]))
    m.unet_attn_resolutions = ",".join(map(str, k["attn_resolutions"]))
    m.heads = k["channels"] // k["head_channels"]
    o = cfg.optim  # Table 9: the U-Nets train with Adam, lr 1e-4, betas 0.9/0.999
    o.optimizer, o.lr, o.beta2 = "adamw", 1e-4, 0.999
    cfg.run.out_dir = "out/unet_284m"
    return cfg


PAPER_PRESETS: Dict[str, Callable[[], Config]] = {
    "vdt_s2": _vdt(depth=12, dim=384, heads=6),
    "vdt_l2": _vdt(depth=28, dim=1152, heads=16),
    "snapvideo_500m": _snapvideo("snapvideo_500m"),
    "snapvideo_3.9b": _snapvideo("snapvideo_3.9b"),
    "unet_284m": _unet_284m,
    "walt_vae": _walt("walt_vae"),
    "walt_l": _walt("walt_l"),
    "walt_xl": _walt("walt_xl"),
}

# What each paper (or its code) says, and how sure we are (the sources are in the module docstring).
PAPER_PARAMETERS = {
    "vdt_s2": (41.4e6, "computed from VDT's models.py layer shapes (paper size unconfirmed)"),
    "vdt_l2": (859.7e6, "computed from VDT's models.py layer shapes"),
    "snapvideo_500m": (500e6, "Snap Video Table 8"),
    "snapvideo_3.9b": (3.9e9, "Snap Video Table 8"),
    "unet_284m": (284e6, "Snap Video Table 7"),
    "walt_l": (313e6, "W.A.L.T Table 1 (AdaLN-LoRA r = 2)"),
    "walt_xl": (460e6, "W.A.L.T Table 1"),
}
# Stage-1 autoencoders have no parameter count in their paper; they are listed with their measured size.
AUTOENCODERS = ("walt_vae",)


# ``reduced``: the width and depth of a preset's network shrunk to these, everything else left as it is.
REDUCED_DIM, REDUCED_HEADS, REDUCED_DEPTH = 32, 2, 2
REDUCED_CHANNELS = 16  # U-Net and autoencoder base width (their channel multipliers, i.e. levels, are kept)


def reduced(cfg: Config) -> Config:
    """The same preset with a narrow, shallow network: a shape-preserving stand-in that trains in seconds.

    Only widths (token width, heads, FIT's latent width, U-Net and autoencoder channels) and depths (blocks,
    FIT's global layers, U-Net residual blocks per level) change. Data, clip shape, frame rate, patching,
    windows, FIT's groups and latent count, the U-Net's levels and attention resolutions, the autoencoder's
    down-sampling factors and latent channels, conditioning, task and diffusion settings are the preset's,
    so a reduced step runs every code path of the full one. A reduced stage 2 (``walt_l``) reads the latents
    of a reduced stage 1 (``walt_vae``): both shrink the autoencoder the same way.
    """
    cfg = copy.deepcopy(cfg)
    m = cfg.model
    # never larger than the preset's; the fields of the other backbones change too (and are not read)
    m.dim, m.heads, m.depth = min(m.dim, REDUCED_DIM), min(m.heads, REDUCED_HEADS), min(m.depth, REDUCED_DEPTH)
    m.fit_latent_dim, m.fit_latent_heads = min(m.fit_latent_dim, REDUCED_DIM), 0  # 0 = dim, heads
    m.fit_global_layers, m.fit_local_layers = min(m.fit_global_layers, 1), min(m.fit_local_layers, 1)
    m.unet_channels = min(m.unet_channels, REDUCED_CHANNELS)
    m.unet_num_res_blocks = min(m.unet_num_res_blocks, 1)
    m.vae_channels = min(m.vae_channels, REDUCED_CHANNELS)
    return cfg


def reduced_args(cfg: Config) -> List[str]:
    """``reduced(cfg)`` as command-line overrides (``--dim=32 --depth=2 ...``): what ``train.py
    --config=NAME`` needs to train the reduced variant, stage 1 of a two-stage job included."""
    small = reduced(cfg)
    return [f"--{f.name}={getattr(small.model, f.name)}" for f in fields(small.model)
            if getattr(small.model, f.name) != getattr(cfg.model, f.name)]


def check_stage_one(cfg: Config) -> None:
    """Stage 2 of a two-stage job without its stage-1 checkpoint (``--autoencoder`` of latent diffusion, or
    ``--init_from``, e.g. Video LDM's image model): a MissingFile error naming the command that trains it (the
    preset writing into that folder, e.g. ``python train.py --config=walt_vae``). Nothing to check when
    train.py trains stage 1 itself first (``autoencoder_preset``)."""
    needed = [] if cfg.data.autoencoder_preset else [("--autoencoder", cfg.data.autoencoder, True)]
    needed.append(("--init_from", cfg.run.init_from, False))
    for flag, path, autoencoder in needed:
        if path and not Path(path).exists():
            raise MissingFile(f"{path} does not exist: this is stage 2 of a two-stage job; train stage 1 first "
                              f"with `{stage_one_command(Path(path), autoencoder)}`, or pass {flag}=<its ckpt.pt>")


def stage_one_command(path: Path, autoencoder: bool) -> str:
    """The preset whose run writes ``path`` (an autoencoder for latent diffusion), as a command."""
    from .presets import PRESETS  # presets.py imports this module
    for name, preset in PRESETS.items():
        cfg = preset()
        if Path(cfg.run.out_dir) / "ckpt.pt" == path and (cfg.model.backbone == "causal_vae") >= autoencoder:
            return f"python train.py --config={name}"
    return f"python train.py {'--backbone=causal_vae ' if autoencoder else ''}--out_dir={path.parent}"
