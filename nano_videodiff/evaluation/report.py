"""What ``sample.py --eval`` adds to the physics table: intervals, learned-feature distances, FVD, scenarios.

After ``physics_eval.evaluate_prediction`` (which keeps the clips), ``extend`` computes and prints

- the methods' per-clip means with 95% bootstrap intervals over clips (``scenarios.interval_table``);
- the **toy-feature Frechet distance** and KID (``toy_features.py``: the shipped toy video network, offline,
  not FVD) of the model's clips and of copy-last against the true clips;
- **FVD** (``fvd.py``) of the same sets when ``--fvd_weights=PATH`` names an I3D file (no file: FVD is not
  computed and the table says how to get it; nothing is ever downloaded);
- for a model trained on ``physion_all``: the per-scenario table (``scenarios.scenario_table``) and, with
  ``--readout_clips=N``, Physion's OCP readout per scenario (``scenarios.readout_scores``).

Everything lands in the result (and so in eval.json) next to the rows.
"""
from __future__ import annotations

import torch

from . import scenarios, stats, toy_features
from .fvd import fvd
from .metrics import copy_last_frame


def copy_last_clips(truth: torch.Tensor, k: int) -> torch.Tensor:
    return torch.cat([truth[:, :k], copy_last_frame(truth[:, :k], truth.shape[1] - k)], 1)


def _fd_line(name: str, d: dict, key: str) -> str:
    lo, hi = d[f"{key}_ci"]
    return f"{name}: {d[key]:.2f} [{lo:.2f}, {hi:.2f}]"


def extend(result: dict, model, cfg, extractor=None, readout_clips: int = 0, device="cpu", **predict_kw) -> dict:
    """Add "intervals", "toy_feature_distance", "fvd" (or the reason it is missing), "per_scenario" and
    "readout" to an ``evaluate_prediction(..., return_clips=True)`` result; print their tables."""
    clips, k = result["clips"], result["config"]["num_context"]
    truth, pred = clips["video"], clips["pred"]
    scores = scenarios.per_clip_scores(pred, clips, k)
    print("\nper-clip means with 95% bootstrap intervals over clips:\n" + scenarios.interval_table(scores))
    result["intervals"] = {m: {key: list(stats.mean_interval(scenarios.finite(v)))
                               if len(scenarios.finite(v)) else None for key, v in metric.items()}
                           for m, metric in scores.items()}
    copy = copy_last_clips(truth, k)
    if truth.shape[0] >= 2 and truth.shape[2] in (1, 3):
        net = toy_features.load_features()
        result["toy_feature_distance"] = {"model": toy_features.toy_feature_distance(truth, pred, net),
                                          "copy last frame": toy_features.toy_feature_distance(truth, copy, net)}
        print("toy-feature Frechet distance to the true clips (learned toy features, NOT FVD; 95% interval): "
              + "; ".join(_fd_line(n, d, "toy_fd") + f", KID {d['toy_kid']:.4f}"
                          for n, d in result["toy_feature_distance"].items()))
    if extractor is None:
        result["fvd"] = "not computed: pass --fvd_weights=PATH (an I3D file, docs/evaluation.md)"
    else:
        result["fvd"] = {"model": fvd(truth, pred, extractor, device=device),
                         "copy last frame": fvd(truth, copy, extractor, device=device)}
        print("FVD to the true clips (I3D " + extractor.source + f", {len(truth)} clips; 95% interval): "
              + "; ".join(_fd_line(n, d, "fvd") for n, d in result["fvd"].items()))
    if cfg.data.dataset == "physion" and cfg.data.scenario == "all" and "scenario_id" in clips:
        sid = clips["scenario_id"]
        print("\nper scenario:\n" + scenarios.scenario_table(scores, sid))
        result["per_scenario_table"] = scenarios.scenario_table(scores, sid)
        if readout_clips > 0:
            result["readout"] = scenarios.readout_scores(model, cfg, clips, pred, readout_clips, device=device,
                                                         **predict_kw)
            result["readout_table"] = scenarios.readout_table(result["readout"], scores, sid)
            print("\nOCP accuracy per scenario (readouts trained on the contact labels of "
                  f"{readout_clips} training clips):\n" + result["readout_table"])
    return result
