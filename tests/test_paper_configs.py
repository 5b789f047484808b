"""Every full-size paper preset builds on the meta device with the parameter count its paper names."""
import pytest
import torch

from nano_videodiff.training.presets import PRESETS, get_preset
from nano_videodiff.models import build_denoiser, count_parameters
from nano_videodiff.models import build_autoencoder
from nano_videodiff.training.paper_configs import AUTOENCODERS, PAPER_PARAMETERS, PAPER_PRESETS

# Allowed relative difference, per preset, and why.
TOLERANCE = {
    # Our VDT block has adaLN on the temporal branch too (9 d^2 instead of VDT's 6 d^2 + a d^2 temporal_fc),
    # and reads pixels with patch 16 instead of latents with patch 2: 25 d^2 vs 23 d^2 per block (+8.7%),
    # plus the larger pixel patch embedding (measured: +10.4% for S/2, +9.0% for L/2).
    "vdt_s2": 0.12,
    "vdt_l2": 0.12,
    # Snap Video: paper 500M / 3.9B, our FIT at 40x64 measures 499.9M / 4.057B (tests/test_fit.py); the
    # square 64x64 input adds 1.1M / 1.6M of positional embedding.
    "snapvideo_500m": 0.02,
    "snapvideo_3.9b": 0.05,
    # W.A.L.T: 313.9M / 461.0M measured vs 313M / 460M; we add a frame-interval embedder (+1.3M for L) and
    # leave out Swin relative position biases (~0.8M) and text cross-attention (unconfirmed in the paper).
    # Snap Video's 284M video U-Net: 281.3M measured; Table 7 leaves the temporal layers' exact form open.
    "unet_284m": 0.02,
    "walt_l": 0.01,
    "walt_xl": 0.01,
}


def test_every_paper_preset_is_registered_with_a_source():
    assert set(PAPER_PRESETS) <= set(PRESETS)
    assert set(PAPER_PRESETS) == set(PAPER_PARAMETERS) | set(AUTOENCODERS)
    assert set(PAPER_PARAMETERS) == set(TOLERANCE)


def test_walt_autoencoder_preset_gives_the_papers_latent_shape():
    cfg = get_preset("walt_vae").validate()
    with torch.device("meta"):
        vae = build_autoencoder(cfg)
    assert vae.latent_shape(17, 128, 128) == (5, 8, 16, 16)  # W.A.L.T Table 8: 17x128x128 -> 5x16x16, c = 8


@pytest.mark.parametrize("name", sorted(PAPER_PARAMETERS))
def test_paper_preset_parameter_count_on_meta(name):
    cfg = get_preset(name).validate()
    with torch.device("meta"):
        model = build_denoiser(cfg)
    count = count_parameters(model.backbone)
    paper, _source = PAPER_PARAMETERS[name]
    assert abs(count / paper - 1) < TOLERANCE[name], f"{name}: {count / 1e6:.1f}M vs paper {paper / 1e6:.1f}M"
