"""Does the video loader keep up with training? Decoded clips/s with 0, 2 and 4 workers vs training videos/s.

    PYTHONPATH=. python benchmarks/loader.py [--config=physion_collide] [--data_root=FOLDER] [--steps=N] [--repeats=N]
                                             [--workers=0,2,4] [--quick]

Without ``--data_root`` it first writes a folder of real-looking clips (``write_clips``: 24 H.264 MP4s of
320x240 at 24/25/30 fps, 64 frames, textured panning backgrounds with moving discs, at FFmpeg's default
quality), so every clip must be cropped and resized to the preset's square size. The loader is the one
train.py uses (``TrainingData.prefetching``): ``StepIndices`` draws each step's indices from (seed, step),
``--num_workers`` processes decode whole batches ahead. Clips/s is measured over ``--steps`` batches after
the first one (worker start-up is reported separately). Training videos/s is one optimizer step of the
preset (benchmarks/throughput.py) on
a batch of these clips as train.py makes it (training/batches.py), fp32 and bf16. Torch runs one thread per process.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import toy_data  # noqa: E402
from benchmarks.common import attempt, fmt, load_average, machine_line, markdown_table, parse_simple_args  # noqa: E402
from benchmarks.throughput import measure_training  # noqa: E402
from nano_videodiff.data.loader import StepIndices, step_loader  # noqa: E402
from nano_videodiff.models import build_denoiser  # noqa: E402
from nano_videodiff.training.batches import TrainingData, make_batch, step_indices  # noqa: E402
from nano_videodiff.training.config import apply_overrides  # noqa: E402
from nano_videodiff.training.presets import get_preset  # noqa: E402


def write_clips(folder: Path, num_clips: int = 24, frames: int = 64, size=(240, 320)) -> Path:
    """``num_clips`` MP4s that look like footage: a panning textured background and two moving discs."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    h, w = size
    y, x = np.mgrid[:h, :w].astype(np.float32)
    for n in range(num_clips):
        fps = (24, 25, 30)[n % 3]
        texture = rng.random((3, 8, 8)).astype(np.float32)
        background = torch.nn.functional.interpolate(torch.from_numpy(texture)[None], size=(h, 2 * w),
                                                     mode="bicubic", align_corners=False)[0].clamp(0, 1).numpy()
        centres, speeds = rng.random((2, 2)) * (h, w), rng.normal(0, 3, (2, 2))
        colours = rng.random((2, 3))
        with av.open(str(folder / f"clip_{n:03d}.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for t in range(frames):
                pan = int(t * w / frames)
                frame = background[:, :, pan:pan + w].copy()
                for c, v, colour in zip(centres, speeds, colours):
                    cy, cx = (c + v * t) % (h, w)
                    disc = (y - cy) ** 2 + (x - cx) ** 2 < (h / 8) ** 2
                    frame[:, disc] = colour[:, None]
                rgb = (frame.transpose(1, 2, 0) * 255).astype(np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return folder


def clips_per_second(cfg, num_workers: int, steps: int):
    """(decoded clips/s over ``steps`` batches after the first, seconds to the first batch)."""
    dataset = toy_data.build_dataset(cfg.data, "train")
    sampler = StepIndices(lambda step: step_indices(cfg, step)[1], 0, steps + 1, [(0, 1)])
    if num_workers == 0:
        batches = (toy_data.get_batch(dataset, indices) for indices in sampler)
    else:
        batches = iter(step_loader(dataset, sampler, num_workers))
    t0 = time.perf_counter()
    next(batches)
    t1 = time.perf_counter()
    for _ in batches:
        pass
    return steps * cfg.optim.batch_size / (time.perf_counter() - t1), t1 - t0


def main(argv) -> None:
    parsed = parse_simple_args(argv, __doc__)
    if parsed is None:
        return
    quick, options = parsed
    torch.set_num_threads(1)
    preset = options.pop("config", "physion_collide")  # pixel space: the main job's latent preset needs its VAE
    steps = int(options.pop("steps", 3 if quick else 12))
    repeats = int(options.pop("repeats", 2 if quick else 5))
    workers = [int(w) for w in options.pop("workers", "0,2" if quick else "0,2,4").split(",")]
    root = options.pop("data_root", "")
    if not root:
        root = str(write_clips(Path(tempfile.mkdtemp(prefix="loader_bench_")) / "clips",
                               num_clips=6 if quick else 24, frames=24 if quick else 64))
    cfg = get_preset(preset)
    apply_overrides(cfg, {"dataset": "videos", "data_root": root, "num_train_clips": "0", **options})
    d, B = cfg.data, cfg.optim.batch_size
    print(f"# nano-videodiff loader: preset `{preset}`, batch {B} x {d.num_frames}x{d.channels}x{d.height}x"
          f"{d.width}, max_frame_stride {d.max_frame_stride}, clips under {root}\n")
    print(machine_line())
    print(f"\n{load_average()} (before)\n")
    rows = []
    for n in workers:
        speed = attempt(clips_per_second, cfg, n, steps)
        ok = not isinstance(speed, str)
        rows.append([f"loader, {n} workers", fmt(speed[0]) if ok else speed, fmt(speed[1], ".2f") if ok else ""])
    torch.manual_seed(0)
    model = build_denoiser(cfg)
    batch = make_batch(cfg, TrainingData(cfg), 0, 0, 1, "cpu")  # a real batch: the preset's masks and context
    for dtype in ("fp32", "bf16"):
        timing, _ = measure_training(cfg, model, dtype, repeats, batch)
        speed = timing if isinstance(timing, str) else B / (timing["median"] / 1e3)
        rows.append([f"training `{preset}`, {dtype}", fmt(speed), ""])
    print(markdown_table(["", "clips/s (loader) or videos/s (training)", "s to first batch"], rows))
    print(f"\n{load_average()} (after)")


if __name__ == "__main__":
    main(sys.argv[1:])
