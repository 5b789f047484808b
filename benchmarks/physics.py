"""Toy Physion benchmarks: how fast clips are generated, and how well a model predicts them.

    python benchmarks/physics.py                        # prints markdown tables; never fails
    python benchmarks/physics.py --ckpt=PATH --eval_clips=64

`generation_speed_table` times `toy_data.physion.generate_clip` (simulation with pymunk plus
anti-aliased rendering) per scenario and resolution, single process, and reports clips per second.
A failure in one cell is printed in that cell instead of stopping the run.

`evaluation_table` scores a checkpoint's forward prediction on held-out clips against copy-last-frame,
constant-velocity and simulator rows (`nano_videodiff/evaluation/physics_eval.py`: PSNR/SSIM, trajectory error,
contact accuracy). The checkpoint is `--ckpt=PATH`, else out/physion_collide/ckpt.pt if it exists;
without one the table is replaced by a note.
"""
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _clips_per_second(scenario, resolution, num_frames, clips, budget):
    from toy_data.physion import generate_clip
    generate_clip(scenario, 0, num_frames=num_frames, resolution=resolution)  # warm-up
    start, done = time.perf_counter(), 0
    while done < clips and (done == 0 or time.perf_counter() - start < budget):
        generate_clip(scenario, 1 + done, num_frames=num_frames, resolution=resolution)
        done += 1
    return done / (time.perf_counter() - start)


def generation_speed_table(resolutions=(32, 64), num_frames=16, clips=20, budget=3.0):
    """Markdown table: clips/second for every scenario (rows) at each resolution (columns), each
    cell measured over up to `clips` clips or `budget` seconds, whichever ends first."""
    try:
        from toy_data.physion import SCENARIOS
    except Exception as e:  # the benchmark must print something rather than crash
        return f"toy Physion unavailable: {type(e).__name__}: {e}"
    cols = [f"{r}x{r}x{num_frames} clips/s" for r in resolutions]
    lines = ["| scenario | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for scenario in SCENARIOS:
        cells = []
        for r in resolutions:
            try:
                cells.append(f"{_clips_per_second(scenario, r, num_frames, clips, budget):.1f}")
            except Exception as e:
                cells.append(f"error: {type(e).__name__}")
        lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CKPT = ROOT / "out" / "physion_collide" / "ckpt.pt"


def evaluation_table(ckpt=None, num_clips=64, steps=0):
    """Markdown table of model vs baselines for the checkpoint `ckpt` (None: DEFAULT_CKPT if it exists)
    on `num_clips` held-out clips of its own dataset, with `steps` sampler steps (0 = its config's).
    Returns a note instead of raising when there is no checkpoint or the evaluation fails."""
    path = Path(ckpt) if ckpt else DEFAULT_CKPT
    if not path.exists():
        return (f"no checkpoint at {path}: train one (python train.py --config=physion_collide) or pass "
                "--ckpt=PATH to see the model-vs-baselines table")
    try:
        import torch
        from nano_videodiff.evaluation import physics_eval
        from nano_videodiff.training.checkpoint import load_checkpoint
        from nano_videodiff.models import load_model
        from nano_videodiff.hardware import pick_device
        device = pick_device("auto")
        model, cfg = load_model(path, use_ema=True, device=device)
        trained = load_checkpoint(path).get("step", "?")
        start = time.perf_counter()
        result = physics_eval.evaluate_prediction(model, cfg, num_clips=num_clips, steps=steps, device=device,
                                                  batch_size=16, progress=True)
        seconds = time.perf_counter() - start
        return (f"checkpoint {path} ({cfg.model.backbone}, trained {trained} steps; "
                f"evaluated on {device} with {torch.get_num_threads()} threads in {seconds:.0f} s)\n\n"
                + physics_eval.format_table(result))
    except Exception as e:  # the benchmark prints a note rather than crash
        return f"evaluation of {path} failed: {type(e).__name__}: {e}"


@dataclass
class PhysicsArgs:
    ckpt: str = ""        # the checkpoint to evaluate ("" = DEFAULT_CKPT if it exists)
    eval_clips: int = 64  # held-out clips
    steps: int = 0        # sampler steps (0 = the checkpoint config's)


def parse_args(argv):
    """--ckpt=PATH, --eval_clips=N, --steps=N (all optional), through the one parser of config.py."""
    from nano_videodiff.training.config import options_help, parse_into, split_args
    values, wants_help = split_args(argv)
    if wants_help:
        raise SystemExit(options_help(PhysicsArgs(), "usage: python benchmarks/physics.py [--key=value ...]"))
    try:
        args = parse_into(PhysicsArgs(), values)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    return args.ckpt or None, args.eval_clips, args.steps


def main(argv=None):
    ckpt, eval_clips, steps = parse_args(sys.argv[1:] if argv is None else argv)
    print("## Toy Physion generation speed (one process, simulate + render)\n")
    try:
        print(generation_speed_table())
    except Exception as e:  # never fail
        print(f"generation benchmark failed: {type(e).__name__}: {e}")
    print("\n## Forward prediction: model vs baselines (nano_videodiff/evaluation/physics_eval.py)\n")
    print(evaluation_table(ckpt, eval_clips, steps))


if __name__ == "__main__":
    main()
