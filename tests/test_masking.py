"""Tests for nano_videodiff.masking: exact mask patterns, reproducibility, the task mixture, errors."""
import math

import pytest
import torch

from nano_videodiff import masking
from nano_videodiff.masking import TASKS, MaskMixture, make_mask

B, T, H, W = 3, 8, 16, 12


def gen(seed):
    return torch.Generator().manual_seed(seed)


def frame_flags(known):
    """(B, T, 1, H, W) -> (B, T) per-frame flags, asserting each frame is all-known or all-unknown."""
    flags = known.flatten(2)
    assert torch.equal(flags.all(2), flags.any(2)), "a temporal mask must be constant within a frame"
    return flags.all(2)


def check_basic(known, b=B, t=T, h=H, w=W):
    assert known.shape == (b, t, 1, h, w)
    assert known.dtype == torch.bool


def test_task_registry_names():
    assert set(TASKS) == {"generate", "predict", "backward", "interpolate", "animate",
                          "random_frames", "complete"}


def test_unconditional_all_generated():
    known = make_mask("generate", B, T, H, W)
    check_basic(known)
    assert known.sum() == 0


@pytest.mark.parametrize("k", [0, 1, 4, T - 1])
def test_predict_and_backward_exact(k):
    fwd = make_mask("predict", B, T, H, W, num_context=k)
    bwd = make_mask("backward", B, T, H, W, num_context=k)
    check_basic(fwd)
    check_basic(bwd)
    expected = torch.arange(T) < k
    assert torch.equal(frame_flags(fwd), expected.expand(B, T))
    assert torch.equal(frame_flags(bwd), expected.flip(0).expand(B, T))
    assert (fwd.flatten(1).sum(1) == k * H * W).all()
    assert (bwd.flatten(1).sum(1) == k * H * W).all()


@pytest.mark.parametrize("every,include_last,frames", [
    (4, False, [0, 4]), (4, True, [0, 4, 7]), (3, True, [0, 3, 6, 7]), (7, True, [0, 7]), (1, False, list(range(T))),
])
def test_interpolate_pattern(every, include_last, frames):
    known = make_mask("interpolate", B, T, H, W, every=every, include_last=include_last)
    check_basic(known)
    expected = torch.zeros(T, dtype=torch.bool)
    expected[frames] = True
    assert torch.equal(frame_flags(known), expected.expand(B, T))


def test_animate_fixed_and_random():
    known = make_mask("animate", B, T, H, W, frame_index=5)
    check_basic(known)
    flags = frame_flags(known)
    assert (flags.sum(1) == 1).all() and flags[:, 5].all()
    known = make_mask("animate", 64, T, 4, 4, generator=gen(0))
    flags = frame_flags(known)
    assert (flags.sum(1) == 1).all()
    assert len(set(flags.float().argmax(1).tolist())) > 1, "random index should vary across samples"


def test_random_frames_rate_and_at_least_one_generated():
    known = make_mask("random_frames", 4000, 16, 2, 2, generator=gen(1))
    check_basic(known, 4000, 16, 2, 2)
    generated = ~frame_flags(known)
    assert generated.any(1).all()
    rate = generated.float().mean().item()
    std = math.sqrt(0.8 * 0.2 / generated.numel())
    assert abs(rate - 0.8) < 4 * std
    # p = 0.05 on 2 frames: most samples would have nothing generated without the guarantee
    generated = ~frame_flags(make_mask("random_frames", 500, 2, 2, 2, p_generate=0.05, generator=gen(2)))
    assert (generated.sum(1) >= 1).all()


@pytest.mark.parametrize("ratio,block,h,w", [(0.5, 4, 32, 32), (0.4, 2, 16, 24), (0.25, 4, 8, 8), (1.0, 4, 16, 16)])
def test_block_completion_ratio_alignment_and_range(ratio, block, h, w):
    t, b = 8, 40
    known = make_mask("complete", b, t, h, w, ratio=ratio, block=block, generator=gen(3))
    check_basic(known, b, t, h, w)
    cells = (h // block) * (w // block)
    target = max(1, round(ratio * cells))
    assert abs(target / cells - ratio) <= 0.5 / cells
    hidden = ~known[:, :, 0]  # (b, t, h, w)
    tiles = hidden.reshape(b, t, h // block, block, w // block, block)
    assert torch.equal(tiles.all(3).all(4), tiles.any(3).any(4)), "blocks must align to the block grid"
    starts, ends = set(), set()
    for i in range(b):
        frames = hidden[i].flatten(1).any(1).nonzero().squeeze(1).tolist()
        assert frames, "at least one frame must be hidden"
        assert frames == list(range(frames[0], frames[-1] + 1)), "frame range must be contiguous"
        assert frames[0] <= 2 and frames[-1] >= t - 3, "trim is at most max_trim=2 at each end"
        starts.add(frames[0])
        ends.add(t - 1 - frames[-1])
        for f in frames:  # the same spatial mask on every frame in the range, exactly `target` cells
            assert torch.equal(hidden[i, f], hidden[i, frames[0]])
            assert hidden[i, f].sum() == target * block * block
    assert starts == {0, 1, 2} and ends == {0, 1, 2}, "VDT's end=0 case must hide up to the last frame"


def test_block_completion_short_video_keeps_a_frame():
    known = make_mask("complete", 50, 1, 8, 8, generator=gen(4))
    assert (~known).flatten(1).any(1).all()


@pytest.mark.parametrize("task,kwargs", [("animate", {}), ("random_frames", {}), ("complete", {})])
def test_random_tasks_reproducible(task, kwargs):
    a = make_mask(task, 16, T, H, W, generator=gen(7), **kwargs)
    b = make_mask(task, 16, T, H, W, generator=gen(7), **kwargs)
    c = make_mask(task, 16, T, H, W, generator=gen(8), **kwargs)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_mixture_default_is_vdt():
    mix = MaskMixture()
    assert mix.probs["complete"] == pytest.approx(0.2)
    for name in ("predict", "backward", "interpolate", "generate", "animate", "random_frames"):
        assert mix.probs[name] == pytest.approx(0.8 / 6)
    assert mix.kwargs_for("predict", 16) == {"num_context": 8}


def test_mixture_frequencies_and_routing():
    mix = MaskMixture(task_kwargs={"complete": {"block": 4}})
    n, t = 20000, 4
    known, task_ids = mix.sample(n, t, 8, 8, generator=gen(5))
    check_basic(known, n, t, 8, 8)
    assert task_ids.shape == (n,) and task_ids.dtype == torch.long
    for i, name in enumerate(mix.task_names):
        p = mix.probs[name]
        freq = (task_ids == i).float().mean().item()
        assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / n), name
    # each sample's mask matches its task
    flags = known.flatten(2).all(2)
    ids = {name: (task_ids == i) for i, name in enumerate(mix.task_names)}
    assert torch.equal(flags[ids["predict"]], torch.tensor([True, True, False, False]).expand(int(ids["predict"].sum()), t))
    assert torch.equal(flags[ids["backward"]], torch.tensor([False, False, True, True]).expand(int(ids["backward"].sum()), t))
    assert not known[ids["generate"]].any()
    assert (flags[ids["animate"]].sum(1) == 1).all()
    hidden_per_frame = (~known[ids["complete"]]).flatten(2).sum(2)  # 2 of 4 cells of 4x4 px each
    assert ((hidden_per_frame == 0) | (hidden_per_frame == 32)).all() and (hidden_per_frame == 32).any(1).all()
    assert not known[ids["interpolate"]].flatten(2).all(2)[:, 1:3].any() and known[ids["interpolate"]][:, [0, 3]].all()
    # reproducible
    known2, task_ids2 = mix.sample(n, t, 8, 8, generator=gen(5))
    assert torch.equal(known, known2) and torch.equal(task_ids, task_ids2)


def test_mixture_custom_kwargs_and_zero_prob():
    mix = MaskMixture(probs={"predict": 1.0, "generate": 0.0}, task_kwargs={"predict": {"num_context": 3}})
    known, task_ids = mix.sample(10, T, 4, 4, generator=gen(6))
    assert mix.task_names == ("predict", "generate")
    assert (task_ids == 0).all()
    assert (known.flatten(1).sum(1) == 3 * 16).all()


@pytest.mark.parametrize("kwargs,match", [
    ({"probs": {"predict": 0.5, "generate": 0.4}}, "sum to 1"),
    ({"probs": {"predict": 1.2, "generate": -0.2}}, "non-negative"),
    ({"probs": {"predic": 1.0}}, "valid tasks: generate, predict"),
    ({"probs": {"predict": 1.0}, "task_kwargs": {"nope": {}}}, "valid tasks"),
    ({"probs": {}}, "at least one"),
])
def test_mixture_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MaskMixture(**kwargs)


@pytest.mark.parametrize("task,kwargs,match", [
    ("predict", {"num_context": T}, "num_context"),
    ("predict", {"num_context": -1}, "num_context"),
    ("backward", {"num_context": T + 3}, "num_context"),
    ("interpolate", {"every": 0}, "every"),
    ("animate", {"frame_index": T}, "frame_index"),
    ("animate", {"frame_index": -1}, "frame_index"),
    ("random_frames", {"p_generate": 0.0}, "p_generate"),
    ("random_frames", {"p_generate": 1.5}, "p_generate"),
    ("complete", {"ratio": 0.0}, "ratio"),
    ("complete", {"block": 5}, "block"),
    ("complete", {"max_trim": -1}, "max_trim"),
])
def test_bad_arguments(task, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_mask(task, B, T, H, W, generator=gen(0), **kwargs)


def test_unknown_task_and_bad_sizes():
    with pytest.raises(ValueError, match="valid tasks: generate, predict, backward"):
        make_mask("inpaint", B, T, H, W)
    with pytest.raises(ValueError, match="T must be a positive int"):
        masking.unconditional(B, 0, H, W)


def test_cond_take_indexes_per_sample_fields_and_keeps_shared_ones():
    from nano_videodiff.conditioning import Cond
    known_shared = torch.ones(1, 4, 1, 8, 8, dtype=torch.bool)  # one mask for the whole batch
    cond = Cond(labels=torch.arange(6), frame_interval=torch.linspace(0, 1, 6), known=known_shared,
                known_x=torch.randn(6, 4, 3, 8, 8), is_image=torch.tensor([True, False] * 3))
    rows = torch.tensor([1, 4])
    part = cond.take(rows)
    assert part.labels.tolist() == [1, 4] and torch.equal(part.frame_interval, cond.frame_interval[rows])
    assert torch.equal(part.known_x, cond.known_x[rows]) and part.is_image.tolist() == [False, True]
    assert part.known is known_shared and part.self_cond is None
