"""Tests for toy_data/physion.py: shapes, determinism, balanced engine labels, rendering vs states,
and the on-disk cache."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from toy_data import physion
from toy_data.physion import (AGENT_RGB, BACKGROUND_RGB, OTHER_RGBS, PATIENT_RGB, SCENARIOS,
                              STATIC_RGB, PhysionDataset, generate_clip, simulate)

REPO = Path(__file__).resolve().parents[1]


def test_colour_contract():
    assert SCENARIOS == ("dominoes", "support", "collide", "contain", "drop", "link", "roll", "drape")
    assert AGENT_RGB == (0.90, 0.10, 0.10) and PATIENT_RGB == (0.95, 0.85, 0.10)
    assert BACKGROUND_RGB == (0.08, 0.08, 0.10)
    for r, g, b in OTHER_RGBS + (STATIC_RGB,):  # neither reddish (R on top) nor yellowish (B lowest)
        assert r <= max(g, b) and min(r, g) <= b


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_clip_shapes_dtypes_ranges(scenario):
    for res, (h, w) in [(16, (16, 16)), ((24, 40), (24, 40)), ((40, 24), (40, 24))]:
        c = generate_clip(scenario, seed=3, num_frames=6, resolution=res)
        k = c["states"].shape[1]
        assert c["video"].shape == (6, 3, h, w) and c["video"].dtype == np.float32
        assert -1.0 <= c["video"].min() and c["video"].max() <= 1.0
        assert c["video"].std() > 0.1  # not a blank frame
        # the top-left pixel is sky: the background colour, mapped as 2c - 1
        assert np.abs(c["video"][:, :, 0, 0] - (2 * np.array(BACKGROUND_RGB) - 1)).max() < 1e-6
        assert c["states"].shape == (6, k, 6) and c["states"].dtype == np.float32 and k >= 2
        assert np.isfinite(c["states"]).all()
        assert c["radii"].shape == (k,) and c["sizes"].shape == (k, 2) and c["kinds"].shape == (k,)
        assert (c["radii"] > 0).all() and (c["sizes"] > 0).all()
        assert c["scenario_id"] == SCENARIOS.index(scenario)
        assert isinstance(c["contact"], bool) and -1 <= c["contact_frame"] < 6
        assert c["frame_interval"] == pytest.approx(3 / 30)


def test_states_scale_with_resolution():
    a = generate_clip("collide", 7, num_frames=5, resolution=32)["states"]
    b = generate_clip("collide", 7, num_frames=5, resolution=64)["states"]
    np.testing.assert_allclose(b[..., [0, 1, 3, 4]], 2 * a[..., [0, 1, 3, 4]], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(b[..., [2, 5]], a[..., [2, 5]], atol=1e-6)  # angles don't scale


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_deterministic_per_seed(scenario):
    a, b = (generate_clip(scenario, 11, num_frames=8, resolution=16) for _ in range(2))
    c = generate_clip(scenario, 12, num_frames=8, resolution=16)
    assert a["video"].tobytes() == b["video"].tobytes()
    assert a["states"].tobytes() == b["states"].tobytes() and a["contact"] == b["contact"]
    assert a["video"].tobytes() != c["video"].tobytes()


def _digest(clips):
    h = hashlib.sha256()
    for c in clips:
        h.update(c["video"].tobytes() + c["states"].tobytes() + bytes([c["contact"]]))
    return h.hexdigest()


def test_deterministic_across_processes():
    """A fresh interpreter with a different hash seed gives the same bytes (no hash(), no state)."""
    code = ("from toy_data.physion import generate_clip, SCENARIOS\n"
            "from tests.test_physion import _digest\n"
            "print(_digest([generate_clip(s, 4, num_frames=6, resolution=20) for s in SCENARIOS]))")
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    here = [generate_clip(s, 4, num_frames=6, resolution=20) for s in SCENARIOS]
    assert out == _digest(here)


def test_contact_labels_balanced_and_match_their_target():
    """Each clip draws its target label 50/50 and the scene is rebuilt until the engine agrees, so
    labels are Binomial(n, 1/2): with n = 100 per scenario, 0.5 +- 0.15 is a 3-sigma band, and
    0.5 +- 0.055 over all 800 clips. The seeds are fixed, so this test is not flaky."""
    all_labels = []
    for scenario in SCENARIOS:
        runs = [simulate(scenario, seed, record=False) for seed in range(100)]
        labels = np.array([r["contact"] for r in runs])
        hit_target = np.mean([r["contact"] == r["want"] for r in runs])
        assert hit_target >= 0.97, (scenario, hit_target)
        assert abs(labels.mean() - 0.5) <= 0.15, (scenario, labels.mean())
        all_labels.append(labels)
    assert abs(np.concatenate(all_labels).mean() - 0.5) <= 0.055


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_want_contact_forces_the_outcome(scenario):
    for want in (True, False):
        got = [generate_clip(scenario, s, num_frames=16, resolution=8, want_contact=want)["contact"]
               for s in range(6)]
        assert sum(g == want for g in got) >= 5, (scenario, want, got)


def test_render_is_antialiased_with_exact_area():
    """A disc and a rotated square drawn by `render`: covered area matches the analytic area
    (within 2%), edges have partial pixels, and the disc's centre is where `world_to_pixel` puts it.
    """
    view, (h, w) = (0.0, 100.0), (32, 48)
    scale, x0, y0 = physion.world_to_pixel(view, h, w)
    c, s = np.cos(0.5), np.sin(0.5)
    square = np.array([[30 + 8 * (c * a - s * b), 50 + 8 * (s * a + c * b)]
                       for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
    geometry = dict(static=[], frames=[[("c", np.array([60.0, 40.0, 9.0]), AGENT_RGB)],
                                       [("p", square, AGENT_RGB)]])
    img = physion.render(geometry, view, (h, w))
    cover = (img[..., 0] - BACKGROUND_RGB[0]) / (AGENT_RGB[0] - BACKGROUND_RGB[0])
    for t, area in ((0, np.pi * (9 * scale) ** 2), (1, (16 * scale) ** 2)):
        assert cover[t].sum() == pytest.approx(area, rel=0.02)
        assert ((cover[t] > 0.05) & (cover[t] < 0.95)).sum() >= 8  # soft edges
    np.testing.assert_allclose(_centroid(cover[0]), (x0 + 60 * scale, y0 - 40 * scale), atol=0.05)


def _centre_distance(states, f):
    return float(np.hypot(*(states[f, 0, :2] - states[f, 1, :2])))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_contact_label_agrees_with_geometry(scenario):
    """contact_frame >= 0 iff contact; at contact_frame the shapes are within touching distance
    (bounding radii plus one frame of motion); two discs never overlap before the contact."""
    for seed in range(12):
        c = generate_clip(scenario, seed, num_frames=16, resolution=16)
        st, r, kinds = c["states"], c["radii"], c["kinds"]
        assert (c["contact_frame"] >= 0) == c["contact"]
        first = c["contact_frame"] if c["contact"] else 16
        if c["contact"]:
            f = first
            slack = np.hypot(*st[f, 0, 3:5]) + np.hypot(*st[f, 1, 3:5]) + 0.25
            assert _centre_distance(st, f) <= r[0] + r[1] + slack, (seed, f)
        if kinds[0] == kinds[1] == 0:  # two discs: exact touching distance is r_a + r_p
            for f in range(first):
                assert _centre_distance(st, f) >= (r[0] + r[1]) * 0.97, (seed, f)


def _colour_weights(video):
    """Per-pixel agent and patient coverage estimated from colour (0 background/other, 1 pure)."""
    rgb = (video + 1) / 2
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    agent = np.clip((r - np.maximum(g, b) - 0.1) / 0.7, 0, 1)
    patient = np.clip((np.minimum(r, g) - b) / 0.75, 0, 1)
    return agent, patient


def _centroid(w):
    """Weighted mean (x, y) of pixel centres (pixel j covers [j, j+1))."""
    x = (w.sum(0) * (np.arange(w.shape[1]) + 0.5)).sum()
    y = (w.sum(1) * (np.arange(w.shape[0]) + 0.5)).sum()
    return np.array([x, y]) / w.sum()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_colours_match_states(scenario):
    """At 64x64 the red and yellow colour centroids sit within 1 px of the states' x, y whenever the
    object is fully in view (the agent is drawn on top of everything, the patient on top of all
    but the agent, so the patient is checked only when the agent is away from it)."""
    checked = 0
    for seed in (0, 1):
        c = generate_clip(scenario, seed, num_frames=16, resolution=64)
        agent_w, patient_w = _colour_weights(c["video"])
        st, r = c["states"], c["radii"]
        for f in range(16):
            for k, w in ((0, agent_w[f]), (1, patient_w[f])):
                x, y = st[f, k, :2]
                inside = r[k] + 1 <= x <= 64 - r[k] - 1 and r[k] + 1 <= y <= 64 - r[k] - 1
                clear = k == 0 or _centre_distance(st, f) > r[0] + r[1] + 1
                if inside and clear:
                    assert np.abs(_centroid(w) - (x, y)).max() <= 1.0, (seed, f, k)
                    checked += 1
    assert checked >= 16


def test_collide_agent_moves_early_and_outcome_late():
    """The default experiment: visible motion in the first 8 frames, contacts in the last 8."""
    for seed in range(20):
        c = generate_clip("collide", seed, num_frames=16, resolution=32)
        assert np.hypot(*(c["states"][7, 0, :2] - c["states"][0, 0, :2])) > 1.5
        assert c["contact_frame"] == -1 or c["contact_frame"] >= 8


def _small(tmp_path, **kw):
    args = dict(scenario="collide", num_clips=4, num_frames=4, resolution=16, cache_dir=tmp_path,
                progress=False)
    return PhysionDataset(**dict(args, **kw))


def _refuse(*a, **k):
    raise RuntimeError("simulated although a cache exists")


def test_cache_roundtrip(tmp_path, monkeypatch):
    ds = _small(tmp_path)
    assert ds.path.exists() and ds.meta_path.exists()
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left nothing behind
    meta = json.loads(ds.meta_path.read_text())
    assert meta["num_clips"] == 4 and meta["scenarios"] == ["collide"] and meta["height"] == 16
    monkeypatch.setattr(physion, "generate_clip", _refuse)
    again = _small(tmp_path)  # loads: the generator would raise
    assert again.path == ds.path and len(again) == 4
    for k in ds.data:
        np.testing.assert_array_equal(ds.data[k], again.data[k])
    with pytest.raises(RuntimeError):
        _small(tmp_path, resolution=(16, 20))  # another parameter: another file, must simulate


def _fake_clip(scenario, seed, num_frames, resolution, frame_stride):
    h, w = resolution
    return dict(video=np.zeros((num_frames, 3, h, w), np.float32),
                states=np.zeros((num_frames, 2, 6), np.float32), radii=np.ones(2, np.float32),
                sizes=np.ones((2, 2), np.float32), kinds=np.zeros(2, np.int64), contact=False,
                contact_frame=-1, scenario_id=SCENARIOS.index(scenario), seed=seed)


def test_cache_key_covers_every_parameter(tmp_path, monkeypatch):
    monkeypatch.setattr(physion, "generate_clip", _fake_clip)  # fast: only the file names matter
    base = _small(tmp_path).path
    changes = [dict(scenario="drop"), dict(scenario=["collide", "drop"]), dict(num_clips=5),
               dict(num_frames=5), dict(resolution=17), dict(seed=1), dict(split="test"),
               dict(frame_stride=2)]
    paths = {_small(tmp_path, **c).path for c in changes}
    assert base not in paths and len(paths) == len(changes)
    assert len(list(tmp_path.glob("*.npz"))) == len(changes) + 1


def test_dataset_items_and_splits(tmp_path):
    ds = _small(tmp_path, scenario="all", num_clips=8, num_frames=6)
    assert list(ds.data["scenario_id"]) == list(range(8))
    item = ds[5]
    k = ds.data["states"].shape[2]
    assert item["video"].shape == (6, 3, 16, 16) and item["video"].dtype == torch.float32
    assert item["states"].shape == (6, k, 6) and item["object_mask"].shape == (k,)
    assert item["frame_interval"].item() == pytest.approx(0.1) and ds.fps == pytest.approx(10)
    ref = generate_clip("link", int(ds.data["seed"][5]), num_frames=6, resolution=16)
    assert torch.allclose(item["video"], torch.from_numpy(ref["video"]), atol=1 / 127.5)
    n = len(ref["radii"])
    assert item["object_mask"][:n].all() and not item["object_mask"][n:].any()
    torch.testing.assert_close(item["states"][:, :n], torch.from_numpy(ref["states"]))
    assert bool(item["contact"]) == ref["contact"]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["video"].shape == (4, 6, 3, 16, 16) and batch["frame_interval"].shape == (4,)
    test = _small(tmp_path, scenario="all", num_clips=8, num_frames=6, split="test")
    assert not set(ds.data["seed"]) & set(test.data["seed"])
    assert not np.array_equal(ds.data["video"], test.data["video"])


def test_worker_processes_simulate_the_same_clips_as_one_process(tmp_path, monkeypatch):
    """Large datasets are simulated in worker processes; every clip is a function of its seed alone."""
    monkeypatch.setattr(physion, "PARALLEL_SIM_MIN_CLIPS", 10**9)
    serial = _small(tmp_path / "serial", num_clips=6, num_frames=5)
    monkeypatch.setattr(physion, "PARALLEL_SIM_MIN_CLIPS", 1)
    monkeypatch.setattr(physion.os, "cpu_count", lambda: 2)
    parallel = _small(tmp_path / "parallel", num_clips=6, num_frames=5)
    assert serial.path.name == parallel.path.name and set(serial.data) == set(parallel.data)
    for key in serial.data:
        np.testing.assert_array_equal(serial.data[key], parallel.data[key])
