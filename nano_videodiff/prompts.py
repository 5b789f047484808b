"""Prompts on the command line: ``sample.py --prompt="first|second"`` -> one caption per video, and how well
the videos follow them (``evaluation/text_alignment.py``). Text-to-video as in Snap Video Sec. 3.5-3.6 /
W.A.L.T Sec. 5.3: the model generates from the text alone; ``--cfg_scale`` guides away from the empty text.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

from .errors import UserError

SEPARATOR = "|"


def prompt_captions(prompt: str, per_prompt: int) -> List[str]:
    """``"a|b"`` with 2 videos per prompt -> ["a", "a", "b", "b"]: a grid row per prompt."""
    prompts = [p.strip() for p in prompt.split(SEPARATOR)]
    if not all(prompts):
        raise UserError(f"--prompt holds an empty prompt: separate prompts with {SEPARATOR!r}, e.g. "
                        "--prompt=\"the red ball moves left|the red ball moves right\"")
    return [p for p in prompts for _ in range(per_prompt)]


def check_text_model(cfg) -> None:
    if not cfg.model.text_encoder:
        raise UserError("--prompt needs a text-to-video model (trained with --text_encoder, e.g. "
                        "--config=physion_text); this checkpoint has no text encoder")


def report_alignment(videos, captions: List[str], cfg, out_dir: Path):
    """Toy Physion models: print and save how often the clips show what their prompts state (alignment.json)."""
    if cfg.data.dataset != "physion":
        return None
    from .evaluation.text_alignment import alignment_report
    report = alignment_report(videos, captions)
    (out_dir / "alignment.json").write_text(json.dumps(dict(report, prompts=sorted(set(captions))), indent=2))
    print(f"text alignment {report['alignment']:.3f} (chance: the same prompts against the other videos "
          f"{report['chance']:.3f}); direction {report['direction']:.3f}, outcome {report['outcome']:.3f}, "
          f"colours {report['colours']:.3f}; objects visible per frame {report['quality']:.3f}")
    return report
