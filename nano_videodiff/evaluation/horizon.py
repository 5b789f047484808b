"""How far into the future does the physics hold? Forward prediction scored as a function of the horizon.

``physics_eval.py`` scores one window: k given -> T - k predicted frames. Here the model predicts H frames
past the k given ones by autoregressive rollout (``rollout.py``: window after window, each continuing from
the last k frames it made), on toy Physion clips of k + H frames whose scenes are built for the model's T
frames (``toy_data.build_dataset(..., clip_frames=...)``: a clip starts as the training clips do and the
engine runs on). Every column of ``physics_eval`` is computed per horizon step h = 1..H (the plot) and per
block of frames (the table; default block = T - k, one window):

- PSNR, SSIM of the frames of the step/block (per-frame PSNR capped at 100 dB, as in physics_eval);
- trajectory error (px) of agent and patient tracked by colour against the simulator's states, and the
  fraction of the objects visible in the true frames that the method shows;
- contact accuracy *by* the end of the step/block: did agent and patient touch in frames 0..k+h-1? The
  label comes from the engine's first contact frame, so a contact at frame 30 of a 40-frame clip counts
  only from h = 30 - k + 1 on; methods are judged over the same frames (pixels for frame methods, discs
  for constant velocity, exact shapes for the simulator), as physics_eval judges the whole clip. The pixel
  judge applied to the *true* frames is the ceiling of the frame rows (``frame_judge_acc``, its own row):
  it calls objects within 2 px touching, so near a contact it can be a frame early, and near misses count.

The baselines are physics_eval's (copy-last, constant velocity, simulator), extrapolated from the same k
given frames over the whole horizon. Video LDM (arXiv 2304.08818, Sec. 3.1 and 4) and W.A.L.T (arXiv
2312.06662, App. A) make long videos this way; Physion (arXiv 2106.08261) asks the contact question.

    result = evaluate_horizon(model, cfg, horizon=24, num_clips=32)
    print(format_horizon(result))
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch

import toy_data
from .. import masking
from ..errors import UserError
from ..rollout import context_frames, rollout
from ..training.config import Config
from .metrics import (contact_from_frames, contact_from_trajectories, copy_last_frame, psnr, radii_from_frames,
                      ssim, trajectory_error)
from .physics_eval import METHODS, PSNR_CAP_DB, STATE_CONTACT_MARGIN_PX, method_trajectories, shape_gap

COLUMNS = (("psnr", "PSNR (dB)", ".2f"), ("ssim", "SSIM", ".3f"), ("traj_err_px", "trajectory error (px)", ".2f"),
           ("objects_shown", "objects shown", ".2f"), ("contact_acc", "contact accuracy by the block's end", ".3f"))


def horizon_clips(cfg: Config, num_clips: int, length: int, data_seed: Optional[int] = None) -> dict:
    """The first ``num_clips`` toy Physion test clips, ``length`` frames long (scenes of the model's T)."""
    if cfg.data.dataset != "physion":
        raise UserError(f"--horizon needs toy Physion (object states and contact labels), not {cfg.data.dataset!r}")
    data_cfg = Config.from_dict(cfg.to_dict()).data  # a copy: the caller's config stays as it is
    data_cfg.num_test_clips = min(num_clips, data_cfg.num_test_clips or num_clips)  # the same first clips
    if data_seed is not None:
        data_cfg.data_seed = data_seed
    dataset = toy_data.build_dataset(data_cfg, "test", clip_frames=max(length, data_cfg.num_frames))
    batch = toy_data.get_batch(dataset, range(len(dataset)))
    for key in ("video", "states"):
        batch[key] = batch[key][:, :length]
    return batch


def _cumulative(per_frame: torch.Tensor) -> torch.Tensor:
    """(B, T) bool -> (B, T): True from the first True on (contact "by frame t")."""
    return per_frame.long().cummax(1).values.bool()


def score_horizon(pred: torch.Tensor, clips: dict, num_context: int, block: int) -> dict:
    """Per-step curves and per-block rows for ``pred`` (B, k + H, C, H, W) against ``clips`` (horizon_clips).

    Returns {"steps": {method: {column: [H values]}}, "blocks": [{"start", "end" (1-based horizon steps,
    inclusive), "rows": [physics_eval-style rows]}], "frame_judge_acc": [per step: the pixel judge on the
    true frames]}; None where a column does not apply (pixels for the object-level rows).
    """
    truth, states = clips["video"], clips["states"]
    if pred.shape != truth.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and truth {tuple(truth.shape)} differ")
    k, t = num_context, truth.shape[1]
    copy = torch.cat([truth[:, :k], copy_last_frame(truth[:, :k], t - k)], 1)
    frames = {"model": pred, "copy last frame": copy}
    tracks = method_trajectories(pred, truth, k, states)
    true_xy, seen = states[:, :, :2, :2].float(), tracks["true frames"][1]
    contact_frame = clips["contact_frame"].long()
    # the label by frame e: the engine's first contact frame is < e
    labels = (contact_frame[:, None] >= 0) & (contact_frame[:, None] < torch.arange(1, t + 1)[None])
    touch = {"model": contact_from_frames(pred, per_frame=True),
             "copy last frame": contact_from_frames(copy, per_frame=True),  # no new frame after the context
             "constant velocity": contact_from_trajectories(tracks["constant velocity"][0],
                                                            radii_from_frames(truth[:, :k]), per_frame=True),
             "simulator": shape_gap(states, clips["kinds"], clips["sizes"], clips["radii"].float())
             <= STATE_CONTACT_MARGIN_PX}
    by_end = {name: (_cumulative(v) == labels).float().mean(0) for name, v in touch.items()}  # (T,) accuracy
    judge = (_cumulative(contact_from_frames(truth, per_frame=True)) == labels).float().mean(0)
    pixel_ssim = min(truth.shape[-2:]) >= 11
    per_frame = {name: (psnr(v, truth, per_frame=True).clamp(max=PSNR_CAP_DB),
                        ssim(v, truth, per_frame=True) if pixel_ssim else None) for name, v in frames.items()}

    def row(name: str, a: int, b: int) -> dict:
        """The columns over absolute frames a..b-1 (contact: by frame b - 1)."""
        out = {"method": name, "psnr": None, "ssim": None, "traj_err_px": None, "objects_shown": None,
               "contact_acc": float(by_end[name][b - 1])}
        if name in per_frame:
            p, s = per_frame[name]
            out["psnr"] = _num(p[:, a:b].mean())
            out["ssim"] = None if s is None else _num(s[:, a:b].mean())
        xy, vis = (tracks["true frames"] if name == "simulator" else tracks[name])
        shown = seen[:, a:b] if name == "simulator" else vis[:, a:b] & seen[:, a:b]
        out["traj_err_px"] = _num(trajectory_error(xy[:, a:b], true_xy[:, a:b], shown))
        if name != "simulator":
            out["objects_shown"] = _num(shown.sum() / seen[:, a:b].sum().clamp(min=1))
        return out

    per_step = {name: [row(name, k + h, k + h + 1) for h in range(t - k)] for name in METHODS}
    steps = {name: {key: [r[key] for r in rows] for key, _, _ in COLUMNS} for name, rows in per_step.items()}
    blocks = [{"start": a + 1, "end": min(a + block, t - k),
               "rows": [row(name, k + a, k + min(a + block, t - k)) for name in METHODS]}
              for a in range(0, t - k, block)]
    return {"steps": steps, "blocks": blocks, "frame_judge_acc": [float(x) for x in judge[k:]]}


def _num(x) -> Optional[float]:
    x = float(x)
    return None if math.isnan(x) else x


def evaluate_horizon(model, cfg: Config, horizon: int, num_clips: int = 32, block: int = 0, steps: int = 0,
                     seed: int = 0, num_context: int = 0, data_seed: Optional[int] = None,
                     return_clips: bool = False, **rollout_kwargs) -> dict:
    """Roll the model out ``horizon`` frames past k given ones on held-out toy Physion clips and score it
    with the baselines per step and per block (``block`` frames, 0 = T - k). Other keywords (solver,
    cfg_scale, guidance, S_churn, dtype, batch_size, device, progress) go to ``rollout``."""
    d = cfg.data
    if horizon < 1:
        raise UserError(f"--horizon must be >= 1 frames, got {horizon}")
    k = context_frames(cfg, num_context)
    block = block or d.num_frames - k
    clips = horizon_clips(cfg, num_clips, k + horizon, data_seed)
    labels = clips["labels"].long() if d.num_classes > 0 else None
    pred = rollout(model, cfg, clips["video"][:, :k], k + horizon, num_context=k, steps=steps, seed=seed,
                   labels=labels, **rollout_kwargs)
    result = {**score_horizon(pred, clips, k, block), "num_clips": int(pred.shape[0]),
              "config": {"dataset": d.dataset, "scenario": d.scenario, "num_frames": d.num_frames, "num_context": k,
                         "horizon": horizon, "block": block, "windows": math.ceil(horizon / (d.num_frames - k)),
                         "steps": steps or cfg.diffusion.sample_steps, "seed": seed, "height": d.height,
                         "width": d.width, "data_seed": d.data_seed if data_seed is None else data_seed,
                         **{key: v for key, v in rollout_kwargs.items() if key not in ("device", "progress")}}}
    result["positive_rate"] = float(clips["contact"].float().mean())  # contact over the whole k + H frames
    if return_clips:
        known = masking.predict(*pred.shape[:2], *pred.shape[-2:], num_context=k)
        result["clips"] = {**clips, "pred": pred, "known": known}
    return result


def format_horizon(result: dict) -> str:
    """One markdown table per column: methods x blocks of horizon frames."""
    blocks, c = result["blocks"], result["config"]
    head = "| {} | " + " | ".join(f"frames {b['start']}-{b['end']}" for b in blocks) + " |"
    parts = []
    for key, title, spec in COLUMNS:
        lines = [head.format(title), "|---|" + "---:|" * len(blocks)]
        for i, name in enumerate(METHODS):
            cells = [b["rows"][i][key] for b in blocks]
            if any(v is not None for v in cells):
                lines.append(f"| {name} | " + " | ".join("n/a" if v is None else format(v, spec) for v in cells) + " |")
        if key == "contact_acc":  # the ceiling of the frame rows: the same judge on the true frames
            ceiling = [result["frame_judge_acc"][b["end"] - 1] for b in blocks]
            lines.append("| *pixel judge on the true frames* | " + " | ".join(format(v, spec) for v in ceiling)
                         + " |")
        parts.append("\n".join(lines))
    note = (f"{result['num_clips']} held-out toy Physion {c['scenario']} clips of {c['num_context']} given + "
            f"{c['horizon']} predicted frames ({c['windows']} rollout windows of {c['num_frames'] - c['num_context']} "
            f"frames) at {c['height']}x{c['width']}, {c['steps']} sampler steps; contact rate over the clips "
            f"{result['positive_rate']:.2f}; the pixel judge on the true frames scores "
            f"{result['frame_judge_acc'][-1]:.3f} by the last frame.")
    return "\n\n".join(parts) + "\n\n" + note


def plot_horizon(result: dict, path) -> Path:
    """Per-step curves of every column (one panel each), window boundaries dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    c, steps = result["config"], result["steps"]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    x = list(range(1, c["horizon"] + 1))
    for ax, (key, title, _) in zip(axes, [COLUMNS[0], COLUMNS[1], COLUMNS[2], COLUMNS[4]]):
        for name in METHODS:
            values = steps[name][key]
            if any(v is not None for v in values):
                ax.plot(x, [math.nan if v is None else v for v in values], marker=".", label=name)
        if key == "contact_acc":
            ax.plot(x, result["frame_judge_acc"], color="black", ls=":", label="pixel judge, true frames")
        for w in range(1, c["windows"]):
            ax.axvline(w * (c["num_frames"] - c["num_context"]) + 0.5, color="grey", ls="--", lw=0.8)
        ax.set(xlabel="frames past the context", title=title.replace(" by the block's end", " by step h"))
    fig.legend(*axes[3].get_legend_handles_labels(), loc="lower center", ncol=len(METHODS) + 1, fontsize=9)
    fig.suptitle(f"toy Physion {c['scenario']}: {c['num_context']} given frames, rollout of {c['horizon']} "
                 f"(dashed: a new window)", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def evaluate_from_args(model, cfg: Config, args, device) -> dict:
    """``sample.py --eval --horizon=H``: the evaluation with sample.py's options; prints the tables."""
    result = evaluate_horizon(model, cfg, args.horizon, num_clips=args.eval_clips, steps=args.steps, seed=args.seed,
                              num_context=args.num_context, data_seed=args.data_seed, return_clips=True,
                              device=device, batch_size=args.batch_size, dtype=args.dtype, solver=args.solver,
                              cfg_scale=args.cfg_scale, guidance=args.guidance, S_churn=args.S_churn, progress=True)
    print(format_horizon(result))
    return result


def save_horizon(result: dict, out_dir, num_videos: int = 8, fps: float = 10.0) -> dict:
    """eval.json (the result), horizon.md (the tables), horizon.png (the curves) and the first rollouts as
    GIFs [given | model | truth] (physics_eval.save_evaluation)."""
    from .physics_eval import save_evaluation
    out_dir = Path(out_dir)
    save_evaluation(result, out_dir, num_videos=num_videos, fps=fps)
    (out_dir / "horizon.md").write_text(format_horizon(result) + "\n")
    plot_horizon(result, out_dir / "horizon.png")
    print(f"wrote {out_dir / 'eval.json'}, horizon.md, horizon.png and rollout videos [given | model | truth]")
    return result
