"""Where a physics model fails: per-scenario tables, bootstrap intervals, and Physion's readout of contact.

``sample.py --eval`` on a model trained on ``physion_all`` (toy Physion's eight scenarios, the scenario as
its class label) scores held-out clips of every scenario at once (``physics_eval.evaluate_prediction``);
this module splits the scores by clip:

- ``per_clip_scores``: ``physics_eval.score_predictions`` on each clip alone, so that every column has a
  value per clip (PSNR, trajectory error, contact verdict per method); the pooled table's PSNR and contact
  accuracy are their means (the trajectory error's pooled value weights clips by visible objects, the
  per-clip mean weights clips equally);
- ``interval_table``: the methods with percentile-bootstrap intervals over clips (``stats.py``);
- ``scenario_table``: model vs copy-last, constant velocity and the simulator, one row per scenario;
- ``readout_table`` (``readout_scores``): Physion's readout protocol (``readout.py``, Bear et al. 2021,
  arXiv 2106.08261, Sec. 3.3) on the toy-feature network's features (``toy_features.py``) of the
  *observed* frames, of *observed + simulated* (the given frames and the model's rollout) and of the *full*
  true clip, next to "simulate, then judge" (the pixel judge on the rollout) and the baselines' verdicts.

    python sample.py --ckpt=out/physion_all/ckpt.pt --eval --eval_clips=256 --readout_clips=256   # report.py
"""
from __future__ import annotations

import math
from typing import Dict, List

import torch

from . import readout, stats, toy_features
from .physics_eval import METHODS, context_length, predict_future, score_predictions

METRICS = ("psnr", "traj_err_px", "contact_acc")
CLIP_KEYS = ("states", "contact", "radii", "kinds", "sizes")


def scenario_names() -> List[str]:
    from toy_data.physion import SCENARIOS
    return list(SCENARIOS)


def per_clip_scores(pred: torch.Tensor, clips: dict, num_context: int) -> Dict[str, Dict[str, torch.Tensor]]:
    """{method: {metric: (N,) float64, NaN where the metric does not apply}} from one-clip score tables."""
    truth = clips["video"]
    out = {m: {k: torch.full((len(truth),), math.nan, dtype=torch.float64) for k in METRICS} for m in METHODS}
    for i in range(len(truth)):
        extra = {k: clips[k][i:i + 1] for k in CLIP_KEYS if k in clips}
        rows = score_predictions(pred[i:i + 1], truth[i:i + 1], num_context, **extra)["rows"]
        for row in rows:
            for key in METRICS:
                if row.get(key) is not None:
                    out[row["method"]][key][i] = row[key]
    return out


def finite(values: torch.Tensor) -> torch.Tensor:
    return values[torch.isfinite(values)]


def _cell(values: torch.Tensor, spec: str, interval: bool = True) -> str:
    v = finite(values)
    if len(v) == 0:
        return "n/a"
    return stats.format_interval(*stats.mean_interval(v), spec) if interval else format(float(v.mean()), spec)


def interval_table(scores: dict) -> str:
    """Markdown: each method's per-clip means with 95% bootstrap intervals over clips."""
    lines = ["| method | PSNR (dB) | traj. error (px) | contact acc. |", "|---|---|---|---|"]
    for method, metric in scores.items():
        lines.append(f"| {method} | {_cell(metric['psnr'], '.2f')} | {_cell(metric['traj_err_px'], '.2f')} | "
                     f"{_cell(metric['contact_acc'], '.3f')} |")
    return "\n".join(lines)


def scenario_table(scores: dict, scenario_id: torch.Tensor) -> str:
    """Markdown: one row per scenario: PSNR (model / copy-last), trajectory error and contact accuracy of
    model / copy-last / constant velocity / simulator, the model's contact accuracy with its interval."""
    names = scenario_names()
    head = ["scenario", "clips", "PSNR model / copy", "traj. err. model / copy / const. vel. / sim.",
            "contact model [95% CI]", "contact copy / const. vel. / sim."]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in sorted(set(scenario_id.tolist())):
        sel = scenario_id == s
        m = {method: {k: v[sel] for k, v in metric.items()} for method, metric in scores.items()}
        psnr = " / ".join(_cell(m[x]["psnr"], ".1f", False) for x in ("model", "copy last frame"))
        traj = " / ".join(_cell(m[x]["traj_err_px"], ".2f", False) for x in METHODS)
        contact = " / ".join(_cell(m[x]["contact_acc"], ".2f", False) for x in METHODS[1:])
        lines.append(f"| {names[s]} | {int(sel.sum())} | {psnr} | {traj} | "
                     f"{_cell(m['model']['contact_acc'], '.2f')} | {contact} |")
    return "\n".join(lines)


def training_clips(cfg, num_clips: int) -> dict:
    """The first ``num_clips`` clips of the model's training split (the readout's training set)."""
    import toy_data
    from ..training.config import Config
    data_cfg = Config.from_dict(cfg.to_dict()).data
    dataset = toy_data.build_dataset(data_cfg, "train")
    return toy_data.get_batch(dataset, range(min(num_clips, len(dataset))))


def readout_scores(model, cfg, test: dict, test_pred: torch.Tensor, num_train: int, net=None, **predict_kw) -> dict:
    """Per-scenario OCP readout accuracies {feature set: {scenario id: accuracy}} (module docstring)."""
    net = net or toy_features.load_features()
    k = context_length(cfg)
    train = training_clips(cfg, num_train)
    labels = train["labels"].long() if cfg.data.num_classes > 0 else None
    train_pred = predict_future(model, cfg, train["video"], k, labels=labels, **predict_kw)
    views = {"observed": lambda clips, pred: clips["video"][:, :k],
             "observed + simulated": lambda clips, pred: pred,
             "full (true clip)": lambda clips, pred: clips["video"]}
    out = {}
    for name, view in views.items():
        f_train = toy_features.features(net, view(train, train_pred))
        f_test = toy_features.features(net, view(test, test_pred))
        per = readout.readout_per_group(f_train, train["contact"], train["scenario_id"],
                                        f_test, test["contact"], test["scenario_id"])
        out[name] = {int(s): r["accuracy"] for s, r in per.items()}
    return out


def readout_table(readouts: dict, scores: dict, scenario_id: torch.Tensor) -> str:
    """Markdown: OCP accuracy per scenario: the readouts, then the judged rollout and the baselines."""
    names = scenario_names()
    judged = {"simulate, then judge": "model", "copy last (judge)": "copy last frame",
              "const. velocity": "constant velocity", "simulator": "simulator"}
    head = ["scenario", *(f"readout: {r}" for r in readouts), *judged]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ids = sorted(set(scenario_id.tolist()))
    for s in ids + ["all"]:
        sel = scenario_id == s if s != "all" else torch.ones_like(scenario_id, dtype=torch.bool)
        counts = {i: int((scenario_id == i).sum()) for i in ids}
        cells = []
        for per in readouts.values():  # "all": the clip-weighted mean of the per-scenario readouts
            value = per.get(s) if s != "all" else sum(per[i] * counts[i] for i in per) / max(1, sum(counts[i] for i in per))
            cells.append("n/a" if value is None else f"{value:.2f}")
        cells += [_cell(scores[m]["contact_acc"][sel], ".2f", False) for m in judged.values()]
        lines.append(f"| {names[s] if s != 'all' else 'all'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
