"""The toy CLIP score (nano_videodiff/evaluation/text_alignment.py)."""
import pytest
import torch

from nano_videodiff.evaluation.text_alignment import alignment_report, alignment_scores
from toy_data import captions as C
from toy_data.physion import generate_clip


@pytest.fixture(scope="module")
def clips_and_captions():
    clips = [generate_clip(sc, seed=s, num_frames=10, resolution=32) for sc in ("collide", "roll", "drop")
             for s in range(6)]
    batch = dict(states=torch.stack([torch.as_tensor(c["states"][:, :2]) for c in clips]),
                 kinds=torch.stack([torch.as_tensor(c["kinds"][:2]) for c in clips]),
                 contact=torch.tensor([c["contact"] for c in clips]),
                 scenario_id=torch.tensor([c["scenario_id"] for c in clips]))
    attrs = C.attributes(batch, "physion")
    texts = [C.caption(a, C.HELD_OUT_PHRASINGS["physion"][i % 2]) for i, a in enumerate(attrs)]
    return torch.stack([torch.as_tensor(c["video"]) for c in clips]), texts


def test_true_clips_score_near_one_and_shuffled_captions_near_chance(clips_and_captions):
    videos, texts = clips_and_captions
    true = alignment_report(videos, texts)
    assert true["alignment"] >= 0.9 and true["quality"] > 0.9
    shuffled = [texts[(i + 7) % len(texts)] for i in range(len(texts))]
    scores = alignment_scores(videos, shuffled)
    assert abs(float(scores.mean()) - true["chance"]) < 0.12  # a shuffle is one draw of independent pairing
    assert true["alignment"] - true["chance"] > 0.25


def test_a_blank_clip_shows_nothing_a_caption_states(clips_and_captions):
    videos, texts = clips_and_captions
    blank = torch.full_like(videos[:2], -0.84)  # the background colour only
    report = alignment_report(blank, texts[:2])
    assert report["colours"] == 0.0 and report["quality"] == 0.0
