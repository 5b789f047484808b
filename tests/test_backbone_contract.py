"""``has_unused_parameters`` (backbones/base.py): every backbone declares it, and the declaration is true
exactly when some training step leaves a trainable parameter without a gradient. DDP looks for unused
parameters only where declared: no extra traversal and no warning for the others, no hang for FIT."""
import copy
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.scaling import toy_config
from nano_videodiff.backbones import BACKBONES, backbone_class
from nano_videodiff.conditioning import Batch, Cond
from nano_videodiff.models import build_autoencoder, build_denoiser
from nano_videodiff.training.objectives import build_objective
from nano_videodiff.training.paper_configs import reduced
from nano_videodiff.training.planner import synthetic_inputs
from nano_videodiff.training.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]


def step_variants(cfg):
    """The inputs a training step may or may not have: labels (or not), given frames (or not), and for
    self-conditioning backbones both draws (every sample self-conditioned, or none)."""
    for labels, masking, draw in itertools.product((0, 3), ("none", "predict"), (0.0, 1.0)):
        c = copy.deepcopy(cfg)
        c.data.num_classes, c.task.masking, c.task.num_context = labels, masking, 0
        yield c, draw


def params_without_gradient(cfg, draw) -> list:
    torch.manual_seed(0)
    model = build_denoiser(cfg)
    x, _, cond = synthetic_inputs(cfg, 2)
    model.loss(Batch(x=x.clamp(-1, 1), cond=cond, self_cond_draw=torch.full((2,), draw))).backward()
    return [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_declared_unused_parameters_match_a_real_step(backbone):
    cfg = reduced(toy_config(backbone, frames=2, resolution=16, batch_size=2))
    cfg.model.freeze_image_model = False  # videoldm: train everything (frozen weights are not DDP's concern)
    unused = {name for c, draw in step_variants(cfg) for name in params_without_gradient(c, draw)}
    assert backbone_class(backbone).has_unused_parameters == bool(unused), sorted(unused)


def test_autoencoder_uses_every_parameter_and_objectives_pass_the_declaration():
    cfg = reduced(get_preset("smoke_autoencoder"))
    vae = build_autoencoder(cfg)
    vae.loss(Batch(x=torch.rand(2, 5, 3, 16, 16) * 2 - 1, cond=Cond())).backward()
    assert not vae.has_unused_parameters and all(p.grad is not None for p in vae.parameters())
    assert build_objective(cfg).has_unused_parameters is False
    fit = get_preset("bouncing_balls_fit")
    assert build_objective(fit).has_unused_parameters is True


def torchrun_train(tmp_path, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(ROOT / "train.py"), "--config=smoke", "--max_steps=2", "--preview_every=0",
                           "--parallel=ddp", f"--out_dir={tmp_path / 'run'}", *args],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow  # two processes: ~15 s on an idle 2-core machine
def test_ddp_without_unused_parameters_does_not_search_for_them(tmp_path):
    proc = torchrun_train(tmp_path)  # VDT: every parameter gets a gradient
    assert "find_unused_parameters=True" not in proc.stderr  # DDP's warning when the search found nothing


@pytest.mark.slow  # a second 2-process run
def test_ddp_trains_a_backbone_with_unused_parameters(tmp_path):
    # FIT without given frames: known_embed gets no gradient; DDP must know, or it waits for it forever
    torchrun_train(tmp_path, "--backbone=fit", "--fit_group_h=2", "--fit_group_w=2", "--fit_num_latents=8")
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 2  # both steps finished under DDP (without the flag it would fail or hang)
