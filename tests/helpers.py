"""Small helpers shared by the backbone tests (test_vdt.py, test_fit.py)."""
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
