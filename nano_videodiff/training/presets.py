"""Named presets: a function per experiment that returns a full ``Config`` (``python train.py --config=NAME``),
and ``resolve``, which turns a command line (a preset and ``--key=value`` overrides) into a Config.

Toy presets live here (CPU, minutes); the papers' full-size models are in ``paper_configs.py`` and are
registered into the same ``PRESETS`` table. ``smoke`` runs in seconds (the tests use it);
``physion_collide`` is the default main job of ``python train.py``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Tuple

from .config import Config, apply_overrides, fields_help, split_args
from .cascade_configs import CASCADE_PRESETS
from .paper_configs import PAPER_PRESETS
from ..errors import UserError

# Pretrained toy checkpoints shipped with the repository (checkpoints/manifest.json says how each was made).
CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"  # nano_videodiff/training/ -> the root

def _bouncing_balls() -> Config:
    """Bouncing balls: 2 balls, 16 frames of 32x32, unconditional generation with a 1.8M-parameter VDT."""
    cfg = Config()
    cfg.optim.max_steps = 1000  # ~10 minutes on a 2-core CPU in bf16
    cfg.run.out_dir = "out/bouncing_balls"
    return cfg


def _smoke() -> Config:
    """Seconds on a CPU: a tiny model on tiny clips. The tests train with it."""
    cfg = Config()
    cfg.data.num_frames, cfg.data.height, cfg.data.width = 4, 16, 16
    cfg.model.dim, cfg.model.depth, cfg.model.heads = 32, 1, 2
    cfg.optim.batch_size, cfg.optim.max_steps, cfg.optim.warmup_steps = 4, 20, 2
    cfg.optim.ema_halflife = 5.0
    cfg.diffusion.sample_steps = 4
    cfg.run.out_dir, cfg.run.dtype = "out/smoke", "fp32"
    cfg.run.log_every, cfg.run.ckpt_every, cfg.run.preview_every = 5, 10, 10
    cfg.run.num_preview, cfg.run.preview_steps = 2, 3
    return cfg


def _smoke_autoencoder() -> Config:
    """The smoke preset's causal autoencoder (stage 1 of the tests' two-stage jobs)."""
    cfg = _smoke()
    cfg.data.num_frames = 5  # 1 + f_t k frames
    cfg.model.backbone, cfg.model.vae_channels, cfg.model.vae_channel_mult = "causal_vae", 8, "1"
    cfg.run.out_dir = "out/smoke_autoencoder"
    return cfg


def _physion(scenario: str) -> Callable[[], Config]:
    """Toy Physion, VDT's setting: 16 frames at 10 fps, the first 8 given, the last 8 predicted."""
    def preset() -> Config:
        cfg = Config()
        d = cfg.data
        d.dataset, d.scenario, d.fps = "physion", scenario, 10.0
        d.num_train_clips, d.num_test_clips = 4096, 256
        cfg.task.masking, cfg.task.num_context, cfg.task.context_dropout = "predict", 8, 0.1
        cfg.optim.max_steps = 1200
        if scenario == "all":  # one model for the eight scenarios, told which one it is
            d.num_classes = 8
        cfg.run.out_dir = f"out/physion_{scenario}"
        return cfg
    return preset


def _moving_mnist() -> Config:
    """Moving MNIST's protocol: 20 frames of 64x64, 10 given -> 10 predicted."""
    cfg = Config()
    d = cfg.data
    d.dataset, d.num_frames, d.height, d.width, d.channels, d.num_balls, d.fps = "moving_mnist", 20, 64, 64, 1, 2, 10.0
    cfg.model.patch_size = 8
    cfg.task.masking, cfg.task.num_context, cfg.task.context_dropout = "predict", 10, 0.1
    cfg.run.out_dir = "out/moving_mnist"
    return cfg


def _bouncing_balls_tasks() -> Config:
    """One model for all of VDT's tasks on bouncing balls (masking.MaskMixture's default mixture)."""
    cfg = _bouncing_balls()
    cfg.task.masking = "vdt"
    cfg.run.out_dir = "out/bouncing_balls_tasks"
    return cfg


def _physion_collide_tasks() -> Config:
    """VDT's task mixture on toy Physion Collide: one model for generation, prediction, backward prediction,
    interpolation, animation and completion of physics clips (fixed agent/patient colours make this much
    easier to learn in CPU minutes than bouncing balls with random colours and sizes)."""
    cfg = _physion("collide")()
    cfg.task.masking, cfg.task.num_context = "vdt", 8
    cfg.run.out_dir = "out/physion_collide_tasks"
    return cfg


def _with_fit(base: Callable[[], Config], name: str) -> Callable[[], Config]:
    """The same experiment with Snap Video's FIT backbone (toy size: 2 blocks x 2 global layers)."""
    def preset() -> Config:
        cfg = base()
        m = cfg.model
        m.backbone, m.dim, m.heads, m.depth = "fit", 128, 4, 2
        m.fit_num_latents, m.fit_global_layers = 64, 2
        # groups: all frames x a quarter of the patch grid in each direction (4 groups)
        m.fit_group_h = max(1, cfg.data.height // m.patch_size // 2)
        m.fit_group_w = max(1, cfg.data.width // m.patch_size // 2)
        cfg.run.out_dir = f"out/{name}"
        return cfg
    return preset


def _walt_physion(stage: str) -> Callable[[], Config]:
    """W.A.L.T's two stages on toy Physion Collide (latent.py): 17 frames = 1 + 2*8, so the causal
    autoencoder (f_s = 4, f_t = 2, c = 4) gives 9 latent frames of 8x8; 9 given frames = 5 latent frames.

    ``walt_vae_physion`` trains the autoencoder; ``walt_physion`` the window-attention transformer on its
    normalised latents (patch 1: 9 x 8 x 8 tokens, spatiotemporal windows 9 x 4 x 4), predicting the last
    8 frames from the first 9, as the default main job does in pixel space, jointly with images (single
    frames; the identity mask keeps them out of the spatiotemporal layers).
    """
    def preset() -> Config:
        cfg = _physion("collide")()
        d, m = cfg.data, cfg.model
        d.num_frames = 17
        m.vae_channels, m.vae_channel_mult, m.vae_latent_channels = 16, "1,2", 4
        m.vae_spatial_down, m.vae_temporal_down = 4, 2
        cfg.run.out_dir = f"out/{stage}"
        if stage == "walt_vae_physion":  # 0.6M parameters
            m.backbone = "causal_vae"
            cfg.task.masking, cfg.task.context_dropout = "none", 0.0
            cfg.optim.max_steps, cfg.optim.lr, cfg.optim.batch_size = 1200, 1e-3, 8
            return cfg
        d.image_fraction = 0.25  # joint training: a quarter of each batch is single frames (images)
        d.autoencoder = "out/walt_vae_physion/ckpt.pt"
        cfg.diffusion.sigma_data = 1.0  # normalised latents have unit variance
        m.backbone, m.patch_size, m.dim, m.depth, m.heads = "walt", 1, 128, 4, 4
        m.walt_window_t, m.walt_window_h, m.walt_window_w, m.adaln_lora_rank = 0, 4, 4, 2
        cfg.task.num_context = 9
        return cfg
    return preset


def _physion_collide_main() -> Config:
    """The default main job (``python train.py``): W.A.L.T latent diffusion on toy Physion Collide, sized to
    finish in under 10 minutes on a 2-core CPU in fp32, predicting the last 8 frames from the first 9.

    Stage 1 is the causal autoencoder of ``walt_vae_physion``, shipped trained in
    ``checkpoints/physion_autoencoder.pt`` (the autoencoder alone needs ~20 CPU minutes to reconstruct the
    clips well enough: its SSIM bounds the prediction's). If that file is missing, or with
    ``--autoencoder="{out_dir}/autoencoder/ckpt.pt"``, ``train.py`` trains stage 1 first, in the same command.
    Stage 2 trains a small W.A.L.T on the autoencoder's normalised latents, cached once before the first step:
    latent patches of 2 x 2 (4 x 4 tokens a latent frame, 144 a clip; whole-frame spatial windows alternate
    with spatiotemporal windows over all 9 latent frames), 2000 steps of 8 clips. docs/main_job.md has the
    recipes tried and why this one.
    """
    cfg = _walt_physion("walt_physion")()
    d, m, o = cfg.data, cfg.model, cfg.optim
    d.autoencoder = str(CHECKPOINTS / "physion_autoencoder.pt")
    d.autoencoder_preset = "walt_vae_physion"
    d.image_fraction = 0.0  # prediction only: every sample of the budget is a clip to continue
    m.patch_size, m.walt_window_h, m.walt_window_w = 2, 4, 4
    o.batch_size, o.max_steps = 8, 2000  # at a fixed budget, more smaller steps beat fewer larger ones here
    cfg.diffusion.sample_steps = 16
    # Training noise: ln(sigma / sigma_data) ~ N(0.5, 1.2^2), centred a little above SNR 1. EDM's
    # P_mean = -1.2 was tuned with sigma_data = 0.5 (edm.relative_P_mean gives -0.51 for these unit-variance
    # latents); prediction gains from still more of the high noise levels, where the model decides where the
    # objects go. The largest effect in docs/main_job.md: PSNR 29.9 (P_mean -1.2) -> 35.0 dB at the same cost.
    cfg.diffusion.P_mean = 0.5
    # No context dropout: the main job always predicts from given frames and samples without guidance, so
    # every training sample teaches prediction (+0.6 dB); --cfg_scale with --guidance=context needs it > 0.
    cfg.task.context_dropout = 0.0
    # 2048 training clips: as good as 4096 in 2000 steps of 8 (docs/main_job.md) and half the one-off
    # simulation and encoding, which an AVX2-only CPU needs for its 10-minute budget.
    d.num_train_clips = 2048
    cfg.run.out_dir, cfg.run.preview_every = "out/physion_collide_main", 1000
    return cfg


def _physion_text() -> Config:
    """Text-to-video on toy Physion, all eight scenarios (text.py, toy_data/captions.py): the main job's latent
    W.A.L.T generating whole clips from captions of the simulator's ground truth, read through W.A.L.T's
    concatenated text attention (Sec. 4.3); a learned text encoder, text dropped w.p. 0.1 for guidance."""
    cfg = _physion_collide_main()
    cfg.data.scenario = "all"
    cfg.task.masking, cfg.task.num_context = "none", 0
    cfg.model.text_encoder = "learned"
    cfg.diffusion.label_dropout = 0.1  # the caption is dropped with it (classifier-free guidance)
    cfg.optim.max_steps = 8000  # text alone must make the whole clip: 2000 steps followed prompts at chance
    cfg.run.out_dir = "out/physion_text"
    return cfg


def _videoldm_bouncing_balls(stage: str) -> Callable[[], Config]:
    """Video LDM on bouncing balls (temporal_alignment.py): an image U-Net trained on single frames
    (``unet_frames``), then aligned into a video model by training only inserted temporal layers
    (``videoldm_bouncing_balls``, ``--init_from`` the image model's checkpoint)."""
    def preset() -> Config:
        cfg = _bouncing_balls()
        m, o = cfg.model, cfg.optim
        m.backbone, m.heads = "unet", 4
        m.unet_channels, m.unet_channel_mult, m.unet_num_res_blocks, m.unet_attn_resolutions = 32, "1,2,2", 1, "8"
        cfg.run.out_dir = f"out/{stage}"
        if stage == "unet_frames":  # single frames: an image model
            cfg.data.num_frames = 1
            o.batch_size, o.max_steps, o.lr, o.warmup_steps, o.ema_halflife = 32, 600, 2e-3, 50, 50.0
            return cfg
        m.backbone, m.freeze_image_model = "videoldm", True
        cfg.data.num_frames = 8
        o.batch_size, o.max_steps, o.lr, o.warmup_steps, o.ema_halflife = 8, 300, 3e-3, 30, 50.0
        cfg.run.init_from = "out/unet_frames/ckpt.pt"
        return cfg
    return preset


def _bouncing_balls_interp() -> Config:
    """Video LDM's temporal interpolation stack on bouncing balls (interpolation.py): one VDT fills 3 frames
    between each pair of key frames (9-frame windows of 16x16, frames 0, 4, 8 given) at two rates, told apart
    by a learned stage embedding. The clips are filmed at 32 fps with a quarter of the usual speed per frame:
    stage 0 sees every 4th frame (8 fps, the motion of ``bouncing_balls``; key frames at 2 fps), stage 1
    consecutive frames, so 5 key frames become 17 frames, then 65 (docs/interpolation.md)."""
    cfg = _bouncing_balls()
    d, m, o = cfg.data, cfg.model, cfg.optim
    d.num_frames, d.height, d.width, d.fps, d.ball_speed = 9, 16, 16, 32.0, 0.25
    m.num_stages, m.dim, m.depth, m.heads = 2, 64, 4, 4
    cfg.task.masking = "interpolate"
    cfg.diffusion.P_mean = -0.7  # centred on sigma_data: more of the high noise levels, where motion is decided
    o.batch_size, o.max_steps, o.lr, o.warmup_steps, o.ema_halflife = 8, 1500, 2e-3, 50, 100.0
    cfg.run.out_dir, cfg.run.preview_every = "out/bouncing_balls_interp", 0
    return cfg


PRESETS: Dict[str, Callable[[], Config]] = {
    "bouncing_balls": _bouncing_balls,
    "bouncing_balls_tasks": _bouncing_balls_tasks,
    "bouncing_balls_interp": _bouncing_balls_interp,
    "physion_collide_tasks": _physion_collide_tasks,
    "moving_mnist": _moving_mnist,
    "smoke": _smoke,
    "smoke_autoencoder": _smoke_autoencoder,
    "physion_collide_main": _physion_collide_main,
    "physion_text": _physion_text,
    "walt_vae_physion": _walt_physion("walt_vae_physion"),
    "walt_physion": _walt_physion("walt_physion"),
    "unet_frames": _videoldm_bouncing_balls("unet_frames"),
    "videoldm_bouncing_balls": _videoldm_bouncing_balls("videoldm_bouncing_balls"),
    **{f"physion_{name}": _physion(name) for name in
       ("dominoes", "support", "collide", "contain", "drop", "link", "roll", "drape", "all")},
}
for _name in ("bouncing_balls", "physion_collide", "moving_mnist"):
    PRESETS[f"{_name}_fit"] = _with_fit(PRESETS[_name], f"{_name}_fit")
DEFAULT_PRESET = "physion_collide_main"
PRESETS.update(PAPER_PRESETS)  # the papers' full-size models (paper_configs.py)
PRESETS.update(CASCADE_PRESETS)  # base + super-resolution stages, toy and paper (cascade_configs.py)


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise UserError(f"unknown config preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()


def resolve(argv: List[str]) -> Tuple[Config, List[str], bool]:
    """``--config=NAME --key=value ...`` -> (the preset with the overrides applied, changed keys, wants_help)."""
    overrides, wants_help = split_args(argv)
    cfg = get_preset(overrides.pop("config", DEFAULT_PRESET))
    changed = apply_overrides(cfg, overrides)
    return cfg, changed, wants_help


def help_text(cfg: Config, program: str) -> str:
    return "\n".join([f"usage: python {program} [--config=NAME] [--key=value ...]",
                      f"presets: {', '.join(sorted(PRESETS))} (default: {DEFAULT_PRESET})",
                      "fields (value shown is the preset's):", fields_help(cfg)])
