"""Captions that describe what happens in a clip, written from the simulator's ground truth.

Text-to-video papers train on captioned videos (Snap Video Sec. 3.5, W.A.L.T Sec. 5.3, Video LDM Sec. 4);
our toy data has no captions, but the simulator knows everything a caption could say. This module turns
a clip's ground truth into attributes, and attributes into sentences:

- toy Physion (``physion.py``): the agent (red) and the patient (yellow) with their shapes (ball, block,
  object), the agent's direction over the clip (left / right / falls / rises / stays still, from its
  states), its speed (fast / slowly, mean displacement per frame), the scenario and the outcome (hits /
  misses, the engine's contact label): "the red ball moves right fast and hits the yellow block";
- bouncing balls (``bouncing_balls.py``): every ball's colour name (from its hue), its starting direction
  (the dominant axis of its first velocity) and speed: "a red ball moves left fast and a blue ball moves up".

Several phrasings per clip: ``TRAIN_PHRASINGS`` templates are used in training (one drawn per sample and
step, from the step's generator, so a run is deterministic per seed); ``HELD_OUT_PHRASINGS`` templates are
never used in training (new sentences for evaluation; their words outside the training vocabulary map to
the tokenizer's unknown token). Held-out attribute combinations: Physion clips whose (scenario, direction)
is in ``HELD_OUT_COMBINATIONS`` are captioned in training without their direction, so the pairing is never
stated, and evaluation can ask for it ("compositional" prompts).

    attrs = attributes(batch, "physion")          # one dict per clip of a toy_data batch
    text = caption(attrs[0], phrasing=0)          # "the red ball moves right fast and hits ..."
"""
from __future__ import annotations

import itertools
import re
from typing import Dict, List, Sequence

import numpy as np
import torch

from .physion_scenarios import SCENARIOS

DIRECTIONS = ("left", "right", "down", "up", "still")
SHAPES = {0: "ball", 1: "block", 2: "object"}  # toy Physion's object kinds (disc, box, compound)
# Thresholds in pixels of a 32-pixel frame, scaled with min(H, W) / 32.
MOVE_PX = 2.0        # net displacement below this: the agent "stays still"
FAST_PX = 1.0        # mean displacement per frame above this: "fast"
# (scenario, direction) pairs never stated together in training (see the module docstring).
HELD_OUT_COMBINATIONS = (("link", "left"), ("roll", "right"))
COLOUR_NAMES = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
COLOUR_HUES = (0.0, 1 / 12, 1 / 6, 1 / 3, 1 / 2, 2 / 3, 0.78, 0.9)  # hue (in turns) of each name


def direction_of(dx: float, dy: float, scale: float = 1.0) -> str:
    """Direction of a displacement in pixels (x to the right, y downwards) as a word of DIRECTIONS."""
    if max(abs(dx), abs(dy)) < MOVE_PX * scale:
        return "still"
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def speed_of(step_px: float, scale: float = 1.0) -> str:
    return "fast" if step_px > FAST_PX * scale else "slow"


def colour_name(rgb: Sequence[float]) -> str:
    """The nearest of COLOUR_NAMES by hue (the toy data's colours are saturated)."""
    r, g, b = (float(c) for c in rgb)
    hi, lo = max(r, g, b), min(r, g, b)
    if hi - lo < 1e-6:
        return "grey"
    if hi == r:
        hue = ((g - b) / (hi - lo)) % 6
    elif hi == g:
        hue = (b - r) / (hi - lo) + 2
    else:
        hue = (r - g) / (hi - lo) + 4
    hue /= 6
    dist = [min(abs(hue - h), 1 - abs(hue - h)) for h in COLOUR_HUES]
    return COLOUR_NAMES[int(np.argmin(dist))]


# ------------------------------------------------------------------ attributes from ground truth

def physion_attributes(states, kinds, contact, scenario_id, size=32) -> List[Dict]:
    """One dict per clip: agent/patient shape, direction, speed, scenario, outcome. ``states`` (B, T, K, >=2)
    pixel positions, ``kinds`` (B, K), ``contact`` (B,), ``scenario_id`` (B,); ``size`` = min(H, W)."""
    st = torch.as_tensor(states).float()
    scale = size / 32
    dxy = st[:, -1, 0, :2] - st[:, 0, 0, :2]
    step = (st[:, 1:, 0, :2] - st[:, :-1, 0, :2]).norm(dim=-1).mean(1)
    out = []
    for i in range(st.shape[0]):
        out.append(dict(kind="physion", agent=SHAPES.get(int(kinds[i][0]), "object"),
                        patient=SHAPES.get(int(kinds[i][1]), "object"),
                        direction=direction_of(float(dxy[i, 0]), float(dxy[i, 1]), scale),
                        speed=speed_of(float(step[i]), scale), scenario=SCENARIOS[int(scenario_id[i])],
                        outcome="hits" if bool(contact[i]) else "misses"))
    return out


def bouncing_attributes(velocities, colors, size=32) -> List[Dict]:
    """One dict per clip: per ball (colour name, starting direction, speed). ``velocities`` (B, T, n, 2) px/frame."""
    v = torch.as_tensor(velocities).float()[:, 0]  # before any bounce
    out = []
    for i in range(v.shape[0]):
        balls = []
        for k in range(v.shape[1]):
            dx, dy = float(v[i, k, 0]), float(v[i, k, 1])
            balls.append(dict(colour=colour_name(colors[i][k]), direction=direction_of(dx, dy, scale=0.0),
                              speed="fast" if (dx * dx + dy * dy) ** 0.5 > 0.06 * size else "slow"))
        out.append(dict(kind="bouncing_balls", balls=balls))
    return out


def attributes(batch: dict, dataset: str, size: int = 32) -> List[Dict]:
    """Attributes of every clip of a ``toy_data.get_batch`` dict (or cached clip info with the same keys)."""
    if dataset == "physion":
        return physion_attributes(batch["states"], batch["kinds"], batch["contact"], batch["scenario_id"], size)
    if dataset == "bouncing_balls":
        return bouncing_attributes(batch["velocities"], batch["colors"], size)
    raise ValueError(f"captions exist for toy physion and bouncing balls, not {dataset!r}")


# ------------------------------------------------------------------ sentences

def _motion(direction: str) -> str:
    return {"left": "moves left", "right": "moves right", "down": "falls", "up": "rises",
            "still": "stays still"}[direction]


def _speed(a: Dict) -> str:
    return "" if a["direction"] == "still" else {"fast": "fast", "slow": "slowly"}[a["speed"]]


def _physion(a: Dict, phrasing: int) -> str:
    touch = "touches" if a["outcome"] == "hits" else "does not touch"
    parts = dict(ag=a["agent"], pa=a["patient"], mo=_motion(a["direction"]), sp=_speed(a), out=a["outcome"],
                 sc=a["scenario"], touch=touch, hit="hit" if a["outcome"] == "hits" else "missed")
    templates = (  # training phrasings 0-4 (3 and 4 leave out the direction), held out 5-6
        "the red {ag} {mo} {sp} and {out} the yellow {pa}",
        "a {sc} scene: the red {ag} {mo} and {out} the yellow {pa}",
        "{sc}: red {ag} {mo} {sp}, {touch} yellow {pa}",
        "the red {ag} {out} the yellow {pa}",
        "in a {sc} scene the red {ag} {out} the yellow {pa}",
        "a yellow {pa} is {hit} by a red {ag} that {mo} {sp}",
        "watch the red {ag}: it {mo} {sp} in a {sc} scene and {out} the yellow {pa}",
    )
    return templates[phrasing].format(**parts)


def _ball(b: Dict, article: str = "a") -> str:
    sp = {"fast": " fast", "slow": " slowly"}[b["speed"]]
    return f"{article} {b['colour']} ball {_motion(b['direction'])}{sp}"


def _bouncing(a: Dict, phrasing: int) -> str:
    balls = a["balls"]
    if phrasing == 0:
        return " and ".join(_ball(b) for b in balls)
    if phrasing == 1:
        return ", ".join(_ball(b, "the") for b in balls)
    if phrasing == 2:
        return " and ".join(f"a {b['colour']} ball" for b in balls) + " bounce around"
    if phrasing == 3:
        return "balls bouncing: " + " and ".join(_ball(b) for b in balls)
    # held out
    if phrasing == 4:
        return "; ".join(f"one ball is {b['colour']} and it {_motion(b['direction'])}" for b in balls)
    return "two balls, " + " and ".join(f"{b['colour']} that {_motion(b['direction'])}" for b in balls)


TRAIN_PHRASINGS = {"physion": (0, 1, 2, 3, 4), "bouncing_balls": (0, 1, 2, 3)}
HELD_OUT_PHRASINGS = {"physion": (5, 6), "bouncing_balls": (4, 5)}
# Phrasings that state no direction: the only ones a held-out combination is captioned with in training.
NO_DIRECTION = {"physion": (3, 4), "bouncing_balls": (2,)}


def caption(attrs: Dict, phrasing: int = 0) -> str:
    """The sentence of ``phrasing`` (an index into the dataset's templates) for one clip's attributes."""
    text = _physion(attrs, phrasing) if attrs["kind"] == "physion" else _bouncing(attrs, phrasing)
    return re.sub(r"\s+", " ", text.replace(" ,", ",")).strip()


def held_out_combination(attrs: Dict) -> bool:
    return attrs["kind"] == "physion" and (attrs["scenario"], attrs["direction"]) in HELD_OUT_COMBINATIONS


def training_captions(attrs: List[Dict], draws: torch.Tensor) -> List[str]:
    """One training caption per clip: phrasing chosen by ``draws`` (uniform in [0, 1), one per clip) among
    the training phrasings; clips of held-out combinations only get phrasings without their direction."""
    out = []
    for a, u in zip(attrs, draws.tolist()):
        allowed = NO_DIRECTION[a["kind"]] if held_out_combination(a) else TRAIN_PHRASINGS[a["kind"]]
        out.append(caption(a, allowed[min(int(u * len(allowed)), len(allowed) - 1)]))
    return out


def for_training(batch: dict, data_cfg, draws: torch.Tensor, dropped: torch.Tensor) -> tuple:
    """The captions of a training batch (this rank's clips): ``training_captions`` of the clips' attributes,
    "" where ``dropped`` (classifier-free guidance's text dropout, drawn with the label dropout)."""
    from nano_videodiff.errors import UserError
    try:
        attrs = attributes(batch, data_cfg.dataset, min(data_cfg.height, data_cfg.width))
    except (KeyError, ValueError):
        raise UserError("text-to-video (--text_encoder) needs clips whose ground truth gives captions: toy physion "
                        "or bouncing balls, without --image_fraction / --max_frame_stride") from None
    texts = training_captions(attrs, draws)
    return tuple("" if bool(d) else t for t, d in zip(texts, dropped.tolist()))


def held_out_captions(data_cfg, num: int, data_seed=None) -> List[str]:
    """Captions of the first ``num`` held-out clips, in the held-out phrasings (alternating): new prompts."""
    import dataclasses
    from . import build_dataset, get_batch
    d = data_cfg if data_seed is None else dataclasses.replace(data_cfg, data_seed=data_seed)
    attrs = attributes(get_batch(build_dataset(d, "test"), range(num)), d.dataset, min(d.height, d.width))
    phrasings = HELD_OUT_PHRASINGS[d.dataset]
    return [caption(a, phrasings[i % len(phrasings)]) for i, a in enumerate(attrs)]


def words(text: str) -> List[str]:
    """The word tokenization shared by the vocabulary and the learned text encoder: lower-case letters."""
    return re.findall(r"[a-z]+", text.lower())


def vocabulary(dataset: str) -> List[str]:
    """Every word a training phrasing of ``dataset`` can produce, sorted: the learned tokenizer's vocabulary."""
    if dataset == "physion":
        combos = [dict(kind="physion", agent=ag, patient=pa, direction=d, speed=s, scenario=sc, outcome=o)
                  for ag, pa, d, s, sc, o in itertools.product(SHAPES.values(), SHAPES.values(), DIRECTIONS,
                                                               ("fast", "slow"), SCENARIOS, ("hits", "misses"))]
    elif dataset == "bouncing_balls":
        combos = [dict(kind="bouncing_balls", balls=[dict(colour=c, direction=d, speed=s)] * 2)
                  for c, d, s in itertools.product(COLOUR_NAMES, DIRECTIONS, ("fast", "slow"))]
    else:
        raise ValueError(f"captions exist for toy physion and bouncing balls, not {dataset!r}")
    found = {w for a in combos for p in TRAIN_PHRASINGS[dataset] for w in words(caption(a, p))}
    return sorted(found)


def parse(text: str) -> Dict:
    """The attributes a caption states (what ``evaluation/text_alignment.py`` checks): colours present, the
    red agent's direction and the outcome; absent keys were not stated."""
    w = words(text)
    found: Dict = {"colours": sorted({c for c in COLOUR_NAMES if c in w})}
    motion = {"left": "left", "right": "right", "falls": "down", "rises": "up", "still": "still"}
    stated = [motion[x] for x in w if x in motion]
    if stated:
        found["direction"] = stated[0]  # the first mover named (the red agent in Physion captions)
    if "hits" in w or "hit" in w or ("touches" in w and "not" not in w):
        found["outcome"] = "hits"
    elif "misses" in w or "missed" in w or "not" in w:
        found["outcome"] = "misses"
    return found
