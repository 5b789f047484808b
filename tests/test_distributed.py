"""nano_videodiff/training/distributed.py: activation checkpointing, checkpoint names and resume across strategies,
gradient accumulation, precision helpers, and 2-process DDP / FSDP2 on CPU (gloo) against one process."""
import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import _dist_worker as W
from helpers import randomise
from nano_videodiff.training import distributed as D
from nano_videodiff.training.checkpoint import load_checkpoint, save_checkpoint
from nano_videodiff.edm import Denoiser
from nano_videodiff.backbones.fit import FIT
from nano_videodiff.backbones.vdt import VDTBlock

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def tiny_fit():
    """A FIT with dropout (so recomputation must replay the same random masks) and self-conditioning."""
    torch.manual_seed(0)
    fit = FIT(in_channels=3, num_frames=4, height=8, width=8, patch_size=4, dim=32, heads=2, latent_dim=32,
              latent_heads=2, num_latents=8, group_size=(1, 1), depth=2, global_layers=1, dropout=0.2)
    return randomise(Denoiser(fit, self_condition_prob=0.5), std=0.1)


def loss_and_grads(model, batch, seed=0):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout masks and self-conditioning draws in both runs
    loss = W.Loss(model)(*batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def saved_activation_numel(model, batch):
    """Elements of the tensors autograd keeps for backward (outside checkpointed regions)."""
    numel = [0]

    def pack(t):
        numel[0] += t.numel()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.manual_seed(0)
        W.Loss(model)(*batch)
    return numel[0]


@pytest.mark.parametrize("make", [W.build_model, tiny_fit], ids=["vdt", "fit"])
def test_activation_checkpointing_same_loss_and_gradients_less_memory(make):
    plain = make()
    ckpt = copy.deepcopy(plain)
    D.apply_activation_checkpointing(ckpt.backbone)
    batch = W.batch_slice(0, 0, 1)
    loss_a, grads_a = loss_and_grads(plain, batch)
    loss_b, grads_b = loss_and_grads(ckpt, batch)
    assert torch.equal(loss_a, loss_b)
    for name, g in grads_a.items():
        assert torch.allclose(grads_b[name], g, rtol=1e-5, atol=1e-7), name
    # The activations inside the blocks are no longer kept: recomputed in backward instead.
    assert saved_activation_numel(ckpt, batch) < 0.6 * saved_activation_numel(plain, batch)


def test_activation_checkpointing_keeps_names_deepcopies_and_fails_clearly():
    model = W.build_model()
    names = list(model.state_dict())
    blocks = D.apply_activation_checkpointing(model.backbone)
    D.apply_activation_checkpointing(model.backbone)  # a second call changes nothing
    assert [b is m for b, m in zip(blocks, model.backbone.blocks)] == [True, True]
    assert type(blocks[0]).__name__ == "CheckpointedVDTBlock" and type(blocks[0]).__bases__ == (VDTBlock,)
    assert list(model.state_dict()) == names  # checkpoints are unchanged
    # The EMA is a deepcopy: its blocks must checkpoint too, and compute with their *own* weights.
    ema = copy.deepcopy(model)
    assert type(ema.backbone.blocks[1]) is type(blocks[1])
    batch = W.batch_slice(0, 0, 1)
    W.Loss(ema)(*batch).backward()
    assert all(p.grad is not None for p in ema.parameters())
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="no nn.ModuleList named '...blocks'"):
        D.apply_activation_checkpointing(nn.Sequential(nn.Linear(2, 2)))


def test_find_blocks_takes_outer_lists_only():
    inner = nn.Module()
    inner.blocks = nn.ModuleList([nn.Linear(2, 2)])
    net = nn.Module()
    net.down_blocks = nn.ModuleList([inner, nn.Linear(2, 2)])
    net.up_blocks = nn.ModuleList([nn.Linear(2, 2)])
    net.layers = nn.ModuleList([nn.Linear(2, 2)])  # not called "...blocks"
    assert D.find_blocks(net) == [inner, net.down_blocks[1], net.up_blocks[0]]


def test_strip_wrapper_prefixes():
    model = W.build_model()
    plain = list(model.state_dict())
    assert list(D.strip_wrapper_prefixes(nn.DataParallel(model).state_dict())) == plain  # "module." (DDP-style)
    assert list(D.strip_wrapper_prefixes(torch.compile(model).state_dict())) == plain    # "_orig_mod."
    t = torch.zeros(1)
    wrapped = {"module._orig_mod.backbone.w": t, "_orig_mod.module.a.b": t, "backbone._orig_mod.blocks.0.w": t,
               "denoiser.module.weight": t, "submodule.w": t, "module.x.module.y": t}
    assert list(D.strip_wrapper_prefixes(wrapped)) == ["backbone.w", "a.b", "backbone.blocks.0.w",
                                                        "denoiser.module.weight", "submodule.w", "x.module.y"]


def test_full_state_dict_round_trip_in_one_process():
    model = W.build_model()
    state = D.full_state_dict(torch.compile(model))  # a compiled model saves plain names
    assert list(state) == list(model.state_dict())
    other = W.build_model(seed=1)
    assert not torch.equal(other.backbone.embed.weight, model.backbone.embed.weight)
    D.load_full_state_dict(other, {"module." + k: v for k, v in state.items()})  # prefixes are stripped
    for name, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[name], value), name
    first, *rest = state  # torch would keep the old value of a missing key silently: we refuse
    with pytest.raises(ValueError, match=f"1 problems\\): missing {first}$"):
        D.load_full_state_dict(other, {k: state[k] for k in rest})
    with pytest.raises(ValueError, match="unexpected extra.*shape \\(1,\\)"):
        D.load_full_state_dict(other, {**state, "extra": torch.zeros(1), first: torch.zeros(1)})


def test_optimizer_state_resumes_exactly_and_is_not_aliased(tmp_path):
    model = W.build_model()
    optimizer = W.make_optimizer(model)
    W.train_step(W.Loss(model), model, optimizer, 0)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"model": D.full_state_dict(model),
                           "optimizer": D.full_optimizer_state_dict(model, optimizer),
                           "legacy_optimizer": optimizer.state_dict()})
    W.train_step(W.Loss(model), model, optimizer, 1)
    ckpt = load_checkpoint(path)  # weights_only=True: names, tensors and plain containers only
    assert "backbone.blocks.0.attn_t.to_q.weight" in ckpt["optimizer"]["state"]
    before = copy.deepcopy(ckpt["optimizer"])
    for key in ("optimizer", "legacy_optimizer"):
        resumed = W.build_model(seed=1)
        opt = W.make_optimizer(resumed)
        D.load_full_state_dict(resumed, ckpt["model"])
        D.load_full_optimizer_state_dict(resumed, opt, ckpt[key])
        W.train_step(W.Loss(resumed), resumed, opt, 1)
        for name, value in model.state_dict().items():
            assert torch.allclose(resumed.state_dict()[name], value, atol=1e-7), (key, name)
    for name, s in before["state"].items():  # the loaded dict was not updated by the optimizer in place
        assert torch.equal(ckpt["optimizer"]["state"][name]["exp_avg"], s["exp_avg"]), name


def test_gradient_accumulation_equals_one_big_batch():
    assert D.micro_batches(1, 2, 2) == [(0, 2, 4), (1, 3, 4)]  # rank 1 of 2: the 3rd and 4th quarter
    with pytest.raises(ValueError, match="accum_steps"):
        D.micro_batches(0, 1, 0)
    model = W.build_model()
    _, full = loss_and_grads(model, W.batch_slice(0, 0, 1))
    model.zero_grad(set_to_none=True)
    for micro, vrank, vworld in D.micro_batches(0, 1, 2):
        with D.no_sync_if(model, micro == 0):  # nothing to skip without a wrapper
            (W.Loss(model)(*W.batch_slice(0, vrank, vworld)) / 2).backward()
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, full[name], rtol=1e-5, atol=1e-7), name


def test_wrap_for_training_errors():
    model = W.Loss(W.build_model())
    assert D.wrap_for_training(model, "none", CPU) is model
    with pytest.raises(ValueError, match="unknown strategy 'zero'"):
        D.wrap_for_training(model, "zero", CPU)
    assert not torch.distributed.is_initialized()  # this test process never joins a process group
    with pytest.raises(RuntimeError, match="torchrun"):
        D.wrap_for_training(model, "fsdp", CPU)


def test_autocast_and_grad_scaler():
    layer = nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with D.autocast_context(CPU, "fp32"):
        assert layer(x).dtype == torch.float32
    with D.autocast_context(CPU, "bf16"):
        assert layer(x).dtype == torch.bfloat16
    assert layer.weight.dtype == torch.float32  # weights (and the optimizer) stay float32
    with pytest.raises(ValueError, match="fp16 training needs a CUDA GPU.*bf16"):
        D.autocast_context(CPU, "fp16")
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        D.autocast_context(CPU, "fp8")
    cuda = torch.device("cuda", 0)
    assert D.needs_grad_scaler(cuda, "fp16")
    assert not D.needs_grad_scaler(cuda, "bf16") and not D.needs_grad_scaler(CPU, "fp16")
    scaler = D.grad_scaler(CPU, "bf16")
    loss = layer(x).sum()
    assert not scaler.is_enabled() and scaler.scale(loss) is loss  # a pass-through: one loop for all dtypes
    assert isinstance(scaler, torch.amp.GradScaler)  # also under FSDP2: see the 2-process test's "scaler"


def test_two_processes_ddp_and_fsdp_equal_one_process(tmp_path):
    """torchrun, 2 CPU ranks (gloo): DDP and FSDP2, each also with activation checkpointing + 2 micro-batches,
    match one process on the same global batch; checkpoints move between strategies in both directions."""
    model = W.build_model()
    optimizer = W.make_optimizer(model)
    loss0 = W.train_step(W.Loss(model), model, optimizer, 0)
    save_checkpoint(tmp_path / "single_step1.pt", {"model": D.full_state_dict(model),
                                                   "optimizer": D.full_optimizer_state_dict(model, optimizer),
                                                   "legacy_optimizer": optimizer.state_dict()})
    single = load_checkpoint(tmp_path / "single_step1.pt")
    loss1 = W.train_step(W.Loss(model), model, optimizer, 1)
    after1 = model.state_dict()

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(ROOT / "tests" / "_dist_worker.py"), str(tmp_path)],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    results = load_checkpoint(tmp_path / "rank0.pt")
    # no_sync_if really skips the all-reduce (the sums below would match without it: averaging is linear)
    assert results.pop("synced") == {("ddp", True): False, ("ddp", False): True,
                                     ("fsdp", True): False, ("fsdp", False): True}
    # An inf gradient in rank 0's shard only: both ranks skip the step and halve the scale (GradScaler)
    assert results.pop("scaler") == [(False, 2.0), (False, 2.0)]
    assert set(results) == set(W.CONFIGS)
    assert all(n == 0 for n in torch.load(tmp_path / "rank1.pt", weights_only=True).values())  # full dicts go to rank 0 only

    plain_names = list(single["model"])
    for name, r in results.items():
        strategy = W.CONFIGS[name][0]
        assert r["sharded"] == (strategy == "fsdp"), name
        assert ("cannot be sharded" in r["legacy_error"]) if strategy == "fsdp" else "legacy_error" not in r
        assert all(k.startswith("module.denoiser.") for k in r["wrapped_keys"]) == (strategy == "ddp"), name
        assert D.strip_wrapper_prefixes(dict.fromkeys(r["wrapped_keys"])) == dict.fromkeys(
            "denoiser." + k for k in plain_names), name
        assert r["loss"] == pytest.approx(loss0, rel=1e-6), name
        assert list(r["model"]) == plain_names, name
        for k, v in single["model"].items():  # the same weights after one step, gathered from the shards
            assert torch.allclose(r["model"][k], v, atol=2e-6), (name, k)
        assert r["optimizer"]["param_groups"] == single["optimizer"]["param_groups"], name
        for k, s in single["optimizer"]["state"].items():
            for field, value in s.items():
                assert torch.allclose(r["optimizer"]["state"][k][field], value, rtol=1e-4, atol=1e-9), (name, k)
        for g, v in zip(r["gathered"], r["model"].values()):  # gathered_parameters: parameters() order
            assert torch.equal(g, v), name
        # Single-process checkpoint -> this strategy on 2 ranks -> the same second step.
        assert r["resumed_loss"] == pytest.approx(loss1, rel=1e-6), name
        for k, v in after1.items():
            assert torch.allclose(r["resumed_model"][k], v, atol=2e-6), (name, k)

    # And back: the 2-rank FSDP checkpoint resumes in this single process (no process group).
    fsdp = results["fsdp_ckpt_accum"]
    resumed = W.build_model(seed=1)
    opt = W.make_optimizer(resumed)
    D.load_full_state_dict(resumed, fsdp["model"])
    D.load_full_optimizer_state_dict(resumed, opt, fsdp["optimizer"])
    assert W.train_step(W.Loss(resumed), resumed, opt, 1) == pytest.approx(loss1, rel=1e-6)
    for k, v in after1.items():
        assert torch.allclose(resumed.state_dict()[k], v, atol=2e-6), k
