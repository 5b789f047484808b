"""Text alignment at toy scale: does a generated clip show what its caption says? (a toy "CLIP score").

Text-to-video papers score alignment with CLIP similarity between the prompt and the frames (Snap Video
Sec. 4, Fig. 5 plots it against FID over the guidance scale; W.A.L.T Sec. 5.3; Video LDM Sec. 4.2). CLIP's
weights cannot be downloaded here, and on toy physics the caption's claims can be checked exactly instead:
the project's colour tracker (``metrics.object_centroids``, ``metrics.contact_from_frames``, the same judge
as ``physics_eval.py``) reads the attributes back from the pixels and each stated attribute is right or
wrong. For toy Physion captions (``toy_data/captions.py``):

- colours: every colour the caption names (the red agent, the yellow patient) is visible in some frame;
- direction: the red agent's displacement between the first and the last frame it is visible in,
  as ``captions.direction_of`` words it (left / right / down / up / still);
- outcome: "hits" iff the agent touches the patient in some frame (pixel contact, Physion's label).

A clip's score is the fraction of its caption's stated attributes that hold (1 = all). ``chance`` is the
score of every caption against every *other* clip (independent pairing): what a model that ignores its
prompt attains, against which a text model is judged. ``quality`` is the per-frame visibility of the
objects the caption names (a frame that lost the agent is a broken frame), the toy stand-in for FID.

    scores = alignment_scores(videos, captions)           # (N,) in [0, 1]
    table = alignment_report(videos, captions)            # mean score, per attribute, chance, quality
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch

from toy_data.captions import direction_of, parse
from toy_data.physion import AGENT_RGB, PATIENT_RGB
from .metrics import contact_from_frames, object_centroids

COLOURS = {"red": 0, "yellow": 1}  # tracked objects of toy Physion: agent, patient
ATTRIBUTES = ("colours", "direction", "outcome")


def observe(videos: torch.Tensor) -> List[Dict]:
    """What the tracker reads from clips (N, T, 3, H, W) in [-1, 1]: per clip the visible colours, the red
    agent's direction (None if it is never seen twice), the outcome, and the objects' per-frame visibility."""
    xy, visible = object_centroids(videos, (AGENT_RGB, PATIENT_RGB))  # (N, T, 2, 2), (N, T, 2)
    contact = contact_from_frames(videos, (AGENT_RGB, PATIENT_RGB))
    scale = min(videos.shape[-2:]) / 32
    out = []
    for i in range(videos.shape[0]):
        seen = visible[i, :, 0].nonzero().flatten()
        direction = None
        if len(seen) >= 2:
            d = xy[i, seen[-1], 0] - xy[i, seen[0], 0]
            direction = direction_of(float(d[0]), float(d[1]), scale)
        out.append(dict(colours={c for c, k in COLOURS.items() if visible[i, :, k].any()}, direction=direction,
                        outcome="hits" if bool(contact[i]) else "misses", visibility=visible[i].float().mean(0)))
    return out


def agreement(stated: Dict, seen: Dict) -> Dict[str, float]:
    """Per stated attribute, 1.0 if the clip shows it, else 0.0 (attributes the caption does not state are absent)."""
    out = {}
    colours = [c for c in stated["colours"] if c in COLOURS]
    if colours:
        out["colours"] = float(all(c in seen["colours"] for c in colours))
    for key in ("direction", "outcome"):
        if key in stated:
            out[key] = float(stated[key] == seen[key])
    return out


def _score(parts: Dict[str, float]) -> float:
    return sum(parts.values()) / len(parts) if parts else float("nan")


def alignment_scores(videos: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
    """(N,) the fraction of each caption's stated attributes that its clip shows."""
    seen = observe(videos)
    return torch.tensor([_score(agreement(parse(c), s)) for c, s in zip(captions, seen)])


def alignment_report(videos: torch.Tensor, captions: Sequence[str]) -> Dict[str, float]:
    """Mean alignment, its per-attribute parts, the chance level (every caption vs every other clip) and the
    objects' mean per-frame visibility of the clips (quality)."""
    if len(videos) != len(captions):
        raise ValueError(f"{len(videos)} clips but {len(captions)} captions")
    seen, stated = observe(videos), [parse(c) for c in captions]
    parts = [agreement(s, o) for s, o in zip(stated, seen)]
    report = {"alignment": sum(_score(p) for p in parts) / len(parts)}
    for key in ATTRIBUTES:
        values = [p[key] for p in parts if key in p]
        report[key] = sum(values) / len(values) if values else float("nan")
    n = len(captions)
    pairs = [_score(agreement(stated[i], seen[j])) for i in range(n) for j in range(n) if i != j]
    report["chance"] = sum(pairs) / len(pairs) if pairs else float("nan")
    report["quality"] = float(torch.stack([o["visibility"] for o in seen]).mean())
    return report
