"""Toy Physion: 2D analogues of the eight Physion scenarios, rendered, labelled and cached.

Physion (Bear et al., 2021, arXiv:2106.08261) measures physical prediction with Object Contact
Prediction: from the start of a video, will the red agent touch the yellow patient? VDT (Lu et al.,
2023) trains its video diffusion model on Physion's Collide scenario with 8 context frames and 8
predicted frames. This module gives the same kind of data without a download: the scenes are
simulated by a real 2D rigid-body engine (pymunk, see `toy_data/physion_scenarios.py` for the eight
scenario builders and how each maps to Physion), drawn anti-aliased at any resolution, and labelled
by the engine's collision callbacks.

    clip = generate_clip("collide", seed=0)            # one clip, a dict of numpy arrays
    ds = PhysionDataset("collide", num_clips=1024)     # cached on disk after the first run

Clip contents (`generate_clip` and `PhysionDataset.__getitem__`):
- `video` (T, 3, H, W) float32 in [-1, 1] (a colour c in [0, 1] is stored as 2c - 1);
- `states` (T, K, 6) float32 per object [x, y, angle, vx, vy, omega] in pixel units of the frame
  (x = column, y = row downwards, pixel j covers [j, j+1)), angle in radians (clockwise on screen),
  velocities per frame; object 0 is the agent, object 1 the patient;
- `contact` (agent touches patient during the clip, from the engine), `contact_frame` (first frame
  at or after the first touch, -1 if none), `scenario_id` (index into `SCENARIOS`);
- `radii` (K,) bounding radius and `sizes` (K, 2) width/height in pixels, `kinds` (K,) 0 disc, 1 box,
  2 compound: enough to judge contact from positions;
- `frame_interval` seconds between frames = frame_stride / SIM_FPS (0.1 s by default, i.e. the
  30 fps of Physion sub-sampled by 3 like SlotFormer and VDT; 16 frames span Physion's 1.5 s).

Each scenario has a fixed square camera view; it is scaled to fit min(H, W) and centred, so
non-square frames show more floor (wide) or more sky and ground (tall) and discs stay round.
"""
import hashlib
import json
import multiprocessing
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pymunk
import torch
from tqdm import tqdm

from nano_videodiff.errors import UserError
from nano_videodiff.files import atomic_write, remove_orphans

from .physion_scenarios import (AGENT_RGB, AGENT_TYPE, BACKGROUND_RGB, BUILDERS, DISC, FLOOR,
                                FLOOR_MARGIN, GRAVITY, ITERATIONS, MAX_TRIES, OTHER_RGBS,
                                PATIENT_RGB, PATIENT_TYPE, SCENARIOS, SIM_FPS, STATIC_RGB, SUBSTEPS,
                                Scene)

__all__ = ["AGENT_RGB", "PATIENT_RGB", "BACKGROUND_RGB", "STATIC_RGB", "OTHER_RGBS", "SCENARIOS",
           "SIM_FPS", "DEFAULT_STRIDE", "simulate", "generate_clip", "render", "PhysionDataset"]

DEFAULT_STRIDE = 3
SUPERSAMPLE = 4
FORMAT_VERSION = 1


def _hw(resolution):
    h, w = (resolution, resolution) if np.isscalar(resolution) else resolution
    return int(h), int(w)


def world_to_pixel(view, height, width):
    """(scale, x0, y0) with pixel x = x0 + scale * x and pixel y = y0 - scale * y: the camera's
    square `view` = (left, side) in world units, scaled to fit min(H, W) and centred."""
    left, side = view
    scale = min(height, width) / side
    top = FLOOR + (1 - FLOOR_MARGIN) * side
    return scale, (width - side * scale) / 2 - left * scale, (height - side * scale) / 2 + top * scale


# ------------------------------------------------------------------ simulation

def _geometry(items):
    """World-space drawing primitives of the scene now: ("c", [cx, cy, r], rgb), ("p", verts, rgb)."""
    out = []
    for shape, rgb in items:
        body = shape.body
        if isinstance(shape, pymunk.Circle):
            c = body.local_to_world(shape.offset)
            out.append(("c", np.array([c.x, c.y, shape.radius]), rgb))
        else:
            out.append(("p", np.array([tuple(body.local_to_world(v)) for v in shape.get_vertices()]),
                        rgb))
    return out


def _run(sc, num_frames, frame_stride, record):
    """Step the scene with a fixed time step; record world states (T, K, 6), the first agent-patient
    contact (from the engine's collision callback) and, if asked, the drawing primitives."""
    steps, dt = frame_stride * SUBSTEPS, 1.0 / (SIM_FPS * SUBSTEPS)
    objs = sorted(sc.objects, key=lambda o: {"agent": 0, "patient": 1}.get(o[0], 2))
    first, step = [], [0]
    sc.space.on_collision(AGENT_TYPE, PATIENT_TYPE,
                          begin=lambda arbiter, space, data: first.append(step[0]))
    static = [item for item in sc.items if item[0].body.body_type == pymunk.Body.STATIC]
    moving = sorted((item for item in sc.items if item[0].body.body_type != pymunk.Body.STATIC),
                    key=lambda item: {PATIENT_TYPE: 1, AGENT_TYPE: 2}.get(item[0].collision_type, 0))
    states, frames = np.zeros((num_frames, len(objs), 6)), []
    for f in range(num_frames):
        for _ in range(steps if f else 0):
            step[0] += 1
            sc.space.step(dt)
        for k, (_, b, _, _) in enumerate(objs):
            c = b.local_to_world(b.center_of_gravity)
            states[f, k] = c.x, c.y, b.angle, b.velocity.x, b.velocity.y, b.angular_velocity
        if record:
            frames.append(_geometry(moving))
    return dict(states=states, contact=bool(first),
                contact_frame=-(-first[0] // steps) if first else -1,  # first frame at/after touch
                contact_step=first[0] if first else -1,
                kinds=np.array([o[2] for o in objs]), sizes=np.array([o[3] for o in objs], float),
                geometry=dict(static=_geometry(static), frames=frames), view=sc.view)


def simulate(scenario, seed, num_frames=16, frame_stride=DEFAULT_STRIDE, want_contact=None,
             record=True, scene_frames=None):
    """Build and run one clip in world units (no rendering). Returns `states` (T, K, 6) world
    [x, y, angle, vx, vy, omega] per second with y up, `contact`, `contact_frame`, `kinds` (K,),
    `sizes` (K, 2), `view`, `geometry` (drawing primitives: "static" once, "frames" one list per
    frame, if `record`), `want` (the
    target label), `mirror` (already applied) and `tries` (scenes built until the label matched).

    `scene_frames` (default `num_frames`): the clip length the scene is built and labelled for. A longer
    `num_frames` runs the same scene on (long-horizon evaluation): its first `scene_frames` frames are
    the `scene_frames`-frame clip's, and `contact`/`contact_frame` cover the whole run."""
    sid = SCENARIOS.index(scenario)
    if int(seed) < 0:
        raise ValueError("seed must be a non-negative integer")
    rng = np.random.default_rng([sid, int(seed)])
    want = bool(rng.random() < 0.5) if want_contact is None else bool(want_contact)
    mirror = bool(rng.random() < 0.5)
    scene_frames = scene_frames or num_frames
    if not 0 < scene_frames <= num_frames:
        raise ValueError(f"scene_frames={scene_frames} must be in 1..num_frames={num_frames}")
    duration = max(scene_frames - 1, 1) * frame_stride / SIM_FPS
    last_step = (scene_frames - 1) * frame_stride * SUBSTEPS  # the label is decided by this engine step
    for tries in range(1, MAX_TRIES + 1):
        scene = Scene(rng)
        BUILDERS[scenario](scene, rng, want, duration)
        out = _run(scene, num_frames, frame_stride, record)
        if (0 <= out["contact_step"] <= last_step) == want:
            break
    if mirror:  # reflect about the camera's centre line: angles and spins change sign
        flip = 2 * out["view"][0] + out["view"][1]
        out["states"][..., [2, 3, 5]] *= -1
        out["states"][..., 0] = flip - out["states"][..., 0]
        for prims in [out["geometry"]["static"]] + out["geometry"]["frames"]:
            for kind, p, _ in prims:
                xs = p[:, 0] if kind == "p" else p[:1]
                xs[...] = flip - xs
    out.update(mirror=mirror, tries=tries, scenario_id=sid, want=want)
    return out


# ------------------------------------------------------------------ rendering

def _coverage(kind, p, ys, xs):
    """Boolean mask of sample points (ys (h,1), xs (1,w)) inside a primitive in sample units."""
    if kind == "c":
        return (xs - p[0]) ** 2 + (ys - p[1]) ** 2 <= p[2] ** 2
    edge = np.roll(p, -1, axis=0) - p  # convex polygon: the point is on one side of every edge
    cross = (edge[:, 0, None, None] * (ys - p[:, 1, None, None])
             - edge[:, 1, None, None] * (xs - p[:, 0, None, None]))
    return (cross >= 0).all(0) | (cross <= 0).all(0)


def _paint(canvas, prims, scale, x0, y0, s):
    """Paint primitives (world units) in order onto a canvas sampled s times per pixel."""
    for kind, p, rgb in prims:
        q = p.copy()  # world -> sample units of the supersampled canvas
        pts = q.reshape(-1, 3)[:, :2] if kind == "c" else q
        pts[:, 0] = (x0 + scale * pts[:, 0]) * s
        pts[:, 1] = (y0 - scale * pts[:, 1]) * s
        if kind == "c":
            q[2] *= scale * s
            lo, hi = q[:2] - q[2], q[:2] + q[2]
        else:
            lo, hi = q.min(0), q.max(0)
        c0, r0 = max(int(np.floor(lo[0])), 0), max(int(np.floor(lo[1])), 0)
        c1 = min(int(np.ceil(hi[0])) + 1, canvas.shape[1])
        r1 = min(int(np.ceil(hi[1])) + 1, canvas.shape[0])
        if c0 < c1 and r0 < r1:
            ys = np.arange(r0, r1, dtype=np.float64)[:, None] + 0.5  # sample centres
            xs = np.arange(c0, c1, dtype=np.float64)[None, :] + 0.5
            canvas[r0:r1, c0:c1][_coverage(kind, q, ys, xs)] = rgb


def render(geometry, view, resolution, supersample=SUPERSAMPLE):
    """Draw world-space primitives (from `simulate`) into (T, H, W, 3) floats in [0, 1].
    Anti-aliasing: each pixel is the mean of supersample^2 point samples (box filter). Static
    shapes are painted once, then each frame's moving shapes in order (later on top; `simulate`
    puts the patient and then the agent last, so they are never hidden), each only over its own
    bounding box: numpy over pixels, a Python loop only over shapes."""
    h, w = _hw(resolution)
    s = supersample
    scale, x0, y0 = world_to_pixel(view, h, w)
    base = np.empty((h * s, w * s, 3), np.float32)
    base[:] = BACKGROUND_RGB
    _paint(base, geometry["static"], scale, x0, y0, s)
    out = np.empty((len(geometry["frames"]), h, w, 3), np.float32)
    for t, prims in enumerate(geometry["frames"]):
        canvas = base.copy()
        _paint(canvas, prims, scale, x0, y0, s)
        rows = canvas.reshape(h, s, w * s * 3).sum(1).reshape(h, w, s, 3)  # box filter, summed
        out[t] = rows.sum(2) / (s * s)  # in two contiguous passes (much faster than one mean)
    return out


# ------------------------------------------------------------------ clips

def generate_clip(scenario, seed, num_frames=16, resolution=32, frame_stride=DEFAULT_STRIDE,
                  want_contact=None, supersample=SUPERSAMPLE, scene_frames=None):
    """Simulate and render one clip; a pure function of its arguments (see module docstring).
    `resolution` is an int or (H, W). `want_contact` forces the target label (None: 50/50 from the
    clip's own generator); the returned `contact` is always what the engine reported. `scene_frames`:
    see `simulate` (a longer clip of the same scene)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {SCENARIOS}")
    h, w = _hw(resolution)
    sim = simulate(scenario, seed, num_frames, frame_stride, want_contact, record=True, scene_frames=scene_frames)
    rgb = render(sim["geometry"], sim["view"], (h, w), supersample)
    scale, x0, y0 = world_to_pixel(sim["view"], h, w)
    per_frame = frame_stride / SIM_FPS  # seconds per clip frame
    st = sim["states"]
    states = np.stack([x0 + scale * st[..., 0], y0 - scale * st[..., 1], -st[..., 2],
                       st[..., 3] * scale * per_frame, -st[..., 4] * scale * per_frame,
                       -st[..., 5] * per_frame], axis=-1)
    sizes = sim["sizes"] * scale
    return dict(video=np.ascontiguousarray(rgb.transpose(0, 3, 1, 2) * 2 - 1, dtype=np.float32),
                states=states.astype(np.float32), contact=sim["contact"],
                contact_frame=sim["contact_frame"], scenario_id=sim["scenario_id"],
                scenario=scenario, seed=int(seed), kinds=sim["kinds"].astype(np.int64),
                sizes=sizes.astype(np.float32),
                radii=np.where(sim["kinds"] == DISC, sizes[:, 0] / 2,
                               np.hypot(sizes[:, 0], sizes[:, 1]) / 2).astype(np.float32),
                frame_interval=float(per_frame))


# ------------------------------------------------------------------ cached dataset

MAX_SIM_WORKERS = 8           # processes that simulate a large dataset in parallel (at most one per core)
PARALLEL_SIM_MIN_CLIPS = 256  # smaller datasets are simulated in this process (starting workers costs ~1 s)


def _simulate_job(job):
    """One clip of a dataset, stored as uint8 frames (4x smaller); module level, so worker processes can run it."""
    *args, options = job  # options: {"scene_frames": n} for longer runs of shorter scenes, else {}
    clip = generate_clip(*args, **options)
    clip["video"] = np.round((clip["video"] + 1) * 127.5).astype(np.uint8)
    return clip


# The arrays of a cache file (`PhysionDataset._generate`), each with one row per clip.
CACHE_KEYS = ("video", "states", "radii", "sizes", "kinds", "object_mask", "contact", "contact_frame",
              "scenario_id", "seed")


def _read_cache(path, params):
    """(arrays, None) from a cache file, or (None, why it cannot be used): torn by a kill, cut short by a
    full disk, a flipped bit (zip's CRC-32 sees it), or arrays that do not fit the parameters."""
    try:
        # our own file handle: np.load leaves its own open when the zip directory is unreadable
        with open(path, "rb") as handle:
            archive = np.load(handle, allow_pickle=False)
            if not hasattr(archive, "files"):
                return None, "it holds a single array, not an .npz archive"
            with archive:
                data = {k: archive[k] for k in archive.files}  # reads and CRC-checks every member now
    except Exception as e:  # zipfile, zlib and numpy raise a dozen types on damaged bytes: any means rebuild
        return None, f"{type(e).__name__}: {' '.join(str(e).split())}"
    missing = [k for k in CACHE_KEYS if k not in data]
    if missing:
        return None, f"arrays {', '.join(missing)} are missing"
    n, t = params["num_clips"], params["num_frames"]
    video_shape = (n, t, 3, params["height"], params["width"])
    if data["video"].shape != video_shape or data["video"].dtype != np.uint8:
        return None, f"video is {data['video'].dtype} {data['video'].shape}, expected uint8 {video_shape}"
    if data["states"].shape[:2] != (n, t) or any(len(data[k]) != n for k in CACHE_KEYS):
        return None, f"the arrays do not all hold {n} clips of {t} frames"
    return data, None


def clip_seed(seed, split, index):
    """Seed of clip `index`: train clips use even seeds, test clips odd ones, so they never meet."""
    return 2 * (int(seed) * 1_000_000 + int(index)) + (split == "test")


class PhysionDataset(torch.utils.data.Dataset):
    """A cached set of toy Physion clips. `scenario` is a name, "all" or a list; clips cycle through
    the scenarios. The first construction simulates (with a progress bar) and saves
    `<cache_dir>/physion_<name>_<split>_<hash>.npz` (uint8 video, float32 states, labels) plus a
    `.json` with the parameters; the hash covers every generation parameter, the engine version
    and `FORMAT_VERSION`, so a changed parameter never reads a stale file. Both are written atomically;
    a damaged cache file (torn, truncated, bit-flipped, foreign) is re-simulated with a warning naming it.
    `scene_frames` < `num_frames` runs scenes built for `scene_frames` frames longer (see `simulate`); it
    enters the hash only then, so every earlier cache stays valid."""

    def __init__(self, scenario="collide", num_clips=1024, num_frames=16, resolution=32, seed=0,
                 split="train", frame_stride=DEFAULT_STRIDE, cache_dir=None, progress=True, scene_frames=None):
        names = list(SCENARIOS) if scenario == "all" else [scenario] if isinstance(scenario, str) \
            else list(scenario)
        if not names or any(n not in SCENARIOS for n in names):
            raise UserError(f"scenario must be 'all' or names from {SCENARIOS}, got {scenario!r}")
        if split not in ("train", "test") or not 0 < num_clips <= 1_000_000:
            raise ValueError("split must be 'train' or 'test' and 0 < num_clips <= 1e6")
        h, w = _hw(resolution)
        self.params = dict(format_version=FORMAT_VERSION, scenarios=names, num_clips=int(num_clips),
                           num_frames=int(num_frames), height=h, width=w, seed=int(seed),
                           split=split, frame_stride=int(frame_stride), supersample=SUPERSAMPLE,
                           sim_fps=SIM_FPS, substeps=SUBSTEPS, iterations=ITERATIONS,
                           gravity=GRAVITY, max_tries=MAX_TRIES, pymunk=pymunk.version)
        if scene_frames and int(scene_frames) != int(num_frames):  # longer runs of shorter scenes
            self.params["scene_frames"] = int(scene_frames)
        key = hashlib.sha256(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:16]
        tag = "all" if scenario == "all" else "+".join(names)[:60]
        root = Path(cache_dir or "~/.cache/nano_videodiff/physion").expanduser()
        self.path = root / f"physion_{tag}_{split}_{key}.npz"
        self.meta_path = self.path.with_suffix(".json")
        self.data = None
        if self.path.exists() and self.meta_path.exists():
            self.data, problem = _read_cache(self.path, self.params)
            if problem:  # the clips are a pure function of the parameters: simulating again loses nothing
                warnings.warn(f"toy Physion cache {self.path} is damaged ({problem}); re-simulating it",
                              stacklevel=2)
        if self.data is None:
            root.mkdir(parents=True, exist_ok=True)
            for path in (self.path, self.meta_path):
                remove_orphans(path)  # a kill -9 mid-write leaves its temporary behind
            self.data = self._generate(progress)
            atomic_write(self.path, lambda f: np.savez_compressed(f, **self.data))
            meta = dict(self.params, positive_rate=float(self.data["contact"].mean()))
            atomic_write(self.meta_path, lambda f: f.write(json.dumps(meta, indent=1).encode()))
        self.frame_interval = frame_stride / SIM_FPS
        self.fps = SIM_FPS / frame_stride

    def _generate(self, progress):
        p = self.params
        jobs = [(p["scenarios"][i % len(p["scenarios"])], clip_seed(p["seed"], p["split"], i), p["num_frames"],
                 (p["height"], p["width"]), p["frame_stride"],
                 {"scene_frames": p["scene_frames"]} if "scene_frames" in p else {}) for i in range(p["num_clips"])]
        # Every clip is a pure function of its job, so worker processes give the same clips as one process;
        # pymunk is single-threaded, so this is where the cores help. "spawn": no forked torch thread pools.
        workers = min(os.cpu_count() or 1, MAX_SIM_WORKERS) if len(jobs) >= PARALLEL_SIM_MIN_CLIPS else 1
        bar = dict(total=len(jobs), desc=f"simulating toy Physion ({p['split']})", disable=not progress)
        if workers > 1:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                clips = list(tqdm(pool.map(_simulate_job, jobs, chunksize=32), **bar))
        else:
            clips = [_simulate_job(job) for job in tqdm(jobs, **bar)]
        k = max(len(c["radii"]) for c in clips)  # objects per clip vary: pad to the largest

        def pad(key, fill=0):
            axis = 1 if key == "states" else 0  # the object axis
            widths = lambda a: [(0, k - a.shape[axis]) if d == axis else (0, 0) for d in range(a.ndim)]
            return np.stack([np.pad(c[key], widths(c[key]), constant_values=fill) for c in clips])

        mask = np.zeros((len(clips), k), bool)
        for i, c in enumerate(clips):
            mask[i, :len(c["radii"])] = True
        return dict(video=np.stack([c["video"] for c in clips]), states=pad("states"),
                    radii=pad("radii"), sizes=pad("sizes"),
                    kinds=pad("kinds", -1), object_mask=mask,
                    contact=np.array([c["contact"] for c in clips]),
                    contact_frame=np.array([c["contact_frame"] for c in clips], np.int64),
                    scenario_id=np.array([c["scenario_id"] for c in clips], np.int64),
                    seed=np.array([c["seed"] for c in clips], np.int64))

    def __len__(self):
        return len(self.data["video"])

    def __getitem__(self, i):
        d = self.data
        item = {k: torch.from_numpy(np.asarray(d[k][i])) for k in d if k != "video"}
        item["video"] = torch.from_numpy(d["video"][i]).float() / 127.5 - 1.0
        item["frame_interval"] = torch.tensor(self.frame_interval, dtype=torch.float32)
        return item
