"""I3D (evaluation/i3d.py) with random weights built here (nothing is downloaded), and FVD's protocol (fvd.py)."""
import math

import pytest
import torch
from torch import nn

from nano_videodiff.errors import MissingFile, UserError
from nano_videodiff.evaluation import fvd, i3d


def random_i3d(seed=0):
    torch.manual_seed(seed)
    net = i3d.InceptionI3d()
    with torch.no_grad():  # non-trivial batch-norm statistics, as in a trained network
        for m in net.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.mark.slow  # about 10 s per 224 x 224 x 16 forward on one CPU core
def test_i3d_on_the_protocols_input_gives_400_logits_deterministically():
    net = random_i3d()
    x = torch.rand(1, 3, 16, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        out, again = net(x), net(x)
    assert out.shape == (1, i3d.NUM_CLASSES) and torch.isfinite(out).all()
    assert torch.equal(out, again)
    with torch.no_grad():
        assert random_i3d()(x).equal(out)  # same seed, same network
        assert net(x, features=True).shape == (1, 1024)


def test_i3d_gives_400_logits_deterministically_and_per_clip():
    """The fast version of the test above: 16 frames of 64 x 64 (the network is fully convolutional)."""
    net = random_i3d(1)
    x = torch.randn(2, 3, 16, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        both, first, again = net(x), net(x[:1]), random_i3d(1)(x)
        features = net(x, features=True)
    assert both.shape == (2, i3d.NUM_CLASSES) and features.shape == (2, 1024) and torch.isfinite(both).all()
    assert torch.equal(both, again)  # same seed, same network, same logits
    assert torch.allclose(both[:1], first, atol=1e-5)  # eval mode: a clip's logits do not depend on the batch
    assert not torch.allclose(both[0], both[1])


@pytest.mark.parametrize("n,k,s", [(224, 7, 2), (16, 7, 2), (15, 3, 2), (8, 2, 2), (7, 3, 1), (5, 1, 1)])
def test_same_padding_gives_tensorflows_output_size(n, k, s):
    x = torch.zeros(1, 1, n, n, n)
    padded = i3d._same_pad(x, (k, k, k), (s, s, s))
    out = (padded.shape[2] - k) // s + 1
    assert out == math.ceil(n / s)
    total = padded.shape[2] - n
    assert total == max((math.ceil(n / s) - 1) * s + k - n, 0)  # TF: the extra element at the end


def test_load_i3d_from_a_state_dict_with_a_dataparallel_prefix(tmp_path):
    net = random_i3d(2)
    path = tmp_path / "i3d_state.pt"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    loaded = i3d.load_i3d(path)
    x = torch.randn(1, 3, 8, 32, 32)
    assert not loaded.scripted and torch.equal(loaded(x), net(x).detach())


class ScriptedDetector(nn.Module):
    """Stands in for i3d_torchscript.pt: the same call signature (StyleGAN-V's detector_kwargs)."""

    def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = False):
        if rescale or resize or not return_features:  # the protocol: no rescaling or resizing, raw features
            return torch.full((x.shape[0], 400), float("nan"))
        return x.mean((2, 3, 4))[:, :1].repeat(1, 400)


def test_load_i3d_from_torchscript_calls_it_with_the_reference_arguments(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(ScriptedDetector()).save(str(path))
    loaded = i3d.load_i3d(path)
    x = torch.randn(2, 3, 16, 224, 224)
    out = loaded(x)
    assert loaded.scripted and out.shape == (2, 400) and torch.isfinite(out).all()


def test_without_weights_a_clear_error_and_no_download(tmp_path):
    with pytest.raises(UserError, match="--fvd_weights"):
        i3d.load_i3d("")
    with pytest.raises(MissingFile, match="does not exist"):
        i3d.load_i3d(tmp_path / "i3d_torchscript.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(UserError, match="neither"):
        i3d.load_i3d(junk)
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(UserError, match="InceptionI3d"):
        i3d.load_i3d(other)


def test_preprocess_follows_the_protocol():
    video = torch.rand(2, 17, 1, 36, 64) * 2 - 1  # grey, non-square, one frame too many
    x = fvd.preprocess(video)
    assert x.shape == (2, 3, fvd.CLIP_LENGTH, 224, 224)
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(x[:, 0], x[:, 2])  # grey repeated to RGB
    flat = torch.full((1, 16, 3, 32, 32), 0.25)
    assert torch.allclose(fvd.preprocess(flat), torch.full((1, 3, 16, 224, 224), 0.25))
    with pytest.raises(UserError, match="16-frame"):
        fvd.preprocess(torch.zeros(1, 8, 3, 32, 32))


class MeanColour(nn.Module):
    """A toy 'I3D': per-channel means and their squares, so distances have a known direction."""

    def forward(self, x):
        m = x.mean((2, 3, 4))
        return torch.cat([m, m ** 2], 1)


def test_fvd_is_zero_for_identical_sets_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(5, 16, 3, 8, 8, generator=g) * 2 - 1
    extractor = i3d.I3DFeatures(MeanColour(), False, "toy")
    same = fvd.fvd(real, real, extractor)
    shifted = fvd.fvd(real, (real + 0.3).clamp(-1, 1), extractor)
    assert same["fvd"] == pytest.approx(0.0, abs=1e-9)
    assert shifted["fvd"] > 0.01 and shifted["fvd_ci"][0] <= shifted["fvd"] <= shifted["fvd_ci"][1] + 1e-12
    assert same["num_real"] == 5 and same["clip_length"] == 16 and same["weights"] == "toy"
