"""Physics prediction: does the model's future look right, move right, and lead to the right outcome?

The protocol, for a model trained with the ``predict`` task (metrics from ``metrics.py``; the contact
question is Physion's object contact prediction, Bear et al. 2021, "Physion: Evaluating Physical Prediction
from Vision in Humans and Machines", arXiv 2106.08261):

1. Take ``num_clips`` held-out clips (``build_dataset(cfg.data, "test")``) of T frames.
2. Give the model the first k frames (k = ``cfg.task.num_context``, else T // 2; toy Physion's presets
   use VDT's Physion setting, 8 given -> 8 predicted at 10 fps) and let it generate the other T - k
   (``generation.generate`` with the ``predict`` mask; the given frames come back bit-exactly).
3. Score the prediction, next to three reference rows scored by the same code:

   ============= ================================================================================
   model         the generated frames
   copy last     the last context frame repeated: "nothing moves" (PSNR is hard to beat early)
   constant vel. agent and patient found by colour in the context, extrapolated at their last
                 velocity (``metrics.constant_velocity_trajectories``): inertia without collisions
   simulator     the engine's own object states: its trajectory error against the centroids found
                 in the *true* frames is the measurement floor of the colour tracker; its contact
                 verdict (from states and true shapes) is what a perfect state predictor attains
   ============= ================================================================================

   Columns: PSNR and SSIM over the predicted frames (per frame, then averaged over frames and
   clips; per-frame PSNR is capped at 100 dB, so an exact frame, e.g. a scene at rest under
   copy-last, cannot make the mean infinite); the trajectory error in pixels between the agent and
   patient centroids recovered by colour from the predicted frames and the simulator's states, over
   the predicted frames and the objects visible in the true frames; the fraction of those objects the
   method shows at all (a model that loses an object is not penalised by the error, so read both);
   and the contact accuracy against the clip labels. Contact is judged over the whole clip (context
   + prediction): from pixels for frame rows (``metrics.contact_from_frames``), from trajectories and
   equivalent-disc radii for constant velocity, and from states and exact shapes (boxes rotated by
   their angle, discs) for the simulator. PSNR/SSIM do not apply to the two object-level rows (None).

Relation to Physion and VDT. Physion's Object Contact Prediction (Bear et al. 2021) asks whether the
red agent ever touches the yellow patient. Its main model protocol (readout "B") shows a model the
start of a clip, lets it simulate the rest, and trains a logistic-regression readout on its features.
Here the readout is a fixed, training-free judge applied to the generated pixels ("simulate, then
judge"), so a contact accuracy measures the rollout itself and needs no readout training set. Copy-last
only sees contact that already happened in the context, which makes it a "readout C"-like floor.
VDT (Lu et al. 2023) trained on Physion Collide with 8 given -> 8 predicted frames and reported a VQA
(contact) accuracy from a readout plus FVD/SSIM of the frames. Here the pixel columns are PSNR/SSIM and
the object columns measure the physics; FVD (with an I3D file the user supplies), a learned-feature
distance, Physion's readout and per-scenario tables are added by ``report.py`` (``sample.py --eval``).

Datasets without object states (bouncing balls, Moving MNIST) get the model and copy-last rows with
PSNR/SSIM only (physics columns None); Moving MNIST adds its per-frame MSE (sum over 64x64 pixels in
[0, 1], OpenSTL's protocol).

    result = evaluate_prediction(model, cfg, num_clips=64)
    print(format_table(result))
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import torch

import toy_data
from .. import masking
from ..training.config import Config
from ..generation import generate, show_known
from .metrics import (constant_velocity_trajectories, contact_accuracy, contact_from_frames,
                      contact_from_trajectories, copy_last_frame, mmnist_mse_per_frame, object_centroids,
                      psnr, radii_from_frames, ssim, trajectory_error)
from ..errors import UserError

PSNR_CAP_DB = 100.0  # above any two distinct 8-bit frames up to 128x128 RGB (one grey level apart: 95 dB)
STATE_CONTACT_MARGIN_PX = 0.1  # the engine's collision slop: shapes this close count as touching
METHODS = ("model", "copy last frame", "constant velocity", "simulator")
DISC, BOX = 0, 1  # toy Physion's object kinds (2 = compound, judged as its bounding disc)


# ----------------------------------------------------------------------------------------------------
# Clips and predictions
# ----------------------------------------------------------------------------------------------------


def context_length(cfg: Config, num_context: int = 0) -> int:
    """Frames given to the model: ``num_context``, else the config's, else T // 2."""
    t = cfg.data.num_frames
    k = num_context or cfg.task.num_context or t // 2
    if not 0 < k < t:
        raise UserError(f"num_context={k} must leave frames to predict and give at least one (T = {t})")
    return k


def held_out_clips(cfg: Config, num_clips: int, data_seed: Optional[int] = None) -> dict:
    """The first ``num_clips`` test clips of the config's dataset as a batch dict (fewer if it is smaller)."""
    data_cfg = Config.from_dict(cfg.to_dict()).data  # a copy: the caller's config stays as it is
    if data_seed is not None:
        data_cfg.data_seed = data_seed
    dataset = toy_data.build_dataset(data_cfg, "test")
    return toy_data.get_batch(dataset, range(min(num_clips, len(dataset))))


def predict_future(model, cfg: Config, video: torch.Tensor, num_context: int, labels=None, steps: int = 0,
                   seed: int = 0, device="cpu", batch_size: int = 16, dtype: str = "fp32",
                   progress: bool = False, **generate_kwargs) -> torch.Tensor:
    """Generate frames k.. of each clip given its first k frames (VDT's forward prediction). (N, T, C, H, W)."""
    n, t, _, h, w = video.shape
    known = masking.predict(n, t, h, w, num_context=num_context)
    return generate(model, cfg, n, known=known, known_x=video, labels=labels, steps=steps, seed=seed,
                    dtype=dtype, batch_size=batch_size, device=device, progress=progress, **generate_kwargs)


# ----------------------------------------------------------------------------------------------------
# Contact from the simulator's states: exact shapes instead of bounding discs
# ----------------------------------------------------------------------------------------------------


def _box_corners(state: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Corners (..., 4, 2) of boxes centred at state[..., :2], rotated by state[..., 2] (screen angle)."""
    hw, hh = size[..., 0:1] / 2, size[..., 1:2] / 2
    lx, ly = torch.cat([-hw, hw, hw, -hw], -1), torch.cat([-hh, -hh, hh, hh], -1)
    c, s = torch.cos(state[..., 2:3]), torch.sin(state[..., 2:3])
    return torch.stack([state[..., 0:1] + c * lx - s * ly, state[..., 1:2] + s * lx + c * ly], -1)


def _point_to_polygon(p: torch.Tensor, poly: torch.Tensor) -> torch.Tensor:
    """Distance from points p (..., 2) to convex polygons (..., V, 2); 0 inside."""
    a, b = poly, poly.roll(-1, dims=-2)
    ab, ap = b - a, p.unsqueeze(-2) - a
    t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-12)).clamp(0, 1)
    dist = (ap - t.unsqueeze(-1) * ab).norm(dim=-1).amin(-1)
    cross = ab[..., 0] * ap[..., 1] - ab[..., 1] * ap[..., 0]  # the side of every edge the point is on
    inside = (cross >= 0).all(-1) | (cross <= 0).all(-1)
    return torch.where(inside, torch.zeros_like(dist), dist)


def shape_gap(states: torch.Tensor, kinds: torch.Tensor, sizes: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Gap in pixels between the agent and the patient in every frame (0 when they overlap). (B, T).

    ``states`` (B, T, K, >=2) [x, y, angle, ...] of toy Physion (objects 0 and 1 are used), ``kinds``,
    ``radii`` (B, K), ``sizes`` (B, K, 2). Disc-disc: centre distance minus the radii; disc-box: the
    disc centre's distance to the rotated box minus the radius; box-box: the smallest distance from
    a corner of one box to the other box (rigid bodies barely interpenetrate, so an overlap always
    puts a corner inside the other box). A compound shape is judged as its bounding disc.
    """
    st = states[:, :, :2, :3].float()
    if st.shape[-1] == 2:  # positions only: unrotated boxes
        st = torch.cat([st, torch.zeros_like(st[..., :1])], -1)
    t = st.shape[1]
    kind = kinds[:, None, :2].expand(-1, t, -1)  # (B, T, 2)
    size = sizes[:, None, :2].float().expand(-1, t, -1, -1)
    r = torch.where(kind == DISC, size[..., 0] / 2, radii[:, None, :2].float())  # disc radius or bound
    corners = _box_corners(st, size)  # (B, T, 2, 4, 2)
    a, p = 0, 1  # agent, patient
    disc_disc = (st[..., a, :2] - st[..., p, :2]).norm(dim=-1) - r[..., a] - r[..., p]
    disc_a_box_p = _point_to_polygon(st[..., a, :2], corners[..., p, :, :]) - r[..., a]
    box_a_disc_p = _point_to_polygon(st[..., p, :2], corners[..., a, :, :]) - r[..., p]
    box_box = torch.minimum(
        _point_to_polygon(corners[..., a, :, :], corners[..., p, None, :, :]).amin(-1),
        _point_to_polygon(corners[..., p, :, :], corners[..., a, None, :, :]).amin(-1))
    box_a, box_p = kind[..., a] == BOX, kind[..., p] == BOX
    gap = torch.where(box_a & box_p, box_box,
                      torch.where(box_p, disc_a_box_p, torch.where(box_a, box_a_disc_p, disc_disc)))
    return gap.clamp(min=0)


def contact_from_states(states, kinds, sizes, radii, margin: float = STATE_CONTACT_MARGIN_PX) -> torch.Tensor:
    """Do agent and patient come within ``margin`` pixels in some frame? bool (B,)."""
    return (shape_gap(states, kinds, sizes, radii) <= margin).any(-1)


# ----------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------


def method_trajectories(pred: torch.Tensor, truth: torch.Tensor, num_context: int,
                        states: Optional[torch.Tensor] = None) -> dict:
    """Agent and patient trajectories of every method over the whole clip: name -> (xy, visible).

    ``xy`` (B, T, 2, 2) pixel coordinates (NaN where absent), ``visible`` (B, T, 2). Frame methods are
    tracked by colour (their context part is the true context); constant velocity continues the
    context's tracks; "simulator" is the states and "true frames" the tracks of the true clip.
    """
    k, t = num_context, truth.shape[1]
    out = {"true frames": object_centroids(truth), "model": object_centroids(pred)}
    ctx_xy, ctx_vis = out["true frames"][0][:, :k], out["true frames"][1][:, :k]
    # copy-last shows the last context frame again, so its tracks are that frame's, repeated
    out["copy last frame"] = tuple(torch.cat([a, a[:, -1:].expand(-1, t - k, *a.shape[2:])], 1)
                                   for a in (ctx_xy, ctx_vis))
    future = constant_velocity_trajectories(ctx_xy, t - k, ctx_vis)
    xy = torch.cat([ctx_xy, future], 1)
    out["constant velocity"] = (xy, torch.isfinite(xy).all(-1))
    if states is not None:
        sim = states[:, :, :2, :2].float()
        out["simulator"] = (sim, torch.ones(sim.shape[:-1], dtype=torch.bool))
    return out


def _num(x) -> Optional[float]:
    """A plain float for the table and JSON; None for NaN (nothing to average)."""
    x = float(x)
    return None if math.isnan(x) else x


def score_predictions(pred: torch.Tensor, truth: torch.Tensor, num_context: int,
                      states: Optional[torch.Tensor] = None, contact: Optional[torch.Tensor] = None,
                      radii: Optional[torch.Tensor] = None, kinds: Optional[torch.Tensor] = None,
                      sizes: Optional[torch.Tensor] = None, mmnist_mse: bool = False) -> dict:
    """The table rows for predicted clips ``pred`` against ``truth`` (both (B, T, C, H, W), the first
    ``num_context`` frames given). With toy Physion ``states`` (B, T, K, >=2) and ``contact`` (B,)
    labels the physics columns are filled; the simulator's contact uses ``kinds``/``sizes``/``radii``
    (B, K) when given, else discs of the radii (else of the radii measured in the true frames).

    Returns {"rows": [...], "frame_judge_acc": contact accuracy of the pixel judge on the true clips
    (the ceiling of the frame rows), or None}.
    """
    if pred.shape != truth.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and truth {tuple(truth.shape)} differ")
    k, t = num_context, truth.shape[1]
    copy = torch.cat([truth[:, :k], copy_last_frame(truth[:, :k], t - k)], 1)
    frames = {"model": pred, "copy last frame": copy}
    physics = states is not None and truth.shape[2] == 3
    rows = []
    for name, video in frames.items():
        per_frame = psnr(video[:, k:], truth[:, k:], per_frame=True).clamp(max=PSNR_CAP_DB)
        row = {"method": name, "psnr": _num(per_frame.mean()),
               "ssim": _num(ssim(video[:, k:], truth[:, k:]).mean()) if min(truth.shape[-2:]) >= 11 else None,
               "traj_err_px": None, "objects_shown": None, "contact_acc": None}
        if mmnist_mse:
            row["mse"] = _num(mmnist_mse_per_frame(video[:, k:], truth[:, k:]).mean())
        rows.append(row)
    result = {"rows": rows, "frame_judge_acc": None}
    if not physics:
        return result

    tracks = method_trajectories(pred, truth, k, states)
    true_xy = states[:, k:, :2, :2].float()
    seen = tracks["true frames"][1][:, k:]  # objects visible in the true future frames
    labels = None if contact is None else torch.as_tensor(contact).bool()
    for name in ("constant velocity", "simulator"):
        rows.append({"method": name, "psnr": None, "ssim": None, "traj_err_px": None, "objects_shown": None,
                     "contact_acc": None, **({"mse": None} if mmnist_mse else {})})
    by_name = {row["method"]: row for row in rows}
    for name in ("model", "copy last frame", "constant velocity"):
        xy, vis = tracks[name][0][:, k:], tracks[name][1][:, k:]
        shown = vis & seen
        by_name[name]["traj_err_px"] = _num(trajectory_error(xy, true_xy, shown))
        by_name[name]["objects_shown"] = _num(shown.sum() / seen.sum().clamp(min=1))
    # the measurement floor: the simulator's states against the tracks of the true frames
    by_name["simulator"]["traj_err_px"] = _num(trajectory_error(tracks["true frames"][0][:, k:], true_xy, seen))
    if labels is None:
        return result

    true_touch = contact_from_frames(truth, per_frame=True)  # (B, T); copy-last adds no new frame
    by_name["model"]["contact_acc"] = contact_accuracy(contact_from_frames(pred), labels)
    by_name["copy last frame"]["contact_acc"] = contact_accuracy(true_touch[:, :k].any(-1), labels)
    ctx_radii = radii_from_frames(truth[:, :k])
    by_name["constant velocity"]["contact_acc"] = contact_accuracy(
        contact_from_trajectories(tracks["constant velocity"][0], ctx_radii), labels)
    r = radii if radii is not None else radii_from_frames(truth)
    kinds = kinds if kinds is not None else torch.zeros(r.shape, dtype=torch.long)  # discs
    sizes = sizes if sizes is not None else (2 * r).unsqueeze(-1).expand(*r.shape, 2)
    by_name["simulator"]["contact_acc"] = contact_accuracy(contact_from_states(states, kinds, sizes, r), labels)
    result["frame_judge_acc"] = contact_accuracy(true_touch.any(-1), labels)
    return result


# ----------------------------------------------------------------------------------------------------
# The evaluation
# ----------------------------------------------------------------------------------------------------


def evaluate_prediction(model, cfg: Config, num_clips: int = 64, steps: int = 0, seed: int = 0, device="cpu",
                        batch_size: int = 16, dtype: str = "fp32", num_context: int = 0,
                        data_seed: Optional[int] = None, return_clips: bool = False, progress: bool = False,
                        **generate_kwargs) -> dict:
    """Predict held-out clips from their first k frames and score model and baselines (module docstring).

    ``steps`` = sampler steps (0 = the config's), ``seed`` = noise seed, ``data_seed`` = which held-out
    clips (None = the config's); other keywords (solver, cfg_scale, guidance, S_churn) go to
    ``generation.generate``. Returns {"rows": [{"method", "psnr", "ssim", "traj_err_px",
    "objects_shown", "contact_acc"(, "mse")}, ...], "num_clips", "positive_rate", "frame_judge_acc",
    "config"}; with ``return_clips`` also "clips": the held-out batch (``video``, and for toy Physion
    ``states``, ``contact``, ...) plus ``pred`` (the model's videos) and ``known`` (the mask).
    """
    d = cfg.data
    k = context_length(cfg, num_context)
    clips = held_out_clips(cfg, num_clips, data_seed)
    truth = clips["video"]
    labels = clips["labels"].long() if d.num_classes > 0 and "labels" in clips else None
    pred = predict_future(model, cfg, truth, k, labels=labels, steps=steps, seed=seed, device=device,
                          batch_size=batch_size, dtype=dtype, progress=progress, **generate_kwargs)
    has_states = "states" in clips
    scores = score_predictions(pred, truth, k, states=clips.get("states"), contact=clips.get("contact"),
                               radii=clips.get("radii"), kinds=clips.get("kinds"), sizes=clips.get("sizes"),
                               mmnist_mse=d.dataset == "moving_mnist")
    contact = clips.get("contact")
    result = {
        "rows": scores["rows"], "num_clips": int(truth.shape[0]),
        "positive_rate": None if contact is None else float(contact.float().mean()),
        "frame_judge_acc": scores["frame_judge_acc"],
        "config": {"dataset": d.dataset, "scenario": d.scenario if has_states else None,
                   "num_frames": d.num_frames, "num_context": k, "height": d.height, "width": d.width, "fps": d.fps,
                   "steps": steps or cfg.diffusion.sample_steps,
                   "solver": generate_kwargs.get("solver") or cfg.diffusion.solver, "seed": seed,
                   "data_seed": d.data_seed if data_seed is None else data_seed,
                   **{key: v for key, v in generate_kwargs.items() if key != "solver"}},
    }
    if return_clips:
        known = masking.predict(*truth.shape[:2], *truth.shape[-2:], num_context=k)
        result["clips"] = {**clips, "pred": pred, "known": known}
    return result


def _cell(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_table(result: dict) -> str:
    """The rows as a markdown table, with a line saying what the numbers are over."""
    rows = result["rows"]
    cols = [("method", "method", "s"), ("psnr", "PSNR (dB)", ".2f"), ("ssim", "SSIM", ".3f")]
    if any("mse" in row for row in rows):
        cols.append(("mse", "MSE/frame", ".1f"))
    cols += [("traj_err_px", "traj. error (px)", ".2f"), ("objects_shown", "objects shown", ".2f"),
             ("contact_acc", "contact acc.", ".3f")]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(row.get(key), spec) for key, _, spec in cols) + " |" for row in rows]
    c = result["config"]
    what = c["dataset"] + (f" {c['scenario']}" if c.get("scenario") else "")
    note = (f"{result['num_clips']} held-out {what} clips, {c['num_context']} given -> "
            f"{c['num_frames'] - c['num_context']} predicted frames at {c['height']}x{c['width']}, "
            f"{c['steps']} sampler steps.")
    if result.get("positive_rate") is not None:
        p = result["positive_rate"]
        note += f" Contact rate {p:.2f} (a constant answer scores {max(p, 1 - p):.2f})"
        if result.get("frame_judge_acc") is not None:
            note += f"; the pixel judge on the true clips scores {result['frame_judge_acc']:.3f}"
        note += "."
    return "\n".join(lines) + "\n\n" + note


def save_evaluation(result: dict, out_dir, num_videos: int = 8, fps: float = 10.0) -> Path:
    """Write ``eval.json`` (everything but the clips) and, when the result holds clips, the first
    ``num_videos`` as GIFs [given | model | truth] plus grid.gif / grid.png, as ``sample.py`` does."""
    from .video_io import frames_grid, save_gif, save_png, video_grid
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "eval.json"
    path.write_text(json.dumps({key: v for key, v in result.items() if key != "clips"}, indent=2))
    clips = result.get("clips")
    if clips and num_videos > 0:
        n = min(num_videos, clips["video"].shape[0])
        truth, pred, known = clips["video"][:n], clips["pred"][:n], clips["known"][:n]
        panels = [show_known(truth, known), pred, truth]
        side_by_side = torch.cat(panels, dim=-1)
        for i in range(n):
            save_gif(out_dir / f"video_{i:03d}.gif", side_by_side[i], fps=fps)
        save_gif(out_dir / "grid.gif", video_grid(side_by_side, ncol=1), fps=fps)
        save_png(out_dir / "grid.png", frames_grid(torch.stack(panels, 1).flatten(0, 1)), scale=2)
    return path
