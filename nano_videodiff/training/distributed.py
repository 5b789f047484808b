"""Scaling a training step: DDP or FSDP2, activation checkpointing, gradient accumulation, mixed precision,
and checkpoints that do not care how the run was split. ``train.py`` wires these in; each is optional.

- DDP: every rank holds the whole model and optimizer, computes gradients on its slice of the global
  batch, and the gradients are averaged (all-reduce) during backward.
- FSDP2 (``torch.distributed.fsdp.fully_shard``): parameters, gradients and optimizer state are split
  across ranks; a block's parameters are gathered just before it runs and freed after, its gradients
  reduce-scattered. Same maths as DDP, memory per rank divided by the world size.
- Activation checkpointing: a block keeps only its inputs and recomputes its activations in backward.
- Gradient accumulation: several micro-batches per optimizer step, all-reduce only on the last one.

Checkpoints hold *full* tensors with *plain* names (``backbone.blocks.0.mlp.fc1.weight``: no "module."
from DDP, no "_orig_mod." from torch.compile, no shards), so a run saved under 2-process FSDP resumes in
one process and the other way round (tests/test_distributed.py checks both).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Dict, Iterator, List, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.checkpoint import checkpoint

from ..errors import UserError

STRATEGIES = ("none", "ddp", "fsdp")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---- Finding the repeated blocks (the unit of sharding and of activation checkpointing) ----------

def find_blocks(module: nn.Module) -> List[nn.Module]:
    """The members of every ``nn.ModuleList`` whose attribute name ends in "blocks" (``blocks``,
    ``down_blocks``, ...), outermost first; lists nested inside an already found block are skipped."""
    found: Dict[str, nn.Module] = {}
    for name, sub in module.named_modules():
        inside = any(name.startswith(prefix + ".") for prefix in found)
        if isinstance(sub, nn.ModuleList) and name.rsplit(".", 1)[-1].endswith("blocks") and not inside:
            found.update({f"{name}.{i}": block for i, block in enumerate(sub)})
    return list(found.values())


# ---- Wrapping the training module: none | ddp | fsdp ---------------------------------------------

def wrap_for_training(module: nn.Module, strategy: str, device: torch.device,
                      find_unused_parameters: bool = False, reshard_after_forward: bool = True) -> nn.Module:
    """Return the module to call in the training step (``module`` itself for "none" and "fsdp").

    - "ddp": pass ``find_unused_parameters=True`` for a model of which some training steps leave parameters
      without a gradient (``Backbone.has_unused_parameters``, e.g. FIT without given frames): DDP would
      wait for them forever. Elsewhere it is off: it costs an extra autograd traversal every step (and
      DDP warns when it finds nothing). ``device_ids`` only on CUDA (on CPU DDP runs the module where it is).
    - "fsdp": FSDP2, applied bottom-up: each block of ``find_blocks`` (or, if there are none, each
      top-level child with parameters) becomes its own shard group, then the root takes what is left
      (embeddings, final layer). A group's parameters are all-gathered just before it runs, so peak
      memory is one block's full weights, not the model's. FSDP2 changes ``module`` in place and turns
      its parameters into DTensors: build the optimizer *after* this call. With gloo it runs on CPU.
    Every rank must have called ``torch.distributed.init_process_group`` (torchrun + train.py do).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if strategy == "none":
        return module
    if not dist.is_initialized():
        raise RuntimeError(f"strategy {strategy!r} needs torch.distributed.init_process_group first: launch "
                           "with torchrun (e.g. torchrun --standalone --nproc_per_node=2 train.py)")
    if strategy == "ddp":
        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                       find_unused_parameters=find_unused_parameters)
    if hasattr(module, "_orig_mod"):  # a torch.compile wrapper
        raise ValueError("shard first, then compile: call module.compile() (in place) after wrap_for_training")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    units = find_blocks(module) or [c for c in module.children() if next(c.parameters(), None) is not None]
    for unit in units:
        fully_shard(unit, mesh=mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(module, mesh=mesh, reshard_after_forward=reshard_after_forward)
    return module


def gathered_parameters(model: nn.Module) -> Iterator[torch.Tensor]:
    """``model.parameters()`` as full tensors (an FSDP shard is all-gathered), e.g. for the EMA update.

    Collective under FSDP: every rank must run through the whole iterator, in the same order."""
    for p in model.parameters():
        yield p.full_tensor() if isinstance(p, DTensor) else p.detach()


# ---- Checkpoints that any world size and strategy can load ---------------------------------------

def strip_wrapper_prefixes(state_dict: Dict[str, object]) -> Dict[str, object]:
    """Plain names: drop the leading "module." of DDP/DataParallel and every "_orig_mod." of torch.compile.

    Whole name components only: DDP's "module." is always in front (possibly several, mixed with
    "_orig_mod."), "_orig_mod." is also inside a name when a submodule was compiled. A submodule that is
    really called "module" further in (``denoiser.module.weight``) keeps its name.
    """
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        while parts and parts[0] in ("module", "_orig_mod"):
            parts = parts[1:]
        out[".".join(p for p in parts if p != "_orig_mod")] = value
    return out


def _full_options(**kw) -> StateDictOptions:
    # full_state_dict: gather FSDP shards into whole tensors. cpu_offload (only with a process group):
    # move them to CPU one at a time and keep them on rank 0 only, so no rank holds two full copies in GPU
    # memory; the other ranks get {} (they do not write the checkpoint).
    return StateDictOptions(full_state_dict=True, cpu_offload=dist.is_initialized(), **kw)


def full_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Full, unsharded tensors on CPU with plain names. Under DDP/FSDP every rank must call it (it
    gathers); only rank 0 gets the tensors, the others get {}. Names are relative to ``model``: pass the
    Denoiser (not the objective wrapping it) so they match ``model.state_dict()`` of a plain model. In one process the
    tensors are the parameters themselves, as with ``state_dict()``: save them before the next step."""
    state = get_model_state_dict(model, options=_full_options())
    return {k: v.detach().cpu() for k, v in strip_wrapper_prefixes(state).items()}


def load_full_state_dict(model: nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """Load a full state dict (from ``full_state_dict``, any world size/strategy) into ``model``, plain or
    sharded: each rank passes the whole dict (every rank reads the checkpoint file) and keeps its shard.

    Names and shapes are checked here first: with full_state_dict=True, torch (2.14) silently keeps the
    current value of a parameter that is missing from ``state``, even with strict=True."""
    state = strip_wrapper_prefixes(state)
    own = strip_wrapper_prefixes(model.state_dict())  # DTensors under FSDP: their .shape is the full shape
    problems = [f"missing {k}" for k in own if k not in state] + [f"unexpected {k}" for k in state if k not in own]
    problems += [f"{k}: shape {tuple(state[k].shape)} vs {tuple(own[k].shape)} in the model"
                 for k in own if k in state and state[k].shape != own[k].shape]
    if problems:
        raise ValueError(f"this state dict does not fit the model ({len(problems)} problems): "
                         + "; ".join(problems[:4]) + (" ..." if len(problems) > 4 else ""))
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=True))


def full_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state keyed by parameter *name*, with full tensors: ``{"state": {name: {...}},
    "param_groups": [{..., "params": [names]}]}``. ``optimizer.state_dict()`` keys by position and holds
    only this rank's shards under FSDP, so it cannot be resumed under another strategy. Collective (as
    ``full_state_dict``); rank 0 gets the dict, the others {}. Call it after the first step: torch fills
    an empty optimizer state by a zero-lr step (AdamW's step count would then start at 1)."""
    return get_optimizer_state_dict(model, optimizer, options=_full_options())


def load_full_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Restore ``full_optimizer_state_dict`` output into ``optimizer`` (plain or sharded; every rank passes
    the whole dict). A plain ``optimizer.state_dict()`` (integer keys, from an older checkpoint) loads too,
    as long as the model is not sharded."""
    # The optimizer would keep the given tensors as its state and update them in place: copy them first.
    state = {"state": {k: {n: v.clone() if torch.is_tensor(v) else v for n, v in s.items()}
                       for k, s in state["state"].items()},
             "param_groups": [dict(group) for group in state["param_groups"]]}
    if all(isinstance(p, int) for group in state["param_groups"] for p in group["params"]):
        if any(isinstance(p, DTensor) for p in model.parameters()):
            raise ValueError("this optimizer state keys parameters by position (optimizer.state_dict()) and "
                             "cannot be sharded; resume it once without FSDP, or save full_optimizer_state_dict")
        optimizer.load_state_dict(state)
        return
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


# ---- Activation checkpointing --------------------------------------------------------------------

_CHECKPOINTED_CLASSES: Dict[type, type] = {}


def _checkpointed_class(cls: type) -> type:
    """A subclass of ``cls`` whose forward runs ``cls.forward`` under ``torch.utils.checkpoint``."""
    if cls not in _CHECKPOINTED_CLASSES:
        def forward(self, *args, **kwargs):
            inner = super(new_cls, self).forward
            if not torch.is_grad_enabled():  # sampling, or a no-grad first pass: nothing to save anyway
                return inner(*args, **kwargs)
            # use_reentrant=False: the recommended implementation; works with keyword arguments, with
            # inputs that do not require grad, with DDP/FSDP hooks, and restores the RNG (dropout) state.
            return checkpoint(inner, *args, use_reentrant=False, **kwargs)
        new_cls = type(f"Checkpointed{cls.__name__}", (cls,), {"forward": forward})
        _CHECKPOINTED_CLASSES[cls] = new_cls
    return _CHECKPOINTED_CLASSES[cls]


def apply_activation_checkpointing(backbone: nn.Module) -> List[nn.Module]:
    """Recompute every block's activations in backward instead of storing them; returns the blocks.

    Each block of ``find_blocks(backbone)`` gets its class swapped for a subclass whose forward runs the
    original one under ``torch.utils.checkpoint`` (FSDP2's ``fully_shard`` uses the same trick). Unlike a
    wrapper module, parameter names and checkpoints are unchanged; unlike patching ``block.forward`` on the
    instance, ``copy.deepcopy`` (the EMA copy) stays correct. Gradients are the same as without it (the
    same operations run again on the same inputs); memory holds one block's activations, not all blocks'.
    Apply it before ``wrap_for_training`` and before compiling. Calling it twice changes nothing.
    """
    blocks = find_blocks(backbone)
    if not blocks:
        raise ValueError(f"{type(backbone).__name__} has no nn.ModuleList named '...blocks': "
                         "activation checkpointing needs a backbone that keeps its blocks in one")
    for block in blocks:
        if type(block) not in _CHECKPOINTED_CLASSES.values():
            block.__class__ = _checkpointed_class(type(block))
    return blocks


# ---- Gradient accumulation -----------------------------------------------------------------------

def micro_batches(rank: int, world: int, accum_steps: int) -> List[Tuple[int, int, int]]:
    """``(micro_step, virtual_rank, virtual_world)`` for each micro-batch of this rank.

    The global batch is cut into ``world * accum_steps`` equal slices and rank r takes slices
    r*accum_steps ... (r+1)*accum_steps - 1: exactly the samples it would take without accumulation.
    Pass the virtual rank/world to ``make_batch`` (it slices the global batch that the per-step generator
    draws), divide each micro-loss by ``accum_steps``, and the summed gradients equal one big batch's
    (the loss is a mean over samples, and all slices have the same size).
    """
    if accum_steps < 1:
        raise ValueError(f"accum_steps must be >= 1, got {accum_steps}")
    return [(m, rank * accum_steps + m, world * accum_steps) for m in range(accum_steps)]


@contextmanager
def no_sync_if(module: nn.Module, condition: bool):
    """Skip the gradient all-reduce/reduce-scatter inside this block when ``condition`` is true.

    Use it around forward *and* backward of every micro-batch but the last: gradients just accumulate
    locally, and the last backward averages the sum across ranks once (DDP's ``no_sync``; FSDP2's
    ``set_requires_gradient_sync(False)``, which keeps unsharded gradients until the last micro-batch).
    Without a wrapper (one process) there is nothing to skip.
    """
    if condition and isinstance(module, DistributedDataParallel):
        with module.no_sync():
            yield
    elif condition and isinstance(module, FSDPModule):
        module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)
    else:
        yield


# ---- Mixed precision -----------------------------------------------------------------------------

def autocast_context(device: torch.device, dtype: str):
    """The context for the forward pass (and loss) at ``dtype`` in "fp32" | "bf16" | "fp16".

    Weights stay float32 (so does the optimizer); matmuls and attention run in the lower precision, and
    edm.py keeps the diffusion maths in float32. bf16 has float32's range, so it needs no loss scaling;
    fp16 does (``grad_scaler``), which we support on CUDA only.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if dtype == "fp32":
        return nullcontext()
    if dtype == "fp16" and device.type != "cuda":
        raise UserError(f"fp16 training needs a CUDA GPU (loss scaling); on {device.type} use --dtype=bf16 "
                        "or --dtype=fp32")
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def needs_grad_scaler(device: torch.device, dtype: str) -> bool:
    """Only fp16 on CUDA: its 5-bit exponent lets small gradients underflow to 0 unless the loss is scaled."""
    return dtype == "fp16" and device.type == "cuda"


def grad_scaler(device: torch.device, dtype: str) -> torch.amp.GradScaler:
    """A GradScaler that is a pass-through unless ``needs_grad_scaler``, so one loop serves every dtype:
    ``scaler.scale(loss).backward(); scaler.unscale_(opt); clip; scaler.step(opt); scaler.update()``.
    It works under FSDP2 too: DTensor's inf/NaN check reduces its verdict over all shards, so every rank
    skips the same steps (ShardedGradScaler is only needed by the older FSDP1)."""
    return torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(device, dtype))
