"""Mutation check: is every key formula guarded by a test that fails when the formula is wrong?

Each mutant below changes one formula by one edit (a sign, a factor, a swapped argument). The harness
copies the repository to a temporary folder, applies one mutant to the copy, runs the mutant's relevant
test files there, and calls the mutant *caught* if pytest fails. It prints a table and the kill rate; the
target is 100%. It is not part of the default `pytest` run: it runs the relevant tests once per mutant
(several minutes in all on a 2-core CPU).

    python benchmarks/mutants.py                  # every mutant
    python benchmarks/mutants.py --only=ema,heun  # names containing any of these words
    python benchmarks/mutants.py --list           # the mutants, without running anything

A mutant whose `old` text is not found exactly once is reported as "stale" (the code moved): fix the entry.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str                 # path inside the repository
    old: str                  # exact text, found once in the file
    new: str                  # what it becomes
    tests: Sequence[str]      # test files (or node ids) that must catch it


M = Mutant
MUTANTS = [
    # EDM / Snap Video preconditioning and loss (edm.py)
    M("c_skip without sigma_in", "nano_videodiff/edm.py", "c_skip = sigma_in * sd2 / (sigma_in * s2 + sd2)",
      "c_skip = sd2 / (sigma_in * s2 + sd2)", ["tests/test_edm.py"]),
    M("c_out without sigma_in", "nano_videodiff/edm.py",
      "c_out = sigma_in * sigma * sigma_data * torch.sqrt(s2 + sd2) / (sigma_in * s2 + sd2)",
      "c_out = sigma * sigma_data * torch.sqrt(s2 + sd2) / (sigma_in * s2 + sd2)", ["tests/test_edm.py"]),
    M("c_in ignores sigma_in", "nano_videodiff/edm.py", "c_in = 1.0 / torch.sqrt(sd2 / sigma_in**2 + s2)",
      "c_in = 1.0 / torch.sqrt(sd2 + s2)", ["tests/test_edm.py"]),
    M("c_noise = ln(sigma) / 2", "nano_videodiff/edm.py", "c_noise = torch.log(sigma) / 4",
      "c_noise = torch.log(sigma) / 2", ["tests/test_edm.py"]),
    M("forward process without sigma_in", "nano_videodiff/edm.py",
      "return x / sigma_in + _per_sample(sigma, x) * eps", "return x + _per_sample(sigma, x) * eps",
      ["tests/test_edm.py"]),
    M("loss weight lambda: sigma not squared", "nano_videodiff/edm.py",
      "return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2",
      "return (sigma**2 + sigma_data**2) / (sigma * sigma_data)", ["tests/test_edm.py"]),
    M("training sigma ignores P_std", "nano_videodiff/edm.py", "return torch.exp(P_mean + P_std * z)",
      "return torch.exp(P_mean + z)", ["tests/test_edm.py"]),
    M("input scale s*T instead of s*sqrt(T)", "nano_videodiff/edm.py",
      "return math.sqrt(num_frames * s_squared)", "return num_frames * math.sqrt(s_squared)",
      ["tests/test_edm.py", "tests/test_snap_framework.py"]),
    # sampler (sampler.py)
    M("sigma schedule: rho not applied", "nano_videodiff/sampler.py", "sigmas = (hi + ramp * (lo - hi)) ** rho",
      "sigmas = (hi + ramp * (lo - hi)) ** (rho - 1)", ["tests/test_sampler.py"]),
    M("Heun correction: full step of d_next", "nano_videodiff/sampler.py",
      "x_next = x + (s_next - s_hat) * 0.5 * (d + d_next)", "x_next = x + (s_next - s_hat) * d_next",
      ["tests/test_sampler.py"]),
    M("ODE ignores sigma_in", "nano_videodiff/sampler.py", "d = (x - den(x, s_hat) / sigma_in) / s_hat",
      "d = (x - den(x, s_hat)) / s_hat", ["tests/test_sampler.py"]),
    M("sampler does not paste known content", "nano_videodiff/sampler.py",
      "result = paste_known(x * sigma_in, cond)", "result = x * sigma_in", ["tests/test_sampler.py"]),
    # known content in D (edm.py)
    M("known content at data scale, not x / sigma_data", "nano_videodiff/edm.py",
      "return torch.where(known, cond.known_x.to(net_in) / sigma_data, net_in)",
      "return torch.where(known, cond.known_x.to(net_in), net_in)", ["tests/test_masking.py", "tests/test_edm.py"]),
    M("D does not paste known content", "nano_videodiff/edm.py",
      "return torch.where(known, cond.known_x.to(x0.dtype), x0)", "return x0",
      ["tests/test_masking.py", "tests/test_edm.py"]),
    # W.A.L.T (window_attention.py)
    M("window partition: h and w swapped", "nano_videodiff/backbones/window_attention.py",
      '"b (nt wt) (nh wh) (nw ww) d -> (b nt nh nw) (wt wh ww) d"', '"b (nt wt) (nh wh) (nw ww) d -> (b nt nw nh) (wt wh ww) d"',
      ["tests/test_window_attention.py"]),
    M("identity mask: images get the attention output", "nano_videodiff/backbones/window_attention.py",
      "out = torch.where(is_image.to(x.device)[:, None, None, None, None], x, out)",
      "out = torch.where(is_image.to(x.device)[:, None, None, None, None], out, x)", ["tests/test_window_attention.py"]),
    M("AdaLN-LoRA: the low-rank term dropped", "nano_videodiff/backbones/window_attention.py",
      "rest = first + (h @ self.lora_b) @ self.lora_a", "rest = first + 0 * (h @ self.lora_b) @ self.lora_a",
      ["tests/test_window_attention.py"]),
    # causal autoencoder (causal_vae.py)
    M("causal padding centred", "nano_videodiff/backbones/causal_vae.py",
      "self.time_pad = (kt - 1, 0) if causal else ((kt - 1) // 2, kt // 2)",
      "self.time_pad = ((kt - 1) // 2, kt // 2)", ["tests/test_causal_vae.py"]),
    M("KL without the log-variance term", "nano_videodiff/backbones/causal_vae.py",
      "self.logvar.float().exp() - 1.0 - self.logvar.float())", "self.logvar.float().exp() - 1.0)",
      ["tests/test_causal_vae.py"]),
    # Video LDM (temporal_alignment.py)
    M("alpha blend swapped", "nano_videodiff/backbones/temporal_alignment.py", "return alpha * z + (1 - alpha) * z_temporal",
      "return (1 - alpha) * z + alpha * z_temporal", ["tests/test_temporal_alignment.py"]),
    # FIT (fit.py)
    M("FIT writes from the latents before compute", "nano_videodiff/backbones/fit.py",
      "        for layer in self.compute:\n            latents = layer(latents)\n",
      "        pass\n", ["tests/test_fit.py"]),
    # images as videos (modality.py)
    M("images get interval 1 instead of 0", "nano_videodiff/modality.py",
      "return videos, torch.zeros(images.shape[0], dtype=torch.float32, device=images.device)",
      "return videos, torch.ones(images.shape[0], dtype=torch.float32, device=images.device)", ["tests/test_modality.py"]),
    # metrics (metrics.py)
    M("PSNR with data range 1", "nano_videodiff/evaluation/metrics.py", "out = 10.0 * torch.log10(data_range ** 2 / mse)",
      "out = 10.0 * torch.log10(1.0 / mse)", ["tests/test_metrics.py"]),
    M("SSIM constants doubled", "nano_videodiff/evaluation/metrics.py", "c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2",
      "c1, c2 = (2 * k1 * data_range) ** 2, (2 * k2 * data_range) ** 2", ["tests/test_metrics.py"]),
    M("frame contact judge: quarter-covered pixels count", "nano_videodiff/evaluation/metrics.py",
      "threshold: float = 0.5, margin: int = 2", "threshold: float = 0.25, margin: int = 2",
      ["tests/test_metrics.py", "tests/test_physics_eval.py"]),
    M("simulator contact margin doubled", "nano_videodiff/evaluation/physics_eval.py", "STATE_CONTACT_MARGIN_PX = 0.1",
      "STATE_CONTACT_MARGIN_PX = 0.2", ["tests/test_physics_eval.py"]),
    # LAMB (lamb.py)
    M("LAMB trust ratio inverted", "nano_videodiff/training/lamb.py", "w_norm / u_norm, torch.ones_like(w_norm))",
      "u_norm / w_norm, torch.ones_like(w_norm))", ["tests/test_lamb.py"]),
    # toy data (toy_data/bouncing_balls.py)
    M("ball collisions: half the impulse", "toy_data/bouncing_balls.py",
      "kick = np.where(hit & (closing < 0), 2.0 * closing, 0.0)", "kick = np.where(hit & (closing < 0), 1.0 * closing, 0.0)",
      ["tests/test_bouncing_balls.py"]),
    # training (train.py)
    M("EMA moves by decay instead of 1 - decay", "nano_videodiff/training/optim.py", "e.lerp_(p.detach(), 1 - decay)",
      "e.lerp_(p.detach(), decay)", ["tests/test_train.py::test_ema_update_values"]),
    M("EMA warm-up (1+t)/(10+t) dropped", "nano_videodiff/training/optim.py",
      "decay = min(0.5 ** (1.0 / max(halflife, 1e-8)), (1 + step) / (10 + step))",
      "decay = 0.5 ** (1.0 / max(halflife, 1e-8))", ["tests/test_train.py::test_ema_update_values"]),
    # dtype choice (hardware.py)
    M("bf16 chosen on any CPU", "nano_videodiff/hardware.py", "    return Precision(\"bf16\" if fast else \"fp32\",",
      "    return Precision(\"bf16\",", ["tests/test_hardware.py"]),
    # EDM's training noise carried to another sigma_data (edm.py)
    M("relative P_mean with the ratio inverted", "nano_videodiff/edm.py",
      "return P_mean + math.log(sigma_data / EDM_SIGMA_DATA)", "return P_mean + math.log(EDM_SIGMA_DATA / sigma_data)",
      ["tests/test_edm.py::test_relative_P_mean_keeps_edm_noise_to_signal_distribution"]),
]


def copy_repository(dst: Path) -> None:
    ignore = shutil.ignore_patterns(".git", ".venv", "venv", "out", "__pycache__", "*.egg-info", ".pytest_cache",
                                    "tutorials/out", "checkpoints")
    shutil.copytree(ROOT, dst, ignore=ignore)
    (dst / "checkpoints").symlink_to(ROOT / "checkpoints")  # read-only data the tests load


def run_tests(tests: Sequence[str], workdir: Path) -> int:
    return subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                          cwd=workdir, capture_output=True, text=True).returncode


def run_mutant(mutant: Mutant, workdir: Path) -> tuple:
    """(status, seconds): "caught", "MISSED" or "stale"."""
    path = workdir / mutant.file
    original = path.read_text()
    if original.count(mutant.old) != 1:
        return "stale", 0.0
    path.write_text(original.replace(mutant.old, mutant.new))
    t0 = time.time()
    try:
        returncode = run_tests(mutant.tests, workdir)
    finally:
        path.write_text(original)
    return ("caught" if returncode != 0 else "MISSED"), time.time() - t0


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    chosen = MUTANTS
    for arg in args:
        if arg.startswith("--only="):
            words = [w.strip().lower() for w in arg.split("=", 1)[1].split(",") if w.strip()]
            chosen = [m for m in MUTANTS if any(w in m.name.lower() for w in words)]
    if "--list" in args:
        for m in chosen:
            print(f"{m.name:<55} {m.file:<40} {' '.join(m.tests)}")
        return 0
    print("| mutant | file | tests | result | s |\n|---|---|---|---|---|")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "repo"
        copy_repository(workdir)
        # The relevant tests must pass on the unmutated code, or a failure would count as "caught".
        relevant = sorted({t for m in chosen for t in m.tests})
        if run_tests(relevant, workdir) != 0:
            print(f"the relevant tests fail without any mutant: fix them first ({' '.join(relevant)})")
            return 2
        for m in chosen:
            status, seconds = run_mutant(m, workdir)
            results.append(status)
            print(f"| {m.name} | `{m.file}` | {', '.join(t.split('/')[-1] for t in m.tests)} | {status} | {seconds:.0f} |",
                  flush=True)
    caught = results.count("caught")
    print(f"\n{caught} of {len(results)} mutants caught ({100 * caught / max(len(results), 1):.0f}%); "
          f"missed {results.count('MISSED')}, stale {results.count('stale')}")
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
