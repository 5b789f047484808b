"""Training and sampling speed of a preset on this machine, fp32 vs bf16 autocast, with FLOPs and MFU.

    PYTHONPATH=. python benchmarks/throughput.py [--config=NAME] [--batch_size=N] [--repeats=N] [--threads=N]
                                         [--sample_budget=SECONDS] [--key=value ...]

Prints markdown tables; a failed measurement prints "error: ..." in its cell. Any config field can be
overridden as in train.py (``--batch_size`` is ``optim.batch_size``); ``--threads`` sets torch's thread
count (on a shared machine fewer threads than cores can be much faster). What is measured and how:

1. Matmul peak: n x n matmuls of fp32 and of bf16 tensors, n in (1024, 2048), best median GFLOP/s.
2. Training: one optimizer step as in train.py (``Denoiser.loss`` with fixed sigma and noise under the
   dtype's autocast, backward, grad clip, AdamW, EMA update) on a random batch of the preset's shape.
3. Sampling: one denoiser evaluation (NFE) under no_grad, and one full run of the preset's sampler
   (Heun: 2N-1 NFE), timed ``max(1, repeats // 3)`` times; if NFE time x NFE count exceeds
   ``--sample_budget`` seconds (default 60) the run is skipped and that prediction is shown, marked "~".
4. FLOPs per video: FlopCounterMode (matmuls + attention) over one training forward+backward and one NFE;
   achieved GFLOP/s = FLOPs / median time; MFU = achieved / the measured matmul peak of the same dtype.
5. Attention paths, forward + backward at the preset's temporal ((B N), heads, T, d) and spatial
   ((B T), heads, N, d) shapes (VDT's layout): explicit matmuls vs ``F.scaled_dot_product_attention`` vs
   ``nano_videodiff.backbones.layers.attention``'s pick of the two (read from the aten ops it runs): is it the faster?

Times are medians of ``--repeats`` runs (min-max in brackets) after 1 warm-up call; the FLOP-counting call
runs the same kernels first. Other processes may share the CPU: the load average is printed before/after.
"""
from __future__ import annotations

import copy
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.common import (attempt, count_flops, derive, fmt, fmt_ms, load_average,  # noqa: E402
                               machine_line, markdown_table, matmul_peak_gflops, mfu, peak_table, time_ms)
from nano_videodiff import masking  # noqa: E402
from nano_videodiff.conditioning import Batch, Cond  # noqa: E402
from nano_videodiff.training.config import apply_overrides, split_args  # noqa: E402
from nano_videodiff.edm import sample_training_sigma  # noqa: E402
from nano_videodiff.latent import latent_data_config, latent_task_config  # noqa: E402
from nano_videodiff.backbones.layers import attention  # noqa: E402
from nano_videodiff.models import build_denoiser, count_parameters  # noqa: E402
from nano_videodiff.sampler import edm_sigmas, sample  # noqa: E402
from nano_videodiff.training.optim import build_optimizer, ema_update  # noqa: E402
from nano_videodiff.training.presets import DEFAULT_PRESET, get_preset  # noqa: E402

DTYPES = ("fp32", "bf16")
TORCH_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16}


def autocast(dtype: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")


def make_batch(cfg, seed: int = 0):
    """A random batch of the preset's shape with fixed sigma and noise, and the preset's context mask
    (as train.py draws it) if it has a task; the data values do not matter for speed. A latent-diffusion
    preset gets a batch of latents (what its backbone trains on: cached latents are encoded once)."""
    g = torch.Generator().manual_seed(seed)
    d, B = latent_data_config(cfg), cfg.optim.batch_size
    x = torch.rand(B, d.num_frames, d.channels, d.height, d.width, generator=g) * 2 - 1
    labels = torch.randint(d.num_classes, (B,), generator=g) if d.num_classes > 0 else None
    cond = Cond(labels=labels, frame_interval=torch.full((B,), 1.0 / d.fps))
    mixture = masking.mixture_from_config(latent_task_config(cfg), d.num_frames)
    if mixture is not None:
        T, _, H, W = x.shape[1:]
        cond = cond.replace(known=mixture.sample(B, T, H, W, generator=g)[0], known_x=x)
    sigma = sample_training_sigma(B, cfg.diffusion.P_mean, cfg.diffusion.P_std, generator=g)
    return Batch(x, cond, sigma=sigma, noise=torch.randn(x.shape, generator=g))


def train_step_fn(cfg, model, batch, dtype: str, optimizer_step: bool = True):
    """One step of train.py's loop without data loading and logging: loss, backward, and (with
    ``optimizer_step``) grad clip, AdamW and the EMA update."""
    o = cfg.optim
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], o)  # as train.py
    steps = itertools.count()

    def step():
        with autocast(dtype):
            loss = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if optimizer_step:
            if o.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            optimizer.step()
            ema_update(ema, model.parameters(), model.buffers(), next(steps), o.ema_halflife)
    return step


def measure_training(cfg, model, dtype: str, repeats: int, batch=None):
    """(timing, FLOPs) of ``model``'s training step (``train_step_fn``) in ``dtype`` on ``batch`` (default: a
    random batch of the preset's shape): ``time_ms`` over ``repeats`` steps after one warm-up step, and the
    FLOPs of forward + backward, counted in a first, untimed step. Either may be an ``Error``."""
    batch = make_batch(cfg) if batch is None else batch
    flops = attempt(count_flops, train_step_fn(cfg, model, batch, dtype, optimizer_step=False))
    return attempt(time_ms, train_step_fn(cfg, model, batch, dtype), repeats, 1), flops


def sample_fn(cfg, model, batch, dtype: str, full: bool):
    """One denoiser call (NFE) at sigma = 1, or (``full``) a whole run of the preset's sampler."""
    d, noise, cond = cfg.diffusion, batch.noise, batch.cond
    sigmas = edm_sigmas(d.sample_steps, d.sigma_min, d.sigma_max, d.rho)

    @torch.no_grad()
    def fn():
        with autocast(dtype):
            if full:
                sample(model.forward_with_state, noise, sigmas, cond, solver=d.solver, sigma_in=d.sigma_in)
            else:
                model(noise, torch.ones(noise.shape[0]), cond)
    return fn


def explicit_attention(q, k, v):
    """softmax(q k^T / sqrt(d)) v written as two matmuls (what layers.attention does on CPU under bf16)."""
    logits = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return logits.float().softmax(-1).to(v.dtype) @ v


def attention_table(cfg, repeats: int) -> str:
    """Explicit matmuls vs F.scaled_dot_product_attention, forward + backward at the preset's attention
    shapes, and which of the two layers.attention runs (read from the aten ops it calls)."""
    d = latent_data_config(cfg)  # the tokens the backbone attends over: of latents for a latent preset
    B, T = cfg.optim.batch_size, d.num_frames
    N = (d.height // cfg.model.patch_size) * (d.width // cfg.model.patch_size)
    heads, head_dim = cfg.model.heads, cfg.model.dim // cfg.model.heads
    shapes = {"temporal": (B * N, heads, T, head_dim), "spatial": (B * T, heads, N, head_dim)}
    rows = []
    for name, shape in shapes.items():
        for dtype in DTYPES:
            g = torch.Generator().manual_seed(0)
            q, k, v = (torch.randn(shape, generator=g).to(TORCH_DTYPE[dtype]).requires_grad_() for _ in range(3))
            grad = torch.randn(shape, generator=g).to(TORCH_DTYPE[dtype])

            def run(fn):
                for t in (q, k, v):
                    t.grad = None
                with autocast(dtype):
                    fn(q, k, v).backward(grad)
            explicit = attempt(lambda: time_ms(lambda: run(explicit_attention), repeats)["median"])
            sdpa = attempt(lambda: time_ms(lambda: run(F.scaled_dot_product_attention), repeats)["median"])
            ops = attempt(count_flops, lambda: run(attention), by_op=True)
            uses = derive(lambda ops: "F.sdpa" if any("scaled_dot_product" in op for op in ops) else "explicit", ops)
            verdict = derive(lambda e, s, u: ("either (within 15%)" if 1 / 1.15 < s / e < 1.15 else
                                              "right" if (u == "F.sdpa") == (s < e) else "WRONG")
                             + f": sdpa/explicit = {s / e:.2f}", explicit, sdpa, uses)
            rows.append([name, "x".join(map(str, shape)), dtype, fmt(explicit, ".2f"), fmt(sdpa, ".2f"), uses, verdict])
    return markdown_table(["attention (VDT layout)", "shape (batch, heads, tokens, head dim)", "dtype",
                           "explicit matmuls ms", "F.sdpa ms", "layers.attention uses", "its choice"], rows)


def speed_row(name: str, dtype: str, t, flops, batch_size: int, peak, note: str = "") -> list:
    """A table row from a timing dict and a FLOP count (either may be an Error); ``note`` marks a prediction."""
    ms, mark = derive(lambda t: t["median"], t), "~" if note else ""
    gflops = derive(lambda f, m: f / m / 1e6, flops, ms)
    spread = derive(lambda t: note or f"({fmt_ms(t['min'])}-{fmt_ms(t['max'])})", t)
    return [name, dtype, derive(lambda m, s: f"{mark}{fmt_ms(m)} {s}", ms, spread),
            mark + fmt(derive(lambda m: m / batch_size, ms), ".2f"),
            mark + fmt(derive(lambda m: 1e3 * batch_size / m, ms), ".2f"),
            fmt(derive(lambda f: f / batch_size / 1e9, flops), ".3g"), mark + fmt(gflops, ".1f"),
            mark + mfu(gflops, peak)]


def speed_table(cfg, model, peak: dict, repeats: int, sample_budget: float) -> str:
    """Training step, one NFE and a full sampling run, fp32 and bf16: times, FLOPs and MFU. A sampling run
    predicted (NFE time x NFE count) to take over ``sample_budget`` seconds is not run: its row shows the
    prediction, marked "~"."""
    batch, B, d = make_batch(cfg), cfg.optim.batch_size, cfg.diffusion
    nfe_per_run = 2 * d.sample_steps - 1 if d.solver == "heun" else d.sample_steps
    rows = []
    for dtype in DTYPES:
        m = copy.deepcopy(model)
        train, train_flops = measure_training(cfg, m, dtype, repeats, batch)
        nfe_flops = attempt(count_flops, sample_fn(cfg, m, batch, dtype, full=False))
        nfe = attempt(time_ms, sample_fn(cfg, m, batch, dtype, full=False), repeats, 1)
        predicted = derive(lambda t: t["median"] * nfe_per_run, nfe)
        if not isinstance(predicted, str) and predicted > 1e3 * sample_budget:
            run, note = {"median": predicted}, f"(NFE x {nfe_per_run}: over --sample_budget={sample_budget:g} s)"
        else:  # long: fewer repeats, already warmed up by the NFE timing
            run, note = attempt(time_ms, sample_fn(cfg, m, batch, dtype, full=True), max(1, repeats // 3), 0), ""
        rows += [speed_row("training step", dtype, train, train_flops, B, peak[dtype]),
                 speed_row("one NFE", dtype, nfe, nfe_flops, B, peak[dtype]),
                 speed_row(f"sampling, {d.solver} {d.sample_steps} steps ({nfe_per_run} NFE)", dtype, run,
                           derive(lambda f: f * nfe_per_run, nfe_flops), B, peak[dtype], note)]
    return markdown_table(["measurement", "dtype", "ms/batch (min-max)", "ms/video", "videos/s", "GFLOP/video",
                           "GFLOP/s", "MFU"], rows)


def main(argv) -> None:
    overrides, wants_help = split_args(argv)  # the one --key=value parser (config.py)
    preset = overrides.pop("config", DEFAULT_PRESET)
    repeats = int(overrides.pop("repeats", 5))
    sample_budget = float(overrides.pop("sample_budget", 60))
    if "threads" in overrides:
        torch.set_num_threads(int(overrides.pop("threads")))
    cfg = get_preset(preset)
    apply_overrides(cfg, overrides)
    if wants_help:
        print(__doc__)
        return
    t0 = time.time()
    torch.manual_seed(0)
    model = attempt(build_denoiser, cfg)
    if isinstance(model, str):
        print(f"cannot build the model of preset {preset!r}: {model}")
        return
    d, B = cfg.data, cfg.optim.batch_size
    print(f"# nano-videodiff throughput: preset `{preset}`, batch {B} x {d.num_frames}x{d.channels}x"
          f"{d.height}x{d.width}, {cfg.model.backbone} {count_parameters(model) / 1e6:.2f}M params\n")
    print(machine_line())
    print(f"\n{load_average()} (before)\n")

    peak = {dt: attempt(matmul_peak_gflops, TORCH_DTYPE[dt], repeats=repeats) for dt in DTYPES}
    print(peak_table(peak))
    print("\n" + speed_table(cfg, model, peak, repeats, sample_budget))
    print("\n" + attention_table(cfg, repeats))
    print(f"\n{load_average()} (after; {time.time() - t0:.0f} s in all, medians of {repeats} repeats)")


if __name__ == "__main__":
    main(sys.argv[1:])
