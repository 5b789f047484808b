"""Every entry of the preset table trains: ``python train.py --config=NAME``.

Default suite: each preset's reduced variant (``paper_configs.reduced``: width and depth shrunk, data, clip
shape, frame rate, patching, windows, groups, conditioning and task as the preset has them) for one step
through train.py's command line, on 2 clips. Two-stage presets run as two stages: the stage-1 preset
(reduced the same way) first, then stage 2 reading its checkpoint; without it, stage 2 stops with a
message naming the command that makes it. ``pytest -m slow``: the full-size paper presets, one step at
batch 1, where this machine has the memory the planner says they need.
"""
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import train
from nano_videodiff.errors import MissingFile
from nano_videodiff.training import planner
from nano_videodiff.training.paper_configs import PAPER_PRESETS, reduced_args
from nano_videodiff.training.presets import PRESETS, get_preset

# Stage 2 -> (the flag reading stage 1's checkpoint, the stage-1 preset).
TWO_STAGE = {"walt_l": ("autoencoder", "walt_vae"), "walt_xl": ("autoencoder", "walt_vae"),
             "walt_physion": ("autoencoder", "walt_vae_physion"),
             "videoldm_bouncing_balls": ("init_from", "unet_frames"),
             "cascade_base": ("init_from", "cascade_base_frames"), "cascade_sr": ("init_from", "cascade_sr_frames")}
# One step on 2 clips, no previews, the clips simulated once into a shared cache.
STEP = ["--max_steps=1", "--batch_size=2", "--num_train_clips=2", "--num_test_clips=1", "--preview_every=0"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("clips")


def train_reduced(name, out_dir: Path, cache: Path, *extra) -> dict:
    args = [f"--config={name}", *reduced_args(get_preset(name)), *STEP, f"--cache_dir={cache}",
            f"--out_dir={out_dir}", *extra]
    return train.main(args)


@pytest.fixture(scope="module")
def stage_one(tmp_path_factory, cache):
    """{stage-1 preset: its reduced run's ckpt.pt}, trained on first use."""
    done = {}

    def get(name):
        if name not in done:
            out = tmp_path_factory.mktemp(name)
            train_reduced(name, out, cache)
            done[name] = out / "ckpt.pt"
        return done[name]
    return get


def test_the_two_stage_table_names_stage_one_presets():
    for stage2, (flag, stage1) in TWO_STAGE.items():
        path = getattr(get_preset(stage2).data if flag == "autoencoder" else get_preset(stage2).run, flag)
        assert Path(path) == Path(get_preset(stage1).run.out_dir) / "ckpt.pt", stage2
    latent_or_init = {n for n in PRESETS if (get_preset(n).data.autoencoder and not
                                             get_preset(n).data.autoencoder_preset) or get_preset(n).run.init_from}
    assert latent_or_init == set(TWO_STAGE)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_reduced_preset_trains_one_step(name, tmp_path, cache, stage_one):
    extra = []
    if name in TWO_STAGE:
        flag, first = TWO_STAGE[name]
        extra = [f"--{flag}={stage_one(first)}"]
    result = train_reduced(name, tmp_path / "run", cache, *extra)
    full, small = get_preset(name), result["config"]
    # only the network shrank: the data (but for how many clips, where cached, and stage 1's path), task,
    # diffusion and patching are the preset's
    kept = replace(small.data, num_train_clips=full.data.num_train_clips, num_test_clips=full.data.num_test_clips,
                   cache_dir=full.data.cache_dir, autoencoder=full.data.autoencoder)
    assert (kept, small.task, small.diffusion) == (full.data, full.task, full.diffusion)
    assert small.model.patch_size == full.model.patch_size and small.model.backbone == full.model.backbone
    assert torch.isfinite(torch.tensor(result["last_loss"])) and (tmp_path / "run" / "ckpt.pt").exists()


@pytest.mark.parametrize("name", sorted(TWO_STAGE))
def test_stage_two_without_stage_one_names_the_command(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the presets' relative out/... folders: empty here
    with pytest.raises(MissingFile, match=f"`python train.py --config={TWO_STAGE[name][1]}`"):
        train.main([f"--config={name}", f"--out_dir={tmp_path / 'run'}"])


def fits_here(cfg) -> bool:
    """The planner's one-process memory for batch 1 against this machine's available memory."""
    cfg.optim.batch_size = 1
    need = planner.plan(cfg, 1)["ddp"]
    available = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemAvailable"))
    return need < 0.9 * available


@pytest.mark.slow  # minutes each on a CPU (snapvideo_500m: ~1.5 min, walt_vae: ~3 min on 2 cores)
@pytest.mark.parametrize("name", sorted(PAPER_PRESETS))
def test_full_size_paper_preset_trains_one_step_at_batch_1(name, tmp_path, cache, stage_one):
    full = get_preset(name)
    if not fits_here(full):
        pytest.skip(f"{name} needs more memory than this machine has (python train.py --config={name} --plan)")
    extra = []
    if name in TWO_STAGE:  # stage 2 on a full-size stage 1 (one step of it)
        flag, first = TWO_STAGE[name]
        out = tmp_path / first
        train.main([f"--config={first}", *STEP, "--batch_size=1", f"--cache_dir={cache}", f"--out_dir={out}"])
        extra = [f"--{flag}={out / 'ckpt.pt'}"]
    result = train.main([f"--config={name}", *STEP, "--batch_size=1", f"--cache_dir={cache}",
                         f"--out_dir={tmp_path / 'run'}", *extra])
    assert torch.isfinite(torch.tensor(result["last_loss"]))
