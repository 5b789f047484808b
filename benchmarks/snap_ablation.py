"""Snap Video's ablation of its diffusion framework (Table 3), at toy scale, at equal budget.

Trains the same backbone five times on the same toy data, seed and number of steps, every run on joint
image+video batches (half the rows are images, ``--image_fraction=0.5``), and changes only what Table 3
changes (Snap Video, arXiv 2402.14797, Sec. 3.2-3.3 and 4.3, Table 3):

    row   sigma_data  sigma_in                 images
    (i)   0.5         1 (plain EDM)            T-frame videos at frame interval 0 (infinite fps)
    (ii)  0.5         s sqrt(T) (auto)         as (i)
    (iii) 1.0         s sqrt(T) / 2            as (i)
    (iv)  1.0         s sqrt(T) for videos     NOT treated as videos (see below)
    (v)   1.0         s sqrt(T)                as (i): Snap Video's full framework ("Ours")

s sqrt(T) is ``edm.input_scale(T, H, W, 36, 64)`` (``--sigma_in=0``); on 16 frames of 32x32 it is 2.67.

Row (iv). The paper's table prints sigma_in "1/4.0" for it and says images are not treated as infinite-fps
videos; we read this as separate diffusion processes per modality: sigma_in = 1 for images
(one frame: s sqrt(1) at the 64x36 base) and 4 for videos. Its exact protocol is not published. The
nearest honest variant here (``--row_iv=frames``, the default for VDT) trains the image rows of each
batch as **separate 1-frame samples** with their own ``sigma_in = s sqrt(1) = s`` (the videos' rule with
T = 1; 0.67 at 32x32) and no context mask (an image cannot be predicted), with the same loss weighting;
videos are trained as in (v). It needs a backbone that accepts any number of frames (VDT; FIT is built
for a fixed T). ``--row_iv=interval`` (the default for FIT) is a weaker variant that works with any
backbone: images stay T-frame repeats with the videos' sigma_in but are told the videos' frame interval
1/fps instead of 0, so the model is not told that they are static. Both swap ``train.build_objective`` (the
one place where train.py gets the loss a training batch reaches) for the length of the run.

Scores, the same for every row, on ``--eval_clips`` held-out clips (no downloaded weights; NOT FID/FVD):

- prediction PSNR / SSIM of the generated frames, if the preset masks (``predict`` task, e.g. toy Physion
  Collide: 8 frames given, 8 generated);
- **toy-feature FD / KID**: the Frechet distance and KID (``nano_videodiff/evaluation/distances.py``)
  between the features of generated and of real clips in the shipped toy video network
  (``nano_videodiff/evaluation/toy_features.py``: a small 3D convnet trained by this project on toy Physion
  to tell the scenario, contact, object speeds and real from shuffled frame order): FVD's idea with an
  offline, toy-domain network, NOT FVD;
- both also for real clips against the same reference ("real vs real"): the floor that sampling noise alone
  reaches with this many clips. Numbers near it mean "indistinguishable here";
- ``--seeds=0,1,2`` trains every row once per seed and prints mean ± std over seeds, so the table says when
  a difference between rows is smaller than the spread of one row.

Generated samples are scored on what the model generated: whole clips for an unconditional preset
(bouncing_balls), the predicted frames for a masked one. The reference is a second, disjoint set of
held-out clips. The training loss is not compared: its weighting depends on sigma_data and sigma_in.

    python benchmarks/snap_ablation.py                        # bouncing balls, 5 rows x the preset's 2000 steps
    python benchmarks/snap_ablation.py --preset=physion_collide --steps=1000 --eval_clips=64
    python benchmarks/snap_ablation.py --steps=20 --tiny      # development: a smoke run, about a minute
    python benchmarks/snap_ablation.py --steps=500 --depth=2  # any train.py override applies to every row
    python benchmarks/snap_ablation.py --rows=iv,v --row_iv=interval

Cost: one training run of the preset per row plus sampling ``--eval_clips`` clips; the default VDT
(1.8M parameters, 16 frames of 32x32, batch 16) measured 3-10 s per step on 2 shared CPU cores in bf16.
``--tiny`` keeps the data (and so sigma_in) and shrinks the network to 0.09M parameters for development.

It prints a markdown table with the paper's Table 3 beside it; toy numbers are directional only. It never
fails (a failed row prints its error); it is not part of the test suite.
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import toy_data  # noqa: E402
import train  # noqa: E402
from nano_videodiff.training import presets  # noqa: E402
from nano_videodiff import masking  # noqa: E402
from nano_videodiff.conditioning import Batch  # noqa: E402
from nano_videodiff.edm import input_scale  # noqa: E402
from nano_videodiff.generation import generate  # noqa: E402
from nano_videodiff.evaluation import toy_features  # noqa: E402
from nano_videodiff.evaluation.distances import frechet_distance, kernel_distance  # noqa: E402
from nano_videodiff.evaluation.metrics import psnr, ssim  # noqa: E402
from benchmarks.common import over_seeds, parse_seeds, spread  # noqa: E402
from nano_videodiff.models import build_denoiser, count_parameters, resolved_sigma_in  # noqa: E402
from nano_videodiff.training.objectives import DiffusionObjective  # noqa: E402

# Snap Video Table 3 (500M FIT, 64x36, 16 frames): FID, FVD, CLIPSIM per row.
PAPER = {"i": (6.58, 39.95, 0.2370), "ii": (4.03, 31.00, 0.2449), "iii": (4.45, 34.89, 0.2428),
         "iv": (3.50, 24.88, 0.2469), "v": (3.07, 27.79, 0.2459)}
PAPER_SIGMA_IN = {"i": "1", "ii": "4", "iii": "2", "iv": "1/4", "v": "4"}
ROW_NAMES = {"i": "EDM", "ii": "scaled, EDM's sigma_data", "iii": "reduced sigma_in",
             "iv": "images not as videos", "v": "full framework (Ours)"}
ROW_ORDER = ("i", "ii", "iii", "iv", "v")
ROW_KEYS = {"config", "sigma_data", "sigma_in", "image_fraction", "backbone", "max_steps", "out_dir", "seed"}
# --tiny: the preset's data (same T, resolution and so the same auto sigma_in), a much smaller network
TINY = ["--dim=32", "--depth=2", "--heads=2", "--patch_size=8", "--batch_size=8"]
IMAGE_MODES = {  # how the image rows of a joint batch are trained
    "video": "T-frame video, interval 0",
    "frames": "1-frame samples, own sigma_in",
    "interval": "T-frame video told interval 1/fps",
}


# ----------------------------------------------------------------------------------------------------
# The rows
# ----------------------------------------------------------------------------------------------------

def base_preset(preset: str, backbone: str) -> str:
    """The preset to train: ``X_fit`` for ``--backbone=fit`` when it exists (FIT's toy sizes)."""
    if backbone == "fit" and not preset.endswith("_fit") and f"{preset}_fit" in presets.PRESETS:
        return f"{preset}_fit"
    return preset


def auto_sigma_in(preset: str, backbone: str = "vdt", extra: List[str] = ()) -> float:
    """s sqrt(T) for the preset's data shape (what ``--sigma_in=0`` resolves to)."""
    cfg, _, _ = presets.resolve([f"--config={base_preset(preset, backbone)}", *extra, "--sigma_in=0"])
    return resolved_sigma_in(cfg)


def row_definitions(preset: str = "bouncing_balls", backbone: str = "vdt", row_iv: str = "frames",
                    image_fraction: float = 0.5, extra: List[str] = ()) -> Dict[str, dict]:
    """Each row of the ablation: {"name", "overrides" (train.py argv without budget/output flags),
    "image_mode" ("video" | "frames" | "interval"), "sigma_in" (videos), "image_sigma_in"}.

    ``extra`` are overrides applied to every row (e.g. ``--max_frame_stride=2``); the data shape they
    imply is what "auto" sigma_in is computed from.
    """
    if row_iv not in ("frames", "interval"):
        raise ValueError(f"row_iv must be 'frames' or 'interval', got {row_iv!r}")
    name = base_preset(preset, backbone)
    common = [f"--config={name}", f"--image_fraction={image_fraction}", *extra]
    if backbone != "fit" or not name.endswith("_fit"):
        common.insert(1, f"--backbone={backbone}")
    cfg, _, _ = presets.resolve(common)
    auto = auto_sigma_in(preset, backbone, list(extra))
    image_auto = input_scale(1, cfg.data.height, cfg.data.width, cfg.diffusion.sigma_in_base_h,
                             cfg.diffusion.sigma_in_base_w)  # s sqrt(1): one frame at this resolution
    settings = {  # row: (sigma_data, sigma_in override (0 = auto), video sigma_in, image mode)
        "i": (0.5, "1", 1.0, "video"),
        "ii": (0.5, "0", auto, "video"),
        "iii": (1.0, repr(auto / 2), auto / 2, "video"),
        "iv": (1.0, "0", auto, row_iv),
        "v": (1.0, "0", auto, "video"),
    }
    rows = {}
    for key, (sigma_data, sigma_in_arg, sigma_in, mode) in settings.items():
        rows[key] = {"name": ROW_NAMES[key], "image_mode": mode, "sigma_data": sigma_data, "sigma_in": sigma_in,
                     "image_sigma_in": image_auto if mode == "frames" else sigma_in,
                     "overrides": [*common, f"--sigma_data={sigma_data}", f"--sigma_in={sigma_in_arg}"]}
    return rows


def image_mode_loss(mode: str, image_sigma_in: float, video_interval: float):
    """A ``DiffusionObjective`` (objectives.py) for row (iv): the image rows (frame interval 0) of each batch
    are trained as 1-frame samples with their own sigma_in (``frames``), or told the videos' interval
    (``interval``). The loss is the same row-weighted mean over the batch as the original."""

    class ImagesNotAsVideos(DiffusionObjective):
        def forward(self, batch):
            x, cond, sigma, noise, self_cond_draw = batch.x, batch.cond, batch.sigma, batch.noise, batch.self_cond_draw
            is_image = cond.frame_interval == 0
            if mode == "interval":  # same samples, but the model is not told that images are static
                interval = torch.where(is_image, torch.full_like(cond.frame_interval, video_interval),
                                       cond.frame_interval)
                return super().forward(replace(batch, cond=cond.replace(frame_interval=interval)))
            b, total, denoiser = x.shape[0], 0.0, self.model
            video_sigma_in = denoiser.sigma_in
            for rows, image in ((~is_image, False), (is_image, True)):
                if not rows.any():
                    continue
                sub, xs, ns = cond.take(rows), x[rows], noise[rows]
                if image:  # one frame, no context: an image with no time axis and its own sigma_in
                    xs, ns, sub = xs[:, :1], ns[:, :1], sub.replace(known=None, known_x=None)
                denoiser.sigma_in = image_sigma_in if image else video_sigma_in
                try:
                    part = denoiser.loss(Batch(xs, sub, sigma=sigma[rows], noise=ns, self_cond_draw=self_cond_draw[rows]))
                finally:
                    denoiser.sigma_in = video_sigma_in
                total = total + rows.sum() * part
            return total / b

    return ImagesNotAsVideos


@contextmanager
def swapped(module, name: str, value):
    """Replace ``module.name`` by ``value`` inside the block (the trainer looks it up at call time)."""
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


# ----------------------------------------------------------------------------------------------------
# Learned-feature distances (the shipped toy video network; offline; NOT FID/FVD)
# ----------------------------------------------------------------------------------------------------

class SampleStats:
    """Toy-feature Frechet distance and KID (nano_videodiff/evaluation/toy_features.py) of generated clips
    against a fixed set of real reference clips."""

    def __init__(self, reference: torch.Tensor):
        self.net = toy_features.load_features()
        self.ref = toy_features.features(self.net, reference)

    def distances(self, videos: torch.Tensor) -> dict:
        feats = toy_features.features(self.net, videos)
        return {"fd": frechet_distance(self.ref, feats), "kid": kernel_distance(self.ref, feats)[0]}


# ----------------------------------------------------------------------------------------------------
# Train and score one row
# ----------------------------------------------------------------------------------------------------

def evaluation_data(cfg, n: int) -> dict:
    """2n held-out clips: the first n are the models' context (masked presets) and the 'real' set, the
    next n the reference that every generated set is compared against."""
    ds = toy_data.build_dataset(cfg.data, "test")
    if len(ds) < 2 * n:
        raise ValueError(f"--eval_clips={n} needs {2 * n} held-out clips; the preset has {len(ds)}")
    batch = toy_data.get_batch(ds, range(2 * n))
    return {"video": batch["video"][:n], "labels": batch.get("labels", torch.zeros(2 * n))[:n],
            "reference": batch["video"][n:]}


def run(key: str, row: dict, args, stats_cache: dict, seed: Optional[int] = None) -> dict:
    out_dir = Path(args.out_dir) / (f"row_{key}" if seed is None else f"row_{key}_seed{seed}")
    argv = [*row["overrides"], f"--max_steps={args.steps}", f"--out_dir={out_dir}", "--overwrite",
            "--preview_every=0", f"--ckpt_every={max(args.steps, 1)}", f"--dtype={args.dtype}"]
    if seed is not None:
        argv.append(f"--seed={seed}")
    if args.warmup_steps >= 0:
        argv.append(f"--warmup_steps={args.warmup_steps}")
    t0 = time.time()
    cfg0, _, _ = presets.resolve(argv)
    if row["image_mode"] == "video":
        result = train.main(argv)
    else:
        if row["image_mode"] == "frames" and cfg0.model.backbone == "fit":
            raise ValueError("FIT is built for a fixed number of frames: use --row_iv=interval with FIT")
        loss = image_mode_loss(row["image_mode"], row["image_sigma_in"], 1.0 / cfg0.data.fps)
        with swapped(train, "build_objective", lambda cfg: loss(build_denoiser(cfg))):
            result = train.main(argv)
    minutes = (time.time() - t0) / 60
    cfg, ema = result["config"], result["ema"].eval()
    d = cfg.data
    if "data" not in stats_cache:
        stats_cache["data"] = evaluation_data(cfg, args.eval_clips)
    data = stats_cache["data"]
    known = known_x = labels = None
    frames = slice(None)
    if cfg.task.masking != "none":  # score what a masked model predicts, given the first k frames
        k = cfg.task.num_context or d.num_frames // 2
        known = masking.predict(args.eval_clips, d.num_frames, d.height, d.width, num_context=k)
        known_x, frames = data["video"], slice(k, None)
    if d.num_classes > 0:
        labels = data["labels"].long()
    t1 = time.time()
    videos = generate(ema, cfg, args.eval_clips, known=known, known_x=known_x, labels=labels,
                      steps=args.sample_steps, dtype=args.dtype, batch_size=16, seed=0)
    if "stats" not in stats_cache:
        stats_cache["stats"] = SampleStats(data["reference"][:, frames])
        stats_cache["floor"] = stats_cache["stats"].distances(data["video"][:, frames])
    out = {"key": key, "params_M": count_parameters(ema.backbone) / 1e6, "sigma_in": ema.sigma_in,
           "sigma_data": ema.sigma_data, "minutes": minutes, "eval_minutes": (time.time() - t1) / 60,
           **stats_cache["stats"].distances(videos[:, frames])}
    if known is not None:
        out["psnr"] = float(psnr(videos[:, frames], data["video"][:, frames]).mean())
        out["ssim"] = float(ssim(videos[:, frames], data["video"][:, frames]).mean())
    return out


SCORES = ("psnr", "ssim", "fd", "kid", "minutes")


def count_params_line(results: Dict[str, dict]) -> str:
    sizes = sorted({f"{r['params_M']:.2f}M" for r in results.values() if "params_M" in r})
    return f"backbone parameters {', '.join(sizes) or 'n/a'}"


def print_table(rows: Dict[str, dict], results: Dict[str, dict], args, cfg, floor: dict) -> None:
    masked = cfg.task.masking != "none"
    print(f"\n### Snap Video Table 3 at toy scale: {args.preset} ({cfg.data.num_frames} frames of "
          f"{cfg.data.height}x{cfg.data.width}), {cfg.model.backbone.upper()}, {args.steps} steps per "
          f"row, batch {cfg.optim.batch_size}, image_fraction {args.image_fraction}, same data, "
          f"training seeds {args.seed_list or 'of the preset'}"
          + (f"; every row with {' '.join(args.extra)}" if args.extra else "")
          + f"; {count_params_line(results)}\n")
    head = ["row", "sigma_data", "sigma_in", "images"]
    if masked:
        head += ["pred. PSNR (dB)", "pred. SSIM"]
    head += ["toy-feature FD", "toy-feature KID", "train s", "paper sigma_in", "paper FID / FVD / CLIPSIM"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for key, row in rows.items():
        r = results.get(key, {"error": "not run"})
        sigma_in = f"{row['sigma_in']:.2f}"
        if row["image_mode"] == "frames":
            sigma_in = f"{row['image_sigma_in']:.2f} / {row['sigma_in']:.2f}"
        paper = "{:.2f} / {:.2f} / {:.4f}".format(*PAPER[key])
        cells = [f"({key}) {row['name']}", f"{row['sigma_data']:g}", sigma_in, IMAGE_MODES[row["image_mode"]]]
        if "error" in r:
            err = str(r["error"]).replace("|", "/").replace("\n", " ")[:150]
            cells += [f"error: {err}"] + [""] * (len(head) - len(cells) - 3)
        else:
            if masked:
                cells += [spread(r["psnr"], ".2f"), spread(r["ssim"], ".3f")]
            cells += [spread(r["fd"], ".2f"), spread(r["kid"], ".4f"), f"{60 * r['minutes'][0]:.0f}"]
        cells += [PAPER_SIGMA_IN[key], paper]
        print("| " + " | ".join(cells) + " |")
    if floor:
        cells = ["real vs real (floor)", "", "", ""] + (["", ""] if masked else [])
        cells += [f"{floor['fd']:.2f}", f"{floor['kid']:.4f}", "", "", ""]
        print("| " + " | ".join(cells) + " |")
    print(f"\nToy numbers are directional only: {args.eval_clips} clips, a tiny model and {args.steps} steps, "
          "against the paper's 500M-parameter FIT trained for 550k steps. Lower FD is better (floor: two real "
          "sets); FD/KID are over the features of the shipped toy video network (evaluation/toy_features.py), NOT "
          "FID/FVD; a ± is the std over training seeds (--seeds); the "
          "paper's CLIPSIM (text alignment) has no analogue here. sigma_in \"a / b\" = images / videos.")
    if "iv" in rows:
        note = {"frames": "image rows trained as separate 1-frame samples with sigma_in = s (s sqrt(T) at T = 1) "
                          "and no context mask, videos as in (v); the paper prints sigma_in \"1/4\"",
                "interval": "images stay T-frame repeats with the videos' sigma_in but are told the videos' "
                            "frame interval 1/fps instead of 0 (the model is not told they are static)"}
        print(f"Row (iv): {note[rows['iv']['image_mode']]}. The paper's exact protocol is not published.")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="bouncing_balls", help="toy preset, e.g. bouncing_balls, physion_collide")
    p.add_argument("--backbone", default="vdt", help="vdt | fit (fit uses the preset's _fit sizes)")
    p.add_argument("--steps", type=int, default=0, help="training steps per row (equal budget); 0 = the preset's")
    p.add_argument("--eval_clips", type=int, default=32, help="generated clips per row (and reference clips)")
    p.add_argument("--sample_steps", type=int, default=16, help="Heun steps per sample")
    p.add_argument("--rows", default=",".join(ROW_ORDER), help="which rows, e.g. i,v")
    p.add_argument("--row_iv", default="auto", choices=("auto", "frames", "interval"),
                   help="row (iv)'s variant; auto = frames for VDT, interval for FIT (fixed T)")
    p.add_argument("--image_fraction", type=float, default=0.5)
    p.add_argument("--max_frame_stride", type=int, default=1, help="variable frame rate for every row")
    p.add_argument("--warmup_steps", type=int, default=-1, help="-1 = the preset's (capped at steps // 5)")
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--out_dir", default="benchmarks/out/snap_ablation")
    p.add_argument("--tiny", action="store_true", help="development sizes: " + " ".join(TINY))
    p.add_argument("--seeds", default="", help="training seeds, e.g. 0,1,2: every row once per seed, "
                   "scores as mean ± std over seeds (default: the preset's one seed)")
    args, passthrough = p.parse_known_args(argv)
    args.seed_list = [s for s in parse_seeds(args.seeds) if s is not None]
    extra = [f"--max_frame_stride={args.max_frame_stride}"] if args.max_frame_stride != 1 else []
    extra += (TINY if args.tiny else []) + passthrough
    args.extra = extra
    if args.steps <= 0:
        args.steps = presets.get_preset(base_preset(args.preset, args.backbone)).optim.max_steps
    for arg in extra:
        key = arg[2:].partition("=")[0].split(".")[-1]
        if not arg.startswith("--") or key in ROW_KEYS:
            p.error(f"{arg!r}: extra arguments are train.py overrides (--key=value) applied to every row, "
                    f"and may not set what the rows set ({', '.join(sorted(ROW_KEYS))})")
    if args.warmup_steps < 0:  # a tiny budget should not be spent entirely in warm-up
        preset_warmup = presets.get_preset(base_preset(args.preset, args.backbone)).optim.warmup_steps
        args.warmup_steps = min(preset_warmup, max(1, args.steps // 5))
    if args.row_iv == "auto":
        args.row_iv = "interval" if args.backbone == "fit" else "frames"
    try:
        all_rows = row_definitions(args.preset, args.backbone, args.row_iv, args.image_fraction, extra)
    except Exception as e:  # a benchmark reports, it does not fail
        print(f"could not build the rows: {e!r}")
        return
    keys = [k.strip() for k in args.rows.split(",") if k.strip() in all_rows]
    rows = {k: all_rows[k] for k in ROW_ORDER if k in keys}
    results, cache = {}, {}
    for key, row in rows.items():
        print(f"\n=== row ({key}) {row['name']}: {' '.join(row['overrides'][1:])} [{row['image_mode']}]")
        results[key] = over_seeds(lambda seed: run(key, row, args, cache, seed), args.seed_list or [None], SCORES)
    cfg, _, _ = presets.resolve(next(iter(rows.values()))["overrides"]) if rows else (None, None, None)
    if cfg is not None:
        print_table(rows, results, args, cfg, cache.get("floor", {}))


if __name__ == "__main__":
    main()
