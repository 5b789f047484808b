"""An offline learned-feature distance: a small video classifier trained on toy Physion, and the Frechet
distance and KID of its features. Named for what it is: a *toy-feature Frechet distance*, not FVD.

FVD's idea (Unterthiner et al. 2018, arXiv 1812.01717) is to compare real and generated clips in the feature
space of a network trained to recognise what happens in videos (I3D on Kinetics, ``fvd.py``). Its weights
are not shipped and often unavailable, and toy clips are far from Kinetics anyway. This module keeps the
idea and changes the network: ``ToyVideoNet``, a 3D convnet (four 3x3x3 convolutions, GroupNorm, GELU,
global average pooling, 0.24M parameters) that sees each frame and its difference to the previous frame
(a cheap motion stream, as the optical-flow stream of Simonyan & Zisserman 2014, arXiv 1406.2199), trained
by this project on toy Physion clips of all eight scenarios to predict

- the scenario (8 classes) and whether the agent touches the patient (Physion's OCP label), from the clip;
- the agent's and patient's mean speed (from the simulator's states; standardised regression targets);
- whether the frames are in their true order: half of each batch is the same clips with shuffled frames
  (the order-verification task of Misra et al. 2016, "Shuffle and Learn", arXiv 1603.08561).

Its penultimate activations (``FEATURE_DIM`` = 32 numbers per clip) are the features; a generated set is
compared with a real one by ``distances.frechet_distance`` and ``distances.kernel_distance``. Short
clips, other frame sizes and grey clips are accepted (frames are resized to 32 x 32, grey repeated to RGB;
the network pools over time), so the same features score whole clips and predicted futures alike.

The trained checkpoint ships as ``checkpoints/toy_video_features.pt`` (half precision, < 1 MB), recorded in
``checkpoints/manifest.json`` with the command that made it::

    python -m nano_videodiff.evaluation.toy_features --steps=600 --ship

    net = load_features()                              # the shipped network
    result = toy_feature_distance(real, fake, net)     # {"toy_fd", "toy_fd_ci", "toy_kid", "toy_kid_std"}
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import distances
from .fvd import frechet_with_interval
from ..errors import MissingFile, UserError, run_script
from ..files import atomic_write
from ..training.presets import CHECKPOINTS

FEATURE_DIM = 32
NUM_SCENARIOS = 8
SIZE = 32  # frames are resized to SIZE x SIZE
WIDTHS = (16, 32, 64, 96)
STRIDES = ((1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2))
SHIPPED = CHECKPOINTS / "toy_video_features.pt"
NAME = "toy_video_features"


class ToyVideoNet(nn.Module):
    """(B, T, C, H, W) in [-1, 1] -> features (B, FEATURE_DIM); ``heads`` -> the training targets' logits."""

    def __init__(self):
        super().__init__()
        layers, channels = [], 6  # RGB and the difference to the previous frame
        for width, stride in zip(WIDTHS, STRIDES):
            layers += [nn.Conv3d(channels, width, 3, stride, padding=1), nn.GroupNorm(4, width), nn.GELU()]
            channels = width
        self.convs = nn.Sequential(*layers)
        self.project = nn.Linear(channels, FEATURE_DIM)
        # scenario (8) | contact (1) | frames in order (1) | agent and patient mean speed (2)
        self.heads = nn.Linear(FEATURE_DIM, NUM_SCENARIOS + 4)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = video.shape
        x = video.float().expand(-1, -1, 3, -1, -1) if c == 1 else video.float()
        if (h, w) != (SIZE, SIZE):
            x = F.interpolate(x.flatten(0, 1), size=(SIZE, SIZE), mode="bilinear", align_corners=False,
                              antialias=True).unflatten(0, (b, t))
        motion = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], 1)  # the frame differences
        x = self.convs(torch.cat([x, motion], 2).transpose(1, 2))  # (B, 2C, T, H, W) for Conv3d
        return self.project(x.mean((2, 3, 4)))

    def predict(self, video: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = self.heads(F.gelu(self(video)))
        return {"scenario": out[:, :NUM_SCENARIOS], "contact": out[:, NUM_SCENARIOS],
                "in_order": out[:, NUM_SCENARIOS + 1], "speed": out[:, NUM_SCENARIOS + 2:]}


@torch.no_grad()
def features(net: ToyVideoNet, videos: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(N, FEATURE_DIM) features of clips (N, T, C, H, W), in float64 for the distances."""
    net.eval()
    return torch.cat([net(videos[i:i + batch_size]).double() for i in range(0, len(videos), batch_size)])


def toy_feature_distance(real: torch.Tensor, fake: torch.Tensor, net: Optional[ToyVideoNet] = None) -> dict:
    """Toy-feature Frechet distance (with a bootstrap interval over the generated clips) and KID between two
    sets of clips; ``net`` defaults to the shipped network."""
    net = net or load_features()
    f_real, f_fake = features(net, real), features(net, fake)
    fd = frechet_with_interval(f_real, f_fake)
    kid, kid_std = distances.kernel_distance(f_real, f_fake)
    return {"toy_fd": fd["value"], "toy_fd_ci": fd["ci"], "toy_kid": kid, "toy_kid_std": kid_std}


# ---------------------------------------------------------------------------------------------------
# Training and shipping
# ---------------------------------------------------------------------------------------------------


def shuffle_frames(video: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each clip with its frames in a random order that is never the true one."""
    t = video.shape[1]
    perms = []
    for _ in range(video.shape[0]):
        p = torch.randperm(t, generator=generator)
        while torch.equal(p, torch.arange(t)):
            p = torch.randperm(t, generator=generator)
        perms.append(p)
    return video[torch.arange(video.shape[0])[:, None], torch.stack(perms)]


def mean_speeds(states: torch.Tensor) -> torch.Tensor:
    """(N, 2) mean speed (pixels per frame) of the agent and the patient, from toy Physion states (N, T, K, 6)."""
    return states[:, :, :2, 3:5].norm(dim=-1).mean(1)


def physion_clips(split: str, num_clips: int, progress: bool = True) -> dict:
    """Toy Physion clips of all eight scenarios (16 frames of 32 x 32, 10 fps) as tensors."""
    from toy_data.physion import PhysionDataset
    ds = PhysionDataset("all", num_clips=num_clips, num_frames=16, resolution=SIZE, split=split, progress=progress)
    d = ds.data
    return {"video": torch.from_numpy(d["video"]).float() / 127.5 - 1, "scenario": torch.from_numpy(d["scenario_id"]),
            "contact": torch.from_numpy(d["contact"]).float(), "speed": mean_speeds(torch.from_numpy(d["states"]))}


def losses(net: ToyVideoNet, clips: dict, speed_scale: torch.Tensor, generator: torch.Generator) -> dict:
    """The four training losses on a batch: the clips and the same clips with shuffled frames."""
    video = clips["video"]
    both = torch.cat([video, shuffle_frames(video, generator)])
    out = net.predict(both)
    n = len(video)
    order = torch.cat([torch.ones(n), torch.zeros(n)])
    mean, std = speed_scale
    return {"scenario": F.cross_entropy(out["scenario"], clips["scenario"].repeat(2)),
            "contact": F.binary_cross_entropy_with_logits(out["contact"][:n], clips["contact"]),
            "in_order": F.binary_cross_entropy_with_logits(out["in_order"], order),
            "speed": F.mse_loss(out["speed"][:n], (clips["speed"] - mean) / std)}


@torch.no_grad()
def accuracies(net: ToyVideoNet, clips: dict, seed: int = 0) -> Dict[str, float]:
    """Held-out accuracy of the scenario head and of the order head (real vs shuffled frames)."""
    net.eval()
    video = clips["video"]
    shuffled = shuffle_frames(video, torch.Generator().manual_seed(seed))
    real, fake = net.predict(video), net.predict(shuffled)
    scenario = (real["scenario"].argmax(1) == clips["scenario"]).float().mean()
    order = torch.cat([real["in_order"] > 0, fake["in_order"] <= 0]).float().mean()
    return {"scenario_accuracy": float(scenario), "order_accuracy": float(order)}


def train(steps: int = 600, batch_size: int = 32, num_clips: int = 2048, lr: float = 3e-3, seed: int = 0,
          progress: bool = True) -> ToyVideoNet:
    torch.manual_seed(seed)
    data = physion_clips("train", num_clips, progress)
    speed_scale = (data["speed"].mean(0), data["speed"].std(0).clamp(min=1e-3))
    net = ToyVideoNet()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)  # linear warm-up, then cosine decay to 0
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min((i + 1) / warmup, 0.5 * (
        1 + math.cos(math.pi * min(i / steps, 1.0)))))
    g = torch.Generator().manual_seed(seed)
    start = time.time()
    for step in range(1, steps + 1):
        net.train()
        idx = torch.randint(num_clips, (batch_size,), generator=g)
        parts = losses(net, {k: v[idx] for k, v in data.items()}, speed_scale, g)
        loss = sum(parts.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress and (step % 50 == 0 or step == steps):
            print(f"step {step}/{steps} loss {loss.item():.3f} "
                  + " ".join(f"{k} {v.item():.3f}" for k, v in parts.items()) + f" ({time.time() - start:.0f} s)")
    return net.eval()


def save_features(net: ToyVideoNet, path: Path, steps: int) -> None:
    state = {k: v.half() for k, v in net.state_dict().items()}
    atomic_write(path, lambda f: torch.save({"kind": NAME, "step": steps, "weights": state}, f))


def load_features(path=SHIPPED) -> ToyVideoNet:
    """The trained feature network (weights stored in half precision, computed in float32)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"toy feature network {path} does not exist (train it: python -m "
                          f"nano_videodiff.evaluation.toy_features --ship)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != NAME:
        raise UserError(f"{path} is not a toy feature network checkpoint")
    net = ToyVideoNet()
    net.load_state_dict({k: v.float() for k, v in ckpt["weights"].items()})
    return net.eval()


def measure_check(net: ToyVideoNet, num_clips: int = 128) -> Dict[str, float]:
    """The manifest's check: held-out accuracies on the first ``num_clips`` of 256 test clips."""
    clips = physion_clips("test", 256, progress=False)
    return accuracies(net, {k: v[:num_clips] for k, v in clips.items()}, seed=0)


def ship(net: ToyVideoNet, steps: int, command: str, minutes: float) -> dict:
    """Write checkpoints/toy_video_features.pt and its manifest entry."""
    from ..shipped import MANIFEST, ROOT, read_manifest
    save_features(net, SHIPPED, steps)
    net = load_features(SHIPPED)  # the check is measured on the half-precision weights
    entry = {"file": SHIPPED.name, "command": command, "steps": steps, "kind": "features",
             "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                      text=True).stdout.strip() or "unknown",
             "note": f"toy video feature network (evaluation/toy_features.py), {minutes:.1f} min on one CPU core",
             "check": measure_check(net)}
    manifest = read_manifest()
    manifest[NAME] = entry
    text = json.dumps(manifest, indent=1) + "\n"
    atomic_write(MANIFEST, lambda f: f.write(text.encode()))
    print(f"wrote {SHIPPED} ({SHIPPED.stat().st_size / 1e6:.2f} MB): {entry['check']}")
    return entry


def main(argv=None) -> None:
    args = dict(arg[2:].partition("=")[::2] for arg in (sys.argv[1:] if argv is None else argv))
    unknown = set(args) - {"steps", "batch_size", "ship", "seed"}
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(sorted(unknown))}; usage: python -m "
                        "nano_videodiff.evaluation.toy_features [--steps=600] [--batch_size=32] [--seed=0] [--ship]")
    steps, batch, seed = int(args.get("steps", 600)), int(args.get("batch_size", 32)), int(args.get("seed", 0))
    start = time.time()
    net = train(steps, batch, seed=seed)
    minutes = (time.time() - start) / 60
    print(f"trained in {minutes:.1f} min; held-out: {measure_check(net)}")
    if "ship" in args:
        command = "python -m nano_videodiff.evaluation.toy_features " + " ".join(
            f"--{k}" + (f"={v}" if v else "") for k, v in args.items())
        ship(net, steps, command.strip(), minutes)


if __name__ == "__main__":
    sys.exit(run_script(main))
