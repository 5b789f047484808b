"""Captions from the simulator's ground truth (toy_data/captions.py)."""
import pytest
import torch

from toy_data import captions as C
from toy_data.bouncing_balls import BouncingBalls
from toy_data.physion import generate_clip


def _physion_batch(clips):
    return dict(states=torch.stack([torch.as_tensor(c["states"][:, :2]) for c in clips]),
                kinds=torch.stack([torch.as_tensor(c["kinds"][:2]) for c in clips]),
                contact=torch.tensor([c["contact"] for c in clips]),
                scenario_id=torch.tensor([c["scenario_id"] for c in clips]))


@pytest.fixture(scope="module")
def collide_clips():
    return [generate_clip("collide", seed=s, num_frames=8, resolution=32, supersample=1) for s in range(10)]


def test_direction_follows_the_agents_displacement(collide_clips):
    attrs = C.attributes(_physion_batch(collide_clips), "physion")
    for clip, a in zip(collide_clips, attrs):
        dx = float(clip["states"][-1, 0, 0] - clip["states"][0, 0, 0])
        for p in C.TRAIN_PHRASINGS["physion"] + C.HELD_OUT_PHRASINGS["physion"]:
            words = C.words(C.caption(a, p))
            if dx < -C.MOVE_PX:  # an agent that moves left is never captioned "right", and vice versa
                assert "right" not in words
            if dx > C.MOVE_PX:
                assert "left" not in words
        assert a["outcome"] == ("hits" if clip["contact"] else "misses")
        assert a["scenario"] == "collide"
    assert {a["direction"] for a in attrs} >= {"left", "right"}  # mirrored clips: both directions occur


def test_synthetic_states_give_the_stated_attributes():
    t = torch.arange(8.0)
    left = torch.stack([20 - 2 * t, torch.full_like(t, 10)], -1)  # 2 px per frame to the left: fast
    falling = torch.stack([torch.full_like(t, 10), 5 + 0.5 * t], -1)  # 0.5 px per frame down: slow
    states = torch.stack([torch.stack([left, left], 1), torch.stack([falling, falling], 1)])  # (2, T, 2, 2)
    attrs = C.physion_attributes(states, torch.tensor([[0, 1], [1, 0]]), torch.tensor([True, False]),
                                 torch.tensor([2, 4]))
    assert attrs[0] == dict(kind="physion", agent="ball", patient="block", direction="left", speed="fast",
                            scenario="collide", outcome="hits")
    assert attrs[1]["direction"] == "down" and attrs[1]["speed"] == "slow" and attrs[1]["outcome"] == "misses"
    assert C.caption(attrs[0], 0) == "the red ball moves left fast and hits the yellow block"
    assert C.parse(C.caption(attrs[1], 0)) == {"colours": ["red", "yellow"], "direction": "down",
                                               "outcome": "misses"}


def test_bouncing_balls_colours_and_starting_directions():
    batch = BouncingBalls(num_frames=4, resolution=32, seed=3).get_batch(range(6))
    attrs = C.attributes(batch, "bouncing_balls")
    for a, vel, col in zip(attrs, batch["velocities"], batch["colors"]):
        for ball, v, c in zip(a["balls"], vel[0], col):
            assert ball["colour"] == C.colour_name(c)
            if abs(v[0]) > abs(v[1]):
                assert ball["direction"] == ("right" if v[0] > 0 else "left")
            else:
                assert ball["direction"] == ("down" if v[1] > 0 else "up")
    assert C.colour_name((1, 0, 0)) == "red" and C.colour_name((0, 0, 1)) == "blue"


def test_training_captions_are_deterministic_and_hold_out_phrasings_and_combinations():
    a = dict(kind="physion", agent="ball", patient="block", direction="left", speed="fast", scenario="link",
             outcome="hits")
    assert C.held_out_combination(a)
    draws = torch.linspace(0, 0.999, 50)
    texts = C.training_captions([a] * 50, draws)
    assert texts == C.training_captions([a] * 50, draws)
    # a held-out (scenario, direction) pair is never stated together in training
    assert all("left" not in C.words(t) for t in texts)
    b = dict(a, scenario="collide")
    train = set(C.training_captions([b] * 50, draws))
    held = {C.caption(b, p) for p in C.HELD_OUT_PHRASINGS["physion"]}
    assert len(train) == len(C.TRAIN_PHRASINGS["physion"]) and not train & held
    assert any("left" in C.words(t) for t in train)


def test_for_training_drops_captions_and_vocabulary_covers_training_words():
    from nano_videodiff.training.config import DataConfig
    batch = BouncingBalls(num_frames=4, resolution=32).get_batch(range(4))
    texts = C.for_training(batch, DataConfig(), torch.rand(4), torch.tensor([True, False, True, False]))
    assert texts[0] == "" and texts[2] == "" and texts[1] and texts[3]
    vocab = set(C.vocabulary("bouncing_balls"))
    assert set(C.words(texts[1] + " " + texts[3])) <= vocab
