"""VDT's comparison of three ways to condition on given frames, at toy scale (VDT Sec. 3, its ablation).

Trains the same VDT backbone three times, with ``--conditioning=concat|adaln|cross_attention``, on the same
data, seed and budget (forward prediction: the first half of the frames given), then prints the final
training loss and the prediction PSNR/SSIM on held-out clips. VDT reports that token concatenation
converges fastest and ends best (Physion FVD/SSIM: concat 129.1/0.872, cross-attention 134.9/0.852,
adaLN 270.8/0.625; VDT, arXiv 2305.13311, its conditioning ablation; we took these numbers from a
third-party summary and could not check them against the paper itself).

    python benchmarks/conditioning.py                       # bouncing balls, ~3 x 4 minutes on 2 CPU cores
    python benchmarks/conditioning.py --steps=300 --preset=physion_collide
    python benchmarks/conditioning.py --steps=100 --seeds=0,1,2    # mean ± std over training seeds

It prints a markdown table; it never fails the test suite (it is not part of it).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import toy_data  # noqa: E402
import train  # noqa: E402
from nano_videodiff import masking  # noqa: E402
from nano_videodiff.generation import generate  # noqa: E402
from nano_videodiff.hardware import resolve_dtype  # noqa: E402
from nano_videodiff.evaluation.metrics import psnr, ssim  # noqa: E402
from nano_videodiff.models import count_parameters  # noqa: E402
from benchmarks.common import over_seeds, parse_seeds, spread  # noqa: E402


def run(strategy: str, args, seed=None) -> dict:
    out_dir = Path(args.out_dir) / (strategy if seed is None else f"{strategy}_seed{seed}")
    t0 = time.time()
    result = train.main([f"--config={args.preset}", f"--conditioning={strategy}", "--masking=predict",
                         f"--max_steps={args.steps}", f"--out_dir={out_dir}", "--overwrite",
                         "--preview_every=0", f"--ckpt_every={args.steps}", f"--dtype={args.dtype}"]
                        + ([] if seed is None else [f"--seed={seed}"]))
    minutes = (time.time() - t0) / 60
    cfg, ema = result["config"], result["ema"].eval()
    d = cfg.data
    batch = toy_data.get_batch(toy_data.build_dataset(d, "test"), range(args.eval_clips))
    k = cfg.task.num_context or d.num_frames // 2
    known = masking.predict(args.eval_clips, d.num_frames, d.height, d.width, num_context=k)
    labels = batch["labels"].long() if d.num_classes > 0 else None
    pred = generate(ema, cfg, args.eval_clips, known=known, known_x=batch["video"], labels=labels,
                    steps=args.sample_steps, dtype=args.dtype, batch_size=16)
    future = slice(k, None)
    losses = [json.loads(line)["loss"] for line in (out_dir / "log.jsonl").read_text().splitlines()]
    tail = losses[-max(1, len(losses) // 10):]  # the last tenth of the logged losses
    return {"conditioning": strategy, "params_M": count_parameters(ema.backbone) / 1e6,
            "final_loss": sum(tail) / len(tail), "minutes": minutes,
            "psnr": float(psnr(pred[:, future], batch["video"][:, future]).mean()),
            "ssim": float(ssim(pred[:, future], batch["video"][:, future]).mean())}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="bouncing_balls")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--eval_clips", type=int, default=32)
    p.add_argument("--sample_steps", type=int, default=16)
    p.add_argument("--dtype", default="auto", help="auto (bf16 where it is fast: nano_videodiff/hardware.py) | bf16 | fp32")
    p.add_argument("--out_dir", default="benchmarks/out/conditioning")
    p.add_argument("--strategies", default="concat,adaln,cross_attention")
    p.add_argument("--seeds", default="", help="training seeds, e.g. 0,1,2: scores as mean ± std over seeds")
    args = p.parse_args()
    args.dtype = resolve_dtype(args.dtype, torch.device("cpu")).name
    rows = []
    for strategy in args.strategies.split(","):
        row = over_seeds(lambda seed: run(strategy, args, seed), parse_seeds(args.seeds),
                         ("final_loss", "psnr", "ssim", "minutes"))
        rows.append({"conditioning": strategy, **row})
    print(f"\n### Conditioning strategies: {args.preset}, {args.steps} steps, same data, training seeds "
          f"{args.seeds or 'of the preset'} (± = std over seeds)\n")
    print("| conditioning | params (M) | final loss | prediction PSNR (dB) | SSIM | train minutes |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['conditioning']} | error: {r['error']} | | | | |")
        else:
            print(f"| {r['conditioning']} | {r['params_M']:.2f} | {spread(r['final_loss'], '.4f')} | "
                  f"{spread(r['psnr'], '.2f')} | {spread(r['ssim'], '.3f')} | {r['minutes'][0]:.1f} |")


if __name__ == "__main__":
    main()
