"""Small helpers shared by the backbone tests (test_vdt.py, test_fit.py, test_unet.py, test_temporal_alignment.py)."""
import torch


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randomise(model, seed=0, std=0.2):
    """Put every parameter at a random value (as after training): no zero gate or zero output layer left."""
    g = gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def video(b, t, c, h, w, seed=0):
    return torch.randn(b, t, c, h, w, generator=gen(seed))


def small_unet(seed=0, **kw):
    """An image U-Net on 8x8 frames, two levels (8x8 and 4x4), attention at 4x4 (and in the middle block)."""
    from nano_videodiff.backbones.unet import UNet
    torch.manual_seed(seed)
    cfg = dict(in_channels=3, channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
               image_size=8, heads=2)
    cfg.update(kw)
    return UNet(**cfg)
