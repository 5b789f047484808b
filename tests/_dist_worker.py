"""The multi-process half of tests/test_distributed.py, and the definitions both halves share.

Run by the test as ``torchrun --standalone --nproc_per_node=2 tests/_dist_worker.py OUT_DIR``. Each rank
trains copies of one tiny VDT denoiser for one step under several strategies (DDP, FSDP2, FSDP2 with
activation checkpointing and 2 micro-batches, ...) on its slice of a fixed global batch, then resumes each
strategy from a single-process checkpoint (OUT_DIR/single_step1.pt, written by the test) for a second
step. Rank 0 writes everything it measured to OUT_DIR/rank0.pt; the test compares it with one process.
"""
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from helpers import randomise  # tests/ is on sys.path: it is the script's folder, and pytest's rootdir
from nano_videodiff.training import distributed as D
from nano_videodiff.conditioning import Batch, Cond
from nano_videodiff.edm import Denoiser
from nano_videodiff.backbones.vdt import VDT

GLOBAL_BATCH = 4
MAX_GRAD_NORM = 0.5   # small enough that clipping is active, so the clipped norm is checked too
CONFIGS = {  # name: (strategy, activation checkpointing, micro-batches per step)
    "ddp": ("ddp", False, 1),
    "fsdp": ("fsdp", False, 1),
    "ddp_ckpt_accum": ("ddp", True, 2),
    "fsdp_ckpt_accum": ("fsdp", True, 2),
}


class Loss(nn.Module):
    """As train.py's TrainingLoss: the loss is the forward, so DDP/FSDP hooks see the whole step."""

    def __init__(self, denoiser):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, x, cond, sigma, noise):
        return self.denoiser.loss(Batch(x, cond, sigma=sigma, noise=noise))


def build_model(seed=0) -> Denoiser:
    torch.manual_seed(seed)
    model = Denoiser(VDT(in_channels=3, patch_size=4, dim=32, depth=2, heads=2))
    return randomise(model, seed=seed, std=0.1)  # no zero-initialised layer: every parameter gets a gradient


def make_optimizer(model):
    """AdamW with train.py's two parameter groups (weight decay on matrices only)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=1e-2, betas=(0.9, 0.99), eps=1e-4)


def batch_slice(step, rank, world):
    """This rank's slice of the global batch of ``step`` (drawn whole, from a per-step generator)."""
    g = torch.Generator().manual_seed(100 + step)
    B = GLOBAL_BATCH
    x = torch.rand(B, 4, 3, 8, 8, generator=g) * 2 - 1
    sigma = torch.exp(torch.randn(B, generator=g) - 0.5)
    noise = torch.randn(x.shape, generator=g)
    known = torch.zeros(B, 4, 1, 8, 8, dtype=torch.bool)
    known[: B // 2, :2] = True  # half the samples predict frames 2-3 from 0-1 (VDT mask modeling)
    mine = slice(rank * B // world, (rank + 1) * B // world)
    cond = Cond(frame_interval=torch.full((B,), 0.125)[mine], known=known[mine], known_x=x[mine])
    return x[mine], cond, sigma[mine], noise[mine]


def train_step(step_module, model, optimizer, step, rank=0, world=1, accum=1) -> float:
    """One optimizer step on the global batch of ``step``; returns the global-batch loss."""
    total = torch.zeros(())
    for micro, vrank, vworld in D.micro_batches(rank, world, accum):
        with D.no_sync_if(step_module, micro < accum - 1):
            loss = step_module(*batch_slice(step, vrank, vworld)) / accum
            loss.backward()
        total += loss.detach()
    nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if world > 1:
        dist.all_reduce(total)
        total /= world
    return total.item()


def gradients_synced(strategy, skip) -> bool:
    """One backward inside ``no_sync_if(module, skip)``: were the gradients averaged across ranks?"""
    model = build_model()
    step_module = D.wrap_for_training(Loss(model), strategy, torch.device("cpu"))
    rank, world = dist.get_rank(), dist.get_world_size()
    with D.no_sync_if(step_module, skip):
        step_module(*batch_slice(0, rank, world)).backward()
    if strategy == "fsdp":  # FSDP2 keeps unreduced gradients aside and leaves the sharded .grad unset
        return all(p.grad is not None for p in model.parameters())
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    everyone = [torch.empty_like(grads) for _ in range(world)]
    dist.all_gather(everyone, grads)
    return all(torch.equal(g, grads) for g in everyone)


def scaler_skips_everywhere():
    """fp16 loss scaling under FSDP2: an inf in one rank's gradient shard must skip the step on every rank.
    (An enabled GradScaler on CPU, to test here what grad_scaler returns for fp16 on CUDA.)"""
    model = build_model()
    step_module = D.wrap_for_training(Loss(model), "fsdp", torch.device("cpu"))
    optimizer = make_optimizer(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    scaler.scale(step_module(*batch_slice(0, dist.get_rank(), dist.get_world_size()))).backward()
    weight = model.backbone.embed.weight
    if dist.get_rank() == 0:
        weight.grad.to_local()[0, 0] = float("inf")
    before = weight.to_local().clone()
    scaler.step(optimizer)
    scaler.update()
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, (not torch.equal(before, weight.to_local()), scaler.get_scale()))
    return everyone


def main(out_dir: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    single = torch.load(out_dir / "single_step1.pt", weights_only=True)
    results = {}
    for name, (strategy, act_ckpt, accum) in CONFIGS.items():
        model = build_model()
        if act_ckpt:
            D.apply_activation_checkpointing(model.backbone)
        step_module = D.wrap_for_training(Loss(model), strategy, torch.device("cpu"))
        optimizer = make_optimizer(model)  # after wrapping: FSDP2 replaces the parameters by DTensors
        loss = train_step(step_module, model, optimizer, 0, rank, world, accum)
        r = {"loss": loss, "model": D.full_state_dict(model),
             "optimizer": D.full_optimizer_state_dict(model, optimizer),
             "gathered": [p.clone() for p in D.gathered_parameters(model)],
             "wrapped_keys": list(step_module.state_dict()),
             "sharded": any(isinstance(p, torch.distributed.tensor.DTensor) for p in model.parameters())}
        # Resume the single-process run's step-1 checkpoint under this strategy, into other weights.
        model = build_model(seed=1)
        if act_ckpt:
            D.apply_activation_checkpointing(model.backbone)
        step_module = D.wrap_for_training(Loss(model), strategy, torch.device("cpu"))
        optimizer = make_optimizer(model)
        D.load_full_state_dict(model, single["model"])
        D.load_full_optimizer_state_dict(model, optimizer, single["optimizer"])
        if strategy == "fsdp":  # a positional optimizer.state_dict() cannot be sharded: a clear error
            try:
                D.load_full_optimizer_state_dict(model, optimizer, single["legacy_optimizer"])
            except ValueError as e:
                r["legacy_error"] = str(e)
        r["resumed_loss"] = train_step(step_module, model, optimizer, 1, rank, world, accum)
        r["resumed_model"] = D.full_state_dict(model)
        results[name] = r
    results["scaler"] = scaler_skips_everywhere()
    results["synced"] = {(strategy, skip): gradients_synced(strategy, skip)
                         for strategy in ("ddp", "fsdp") for skip in (True, False)}
    if rank == 0:
        torch.save(results, out_dir / "rank0.pt")
    else:  # only rank 0 receives the full state dicts
        torch.save({name: len(r["model"]) + len(r["optimizer"]) for name, r in results.items() if name in CONFIGS},
                   out_dir / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    assert "RANK" in os.environ, "run under torchrun: see the module docstring"
    main(Path(sys.argv[1]))
