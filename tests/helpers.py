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


class FakeModel(torch.nn.Module):
    """The sampler's side of a denoiser (``forward_with_state``, ``sigma_in``, ``autoencoder``) around a
    function ``fn(x, sigma, cond) -> x0``; counts its calls and records every context it is shown."""

    def __init__(self, fn, autoencoder=None):
        super().__init__()
        self.fn, self.autoencoder, self.sigma_in = fn, autoencoder, 1.0
        self.calls, self.contexts = 0, []

    def forward_with_state(self, x, sigma, cond):
        self.calls += 1
        if cond.known is not None and (not self.contexts or self.contexts[-1] is not cond.known_x):
            self.contexts.append(cond.known_x)
        return self.fn(x, sigma, cond), None
