"""What hardware a config needs: memory per device and compute per step, without training.

``python train.py --config=NAME --plan [--batch_size=N] [--parallel=fsdp --world_size=W]
[--activation_checkpointing] [--mfu=0.4]`` prints, for the config as train.py would run it:

- parameters (trainable, frozen) and the per-device bytes of weights, EMA copy, gradients and optimizer
  state (float32 throughout: train.py keeps master weights in fp32 and autocasts the matmuls);
- activation memory per sample: the tensors autograd saves for backward in one training forward of the
  backbone, **measured** by running it at batch 1 and 2 under ``FakeTensorMode`` (shapes, dtypes and
  autocast as on a real device, no memory allocated, seconds even for 4B parameters) and taken linearly
  (the batch-independent part, e.g. bf16 copies of the weights under autocast, is reported apart);
  ``tests/test_planner.py`` checks it against the bytes a real CPU step allocates;
- the total per device under DDP and FSDP at the global batch split over ``W`` devices;
- model FLOPs per training video (forward + backward, counted by ``torch.utils.flop_counter``; recomputation
  under activation checkpointing is not model FLOPs), and the time per step at a given MFU on named
  accelerators' dense bf16 peaks.

How the terms add up (ZeRO paper, Rajbhandari et al., arXiv 1910.02054, Sec. 3.1: 16 bytes per parameter for
mixed-precision Adam, plus the EMA's 4 here):
  DDP  per device: 4 P (weights) + 4 P (EMA) + 4 Pt (grads) + 4 Pt (DDP's gradient buckets) + 8 Pt (Adam/LAMB)
                   + activations(B / W)
  FSDP per device: (4 P + 4 Pt + 8 Pt) / W + 4 P (EMA: a full copy per rank in train.py) + 2 x 4 x the largest
                   shard unit (the gathered block and the prefetched next one) + activations(B / W)
Not counted: the allocator's fragmentation and the CUDA context (~0.5-1 GB), temporary buffers of the
backward pass, data loading, and the per-step encoding of latent-diffusion clips (reported apart).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.utils import flop_counter

from ..conditioning import Cond
from ..errors import UserError
from .config import parse_value

GB = 1e9
# Dense bf16 tensor-core peaks (FLOP/s) and memory (bytes) per device, from the vendors' data sheets.
ACCELERATORS = {"A100 80GB": (312e12, 80 * GB), "H100 SXM 80GB": (989e12, 80 * GB)}
DEFAULT_MFU = 0.4
HELP = ("planner: --plan [--world_size=W] [--mfu=0.4] prints memory per device and compute per step "
        "without training (with --batch_size, --parallel, --activation_checkpointing, --dtype)")


@dataclass
class PlanRequest:
    world_size: int = 1
    mfu: float = DEFAULT_MFU


def plan_request(argv: List[str]) -> Tuple[List[str], Optional[PlanRequest]]:
    """Take ``--plan``, ``--world_size=W`` and ``--mfu=F`` out of a train.py command line."""
    rest, found, plan = [], {}, False
    for arg in argv:
        key, _, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if key == "plan":
            plan = parse_value(value or "true", "bool", "plan")
        elif key in ("world_size", "mfu"):
            found[key] = value
        else:
            rest.append(arg)
    if found and not plan:
        raise UserError(f"--{next(iter(found))} is a planner option: add --plan (train.py's world size comes "
                        "from torchrun)")
    if not plan:
        return rest, None
    request = PlanRequest(parse_value(found.get("world_size", "1"), "int", "world_size"),
                          parse_value(found.get("mfu", str(DEFAULT_MFU)), "float", "mfu"))
    if request.world_size < 1 or not 0 < request.mfu <= 1:
        raise UserError(f"--world_size must be >= 1 and --mfu in (0, 1]; got {request.world_size}, {request.mfu}")
    return rest, request


# ---- the model's tensors, without memory ----------------------------------------------------------

def fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode
    return FakeTensorMode(allow_non_fake_inputs=True)


def fake_network(cfg) -> nn.Module:
    """``build_network(cfg)`` with fake parameters. Fake tensors have no values, so the label embedders'
    range check of their input (``layers.LabelEmbedder``: for users' labels) cannot run: this throw-away
    copy looks its rows up directly, the same computation."""
    from ..backbones.layers import LabelEmbedder
    torch.manual_seed(0)
    network = build_network(cfg)
    for module in network.modules():
        if isinstance(module, LabelEmbedder):
            module.forward = lambda labels, m=module: m.table(torch.where(labels < 0, m.num_classes, labels))
    return network


def compute_dtype(cfg) -> str:
    """What the plan assumes: fp32 if asked for, else bf16 autocast (what ``auto`` picks on A100/H100)."""
    return "fp32" if cfg.run.dtype == "fp32" else "bf16"


def synthetic_inputs(cfg, batch: int, device="cpu"):
    """(x, c_noise, cond) of the shape, labels and given frames a training step of ``cfg`` feeds the backbone."""
    from ..latent import latent_data_config, latent_task_config
    d = latent_data_config(cfg)
    x = torch.randn(batch, d.num_frames, d.channels, d.height, d.width)
    cond = Cond(frame_interval=torch.full((batch,), 1.0 / cfg.data.fps))
    if cfg.data.num_classes > 0:
        cond = cond.replace(labels=torch.zeros(batch, dtype=torch.long))
    task = latent_task_config(cfg)
    if cfg.task.masking != "none":
        known = torch.zeros(batch, d.num_frames, 1, d.height, d.width, dtype=torch.bool)
        known[:, :task.num_context or d.num_frames // 2] = True
        cond = cond.replace(known=known, known_x=x)
    return x.to(device), torch.randn(batch, device=device), cond.to(device)


def autocast(dtype: str, device="cpu"):
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=dtype == "bf16")


def training_forward(backbone: nn.Module, cfg, batch: int, dtype: str, device="cpu") -> torch.Tensor:
    """One training forward of the backbone (with RIN self-conditioning's no-grad first pass where the
    config uses it, as ``edm.Denoiser.loss`` does) and a scalar to call backward on."""
    from ..backbones import SELF_CONDITIONING
    x, c_noise, cond = synthetic_inputs(cfg, batch, device)
    with autocast(dtype, device):
        if cfg.model.backbone in SELF_CONDITIONING and cfg.model.fit_self_cond_prob > 0:
            with torch.no_grad():
                _, state = backbone(x, c_noise, cond)
            cond = cond.replace(self_cond=state)
        out, _ = backbone(x, c_noise, cond)
    return out.float().square().mean()


def build_network(cfg) -> nn.Module:
    """What learns in ``cfg`` (the backbone, or the stage-1 autoencoder), in training mode."""
    from ..models import build_autoencoder, build_backbone
    from ..backbones import is_autoencoder
    return (build_autoencoder(cfg) if is_autoencoder(cfg) else build_backbone(cfg)).train()


def network_forward(network: nn.Module, cfg, batch: int, dtype: str, device="cpu") -> torch.Tensor:
    """The training loss of ``build_network(cfg)`` on synthetic inputs of ``batch`` samples."""
    from ..backbones import is_autoencoder
    from ..conditioning import Batch
    if not is_autoencoder(cfg):
        return training_forward(network, cfg, batch, dtype, device)
    d = cfg.data
    video = torch.rand(batch, d.num_frames, d.channels, d.height, d.width, device=device) * 2 - 1
    with autocast(dtype, device):
        return network.loss(Batch(x=video, cond=Cond()))


# ---- activations: what autograd saves, per block -----------------------------------------------------

def saved_bytes(network: nn.Module, run, blocks: List[nn.Module]) -> Dict[str, float]:
    """Run ``run()`` and sum the bytes of every storage autograd saves for backward (each storage once,
    parameters excluded): {"total", "outside" (not inside a block), "block_inputs", "largest_block"}."""
    params = {p.untyped_storage()._cdata for p in network.parameters()}
    seen, per_block, current = set(), {}, []
    inputs = [0]
    outside = [0]

    def pack(t):
        storage = t.untyped_storage()
        key = storage._cdata
        if key not in params and key not in seen:
            seen.add(key)
            if current:
                per_block[current[-1]] = per_block.get(current[-1], 0) + storage.nbytes()
            else:
                outside[0] += storage.nbytes()
        return t

    def enter(module, args, kwargs):
        if torch.is_grad_enabled():  # the no-grad self-conditioning pass saves nothing
            inputs[0] += sum(a.untyped_storage().nbytes() for a in list(args) + list(kwargs.values())
                             if torch.is_tensor(a) and a.untyped_storage()._cdata not in seen)
        current.append(id(module))

    def leave(module, args, output):
        current.pop()

    handles = [h for b in blocks for h in (b.register_forward_pre_hook(enter, with_kwargs=True),
                                           b.register_forward_hook(leave))]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            run()
    finally:
        for h in handles:
            h.remove()
    internal = sum(per_block.values())
    return {"total": outside[0] + internal, "outside": outside[0], "block_inputs": inputs[0],
            "largest_block": max(per_block.values(), default=0)}


def activation_bytes(saved: Dict[str, float], checkpointing: bool) -> float:
    """Saved activations of a step: all of them, or with activation checkpointing the ones outside the blocks,
    each block's inputs (kept to recompute it) and one block's recomputed activations at a time."""
    if not checkpointing:
        return saved["total"]
    return saved["outside"] + saved["block_inputs"] + saved["largest_block"]


def measure_activations(cfg, dtype: str) -> Dict[bool, Tuple[float, float]]:
    """{activation checkpointing: (bytes per sample, batch-independent bytes)} of saved activations, from
    fake runs at batch 1 and 2 (without blocks to checkpoint, both are the plain numbers)."""
    from .distributed import find_blocks
    with fake_mode():
        network = fake_network(cfg)
        blocks = find_blocks(network)
        saved = [saved_bytes(network, lambda b=b: network_forward(network, cfg, b, dtype), blocks)
                 for b in (1, 2)]
    result = {}
    for checkpointing in (False, True):
        one, two = (activation_bytes(s, checkpointing and bool(blocks)) for s in saved)
        result[checkpointing] = (two - one, 2 * one - two)
    return result


# ---- FLOPs ------------------------------------------------------------------------------------------

def _sdpa(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(q, k, v)


def _sdpa_backward(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return 2 * flop_counter.sdpa_flop_count(q, k, v)  # model FLOPs: 4 matmuls, no recomputed q k^T


# PyTorch's counter knows the GPU attention kernels, not the CPU one (it counts 0 for it): its formula here.
CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa,
                 torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward}


def training_flops(cfg) -> float:
    """Model FLOPs of one training video: forward + backward (+ the self-conditioning forward), fake tensors."""
    with fake_mode():
        network = fake_network(cfg)
        with flop_counter.FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
            network_forward(network, cfg, 1, "fp32").backward()
    return float(counter.get_total_flops())


# ---- the plan ---------------------------------------------------------------------------------------

def parameter_counts(cfg) -> Tuple[int, int, int]:
    """(trainable, frozen, largest FSDP shard unit) parameter counts of what train.py wraps."""
    from .distributed import find_blocks
    from .objectives import build_objective
    with torch.device("meta"):
        objective = build_objective(cfg)
    trainable = sum(p.numel() for p in objective.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in objective.parameters() if not p.requires_grad)
    units = find_blocks(objective) or [c for c in objective.children()]
    largest = max((sum(p.numel() for p in u.parameters()) for u in units), default=0)
    return trainable, frozen, largest


def plan(cfg, world_size: int = 1) -> dict:
    """Every number of the report, in bytes, FLOPs and parameters (``report`` formats them)."""
    if cfg.optim.batch_size % world_size:
        raise UserError(f"--batch_size={cfg.optim.batch_size} must be divisible by --world_size={world_size}")
    dtype, ckpt = compute_dtype(cfg), cfg.run.activation_checkpointing
    trainable, frozen, largest = parameter_counts(cfg)
    modes = measure_activations(cfg, dtype)
    per_sample, fixed = modes[ckpt]
    local = cfg.optim.batch_size // world_size // cfg.optim.grad_accum_steps  # samples per micro-step
    total = trainable + frozen
    weights, ema, grads, optimizer = 4 * total, 4 * total, 4 * trainable, 8 * trainable
    activations = fixed + local * per_sample
    ddp = weights + ema + 2 * grads + optimizer + activations
    fsdp = (weights + grads + optimizer) / world_size + ema + 2 * 4 * largest + activations
    return {"trainable": trainable, "frozen": frozen, "largest_unit": largest, "dtype": dtype,
            "checkpointing": ckpt, "world_size": world_size, "local_batch": local, "weights": weights,
            "ema": ema, "grads": grads, "optimizer": optimizer, "per_sample": per_sample, "fixed": fixed,
            "activations": activations, "ddp": ddp, "fsdp": fsdp, "flops_per_video": training_flops(cfg),
            "activation_modes": modes}


def step_seconds(flops_per_video: float, batch: int, world_size: int, peak: float, mfu: float) -> float:
    """Time of one optimizer step of ``batch`` videos on ``world_size`` devices at ``mfu`` of ``peak``."""
    return flops_per_video * batch / (world_size * peak * mfu)


def report(cfg, request: PlanRequest) -> str:
    p = plan(cfg, request.world_size)
    b, w = cfg.optim.batch_size, request.world_size
    lines = [f"plan for {cfg.model.backbone}: {p['trainable'] / 1e6:.1f}M trainable parameters"
             + (f" + {p['frozen'] / 1e6:.1f}M frozen" if p["frozen"] else "")
             + f"; global batch {b} on {w} device(s) = {p['local_batch']} per micro-step; {p['dtype']} autocast"
             + (", activation checkpointing" if p["checkpointing"] else ""),
             f"  weights (fp32)        {p['weights'] / GB:8.2f} GB",
             f"  EMA copy (fp32)       {p['ema'] / GB:8.2f} GB",
             f"  gradients (fp32)      {p['grads'] / GB:8.2f} GB   (DDP keeps as much again in its buckets)",
             f"  optimizer (2 x fp32)  {p['optimizer'] / GB:8.2f} GB",
             f"  activations / sample  {p['per_sample'] / GB:8.2f} GB   (+ {p['fixed'] / GB:.2f} GB per step; measured"
             " under FakeTensorMode)",
             f"  activations / device  {p['activations'] / GB:8.2f} GB",
             f"  total per device: DDP {p['ddp'] / GB:.1f} GB, FSDP {p['fsdp'] / GB:.1f} GB "
             f"(largest shard unit {p['largest_unit'] / 1e6:.1f}M parameters)",
             f"  model FLOPs per training video: {p['flops_per_video'] / 1e12:.2f} TFLOP "
             f"({p['flops_per_video'] * b / 1e15:.2f} PFLOP per step)"]
    for name, (peak, memory) in ACCELERATORS.items():
        fits = min(p["ddp"], p["fsdp"]) <= memory
        lines.append(f"  {name}: {step_seconds(p['flops_per_video'], b, w, peak, request.mfu):.2f} s per step at "
                     f"{request.mfu:.0%} MFU; " + ("fits" if fits else "does not fit") +
                     f" in {memory / GB:.0f} GB" + ("" if fits else " (try --activation_checkpointing, FSDP, "
                                                    "more devices or --grad_accum_steps)"))
    return "\n".join(lines)



# ---- the table of docs/paper_presets.md: python -m nano_videodiff.training.planner -------------------

def preset_row(name: str, world_size: int, mfu: float) -> list:
    """One preset at its paper batch: sizes, activations with/without checkpointing, per-GPU memory, the
    largest micro-batch an 80 GB GPU holds (DDP, FSDP over ``world_size``), time per step on 8 GPUs."""
    from .presets import get_preset
    cfg = get_preset(name)
    cfg.run.activation_checkpointing = True
    p = plan(cfg, world_size)
    plain_per_sample = p["activation_modes"][False][0]
    static_ddp, static_fsdp = p["ddp"] - p["activations"], p["fsdp"] - p["activations"]
    memory = ACCELERATORS["H100 SXM 80GB"][1]

    def micro_batch(static):
        room = memory - static - p["fixed"]
        return max(0, int(room // p["per_sample"])) if room > 0 else 0
    b = cfg.optim.batch_size
    local = b // world_size  # the paper's batch on world_size GPUs: the fewest accumulation steps that fit
    accum = next((a for a in range(1, local + 1) if local % a == 0 and
                  static_fsdp + p["fixed"] + local // a * p["per_sample"] <= memory), None)
    fsdp_gpu = "does not fit" if accum is None else \
        f"{(static_fsdp + p['fixed'] + local // accum * p['per_sample']) / GB:.0f} GB (accumulation x{accum})"
    params = f"{p['trainable'] / 1e6:.0f}" + (f" (+{p['frozen'] / 1e6:.0f} frozen)" if p["frozen"] else "")
    return [name, params, str(b),
            f"{plain_per_sample / GB:.2f}", f"{p['per_sample'] / GB:.2f}",
            f"{static_ddp / GB:.1f}", f"{static_fsdp / GB:.1f}",
            f"{micro_batch(static_ddp)} / {micro_batch(static_fsdp)}", fsdp_gpu,
            f"{p['flops_per_video'] / 1e12:.2f}"] + [
        f"{step_seconds(p['flops_per_video'], b, world_size, peak, mfu):.2f}"
        for peak, _ in ACCELERATORS.values()]


def preset_table(names, world_size: int = 8, mfu: float = DEFAULT_MFU) -> str:
    headers = ["preset", "params (M)", "paper batch", "activations / sample (GB)", "with checkpointing (GB)",
               "static DDP (GB)", f"static FSDP-{world_size} (GB)", "micro-batch per 80 GB: DDP / FSDP",
               f"per GPU at the paper batch, FSDP-{world_size}",
               "TFLOP / video"] + [f"s / step, {world_size}x {n.split()[0]}" for n in ACCELERATORS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(preset_row(n, world_size, mfu)) + " |" for n in names]
    return "\n".join(lines)


if __name__ == "__main__":
    from .paper_configs import PAPER_PRESETS
    print(preset_table(list(PAPER_PRESETS)))
