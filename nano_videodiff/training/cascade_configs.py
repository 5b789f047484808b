"""Cascades as presets: a toy base model and 16 -> 64 upsampler on bouncing balls, and the papers' stages.

Toy cascade (CPU minutes each; Video LDM's recipe, arXiv 2304.08818 Sec. 3.1-3.2, both stages alike):

    python train.py --config=cascade_base_frames   # image U-Net on single 16x16 frames
    python train.py --config=cascade_base          # + temporal layers: the 8 x 16x16 base video model
    python train.py --config=cascade_sr_frames     # image upsampler 16 -> 64, trained on 16x16 crops
    python train.py --config=cascade_sr            # + temporal layers: the aligned video upsampler
    python sample.py --ckpt=out/cascade_base/ckpt.pt --upsampler=out/cascade_sr/ckpt.pt --aug_sigma=0.1

Paper stages (built on the meta device by the tests; ``CASCADE_PARAMETERS`` says what each paper states):
``walt_sr1`` (W.A.L.T Sec. 4.5: 128x224 -> 256x448, depth-to-space input), ``walt_sr2`` (256x448 ->
512x896) and ``snapvideo_sr`` (Snap Video Sec. 3.5 / App. C: 36x64 -> 288x512, sigma_in = 32 from
``s * sqrt(T)``). The papers read latents (W.A.L.T) or give no upsampler architecture (Snap Video); these
presets are our assumptions, written next to each, at the papers' resolutions, in pixel space.
"""
from __future__ import annotations

from typing import Callable, Dict

from ..edm import relative_P_mean
from .config import Config


# What a toy upsampler diffuses is the residual over its bilinear input (upsampler.py), whose std
# (upsampler.residual_std, 64 training clips, no augmentation) is 0.12 for these clips at 4x, not the clips'
# own 0.37 or EDM's default 0.5: EDM's preconditioning should be told the std of the data it diffuses
# (with 0.5 the same 3000-step stage scored 23.7 dB against 25.6, docs/cascades.md).
SR_SIGMA_DATA = 0.12


def _toy(stage: str) -> Callable[[], Config]:
    """The toy cascade on bouncing balls, 8 frames at 8 fps: base 16x16, upsampler 4x to 64x64."""
    def preset() -> Config:
        cfg = Config()
        d, m, o, r = cfg.data, cfg.model, cfg.optim, cfg.run
        m.backbone, m.heads, m.unet_num_res_blocks = "unet", 4, 1
        d.num_frames, d.height, d.width = 8, 16, 16
        m.unet_channels, m.unet_channel_mult, m.unet_attn_resolutions = 16, "1,2", "8"  # 0.19M (tutorial 05's)
        r.out_dir, r.dtype = f"out/{stage}", "fp32"
        o.lr, o.warmup_steps, o.ema_halflife = 2e-3, 50, 200.0
        cfg.diffusion.sample_steps = 16
        if stage.startswith("cascade_sr"):  # 16 -> 64: the U-Net sees [noisy 64x64 frame, bilinear(16x16)]
            d.height = d.width = 64
            m.sr_factor, m.sr_input, m.sr_aug_max, m.sr_crop = 4, "bilinear", 0.5, 32  # 32x32 crops
            m.unet_channels, m.unet_channel_mult, m.unet_attn_resolutions = 16, "1,2,2", "16"
            cfg.diffusion.sigma_data = SR_SIGMA_DATA
            cfg.diffusion.P_mean = relative_P_mean(SR_SIGMA_DATA)  # EDM's noise levels relative to the data
            r.preview_every = 0  # previews sample from noise alone; a stage needs a low-res input
        if stage.endswith("_frames"):  # the image model: single frames
            d.num_frames = 1
            o.batch_size, o.max_steps = (16, 8000) if m.sr_factor > 1 else (32, 3000)
            return cfg
        m.backbone, m.freeze_image_model = "videoldm", True  # + temporal layers, the image model frozen
        o.batch_size, o.max_steps, o.lr, o.warmup_steps = 4, 2000, 1e-2, 30  # tutorial 05's alignment
        r.init_from = f"out/{stage}_frames/ckpt.pt"
        return cfg
    return preset


def _walt_sr(stage: str) -> Callable[[], Config]:
    """W.A.L.T Sec. 4.5's super-resolution stages, 17 frames: SR1 128x224 -> 256x448, SR2 -> 512x896.

    Assumed: W.A.L.T-L's transformer (24 x 1024, Table 1) with its windows (AdaLN-LoRA r = 2), pixel
    patches giving the same 32x56 token grid as the base's latents at 256x448 (patch 8 for SR1, 16 for SR2),
    the depth-to-space input of Sec. 4.5, and t_sr ~ U(0, t_max) augmentation (t_max assumed 0.5 here).
    """
    from ..backbones.walt import WALT_SIZES
    from .paper_configs import PAPER_FPS

    def preset() -> Config:
        cfg = Config()
        d, m = cfg.data, cfg.model
        d.dataset, d.scenario, d.fps, d.num_frames = "physion", "all", PAPER_FPS, 17  # the toy data's stand-in
        d.height, d.width = (256, 448) if stage == "walt_sr1" else (512, 896)
        size = WALT_SIZES["walt_l"]
        m.backbone, m.depth, m.dim, m.heads = "walt", size["depth"], size["dim"], size["heads"]
        m.patch_size = 8 if stage == "walt_sr1" else 16
        m.walt_window_t, m.walt_window_h, m.walt_window_w, m.adaln_lora_rank = 0, 8, 8, 2
        m.sr_factor, m.sr_input, m.sr_aug_max = 2, "depth_to_space", 0.5
        cfg.optim.lr, cfg.optim.batch_size = 5e-4, 256
        cfg.run.out_dir, cfg.run.preview_every = f"out/{stage}", 0
        return cfg
    return preset


def _snapvideo_sr() -> Config:
    """Snap Video's second stage (Sec. 3.5, App. C): 16 frames 36x64 -> 288x512, sigma_in = 32 (auto).

    Assumed: the 3.9B FIT of Table 8 at 288x512 (patch 4: a 72x128 grid in groups of 9x16 patches), the
    first stage's video bilinearly upsampled 8x and concatenated; sampled with 40 Heun steps (App. C).
    """
    from .paper_configs import PAPER_PRESETS
    cfg = PAPER_PRESETS["snapvideo_3.9b"]()
    d, m = cfg.data, cfg.model
    d.height, d.width, d.image_fraction = 288, 512, 0.0
    m.fit_group_h, m.fit_group_w = 9, 16
    m.sr_factor, m.sr_input, m.sr_aug_max = 8, "bilinear", 0.5
    cfg.diffusion.sample_steps = 40
    cfg.run.out_dir, cfg.run.preview_every = "out/snapvideo_sr", 0
    return cfg


CASCADE_PRESETS: Dict[str, Callable[[], Config]] = {
    **{name: _toy(name) for name in ("cascade_base_frames", "cascade_base", "cascade_sr_frames", "cascade_sr")},
    "walt_sr1": _walt_sr("walt_sr1"),
    "walt_sr2": _walt_sr("walt_sr2"),
    "snapvideo_sr": _snapvideo_sr,
}

# What the papers state about each stage's size (None: not stated, as far as we found).
CASCADE_PARAMETERS = {
    "walt_sr1": (None, "W.A.L.T Sec. 4.5 gives the stages' resolutions, not their sizes; ours: W.A.L.T-L's"),
    "walt_sr2": (None, "W.A.L.T Sec. 4.5 gives the stages' resolutions, not their sizes; ours: W.A.L.T-L's"),
    "snapvideo_sr": (None, "Snap Video App. C: no upsampler size found; ours: the 3.9B FIT of Table 8"),
}
