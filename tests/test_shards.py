"""WebDataset shards (nano_videodiff/data/shards.py): written from toy data, read back exactly by index, split
across ranks as one process's batch, streamed with split_by_node, trained on (also under torchrun), and
cached latents (W.A.L.T's stage 2) equal to encoding on the fly, in training too."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import toy_data
import train
from nano_videodiff.data import shards
from nano_videodiff.errors import UserError
from nano_videodiff.training.batches import TrainingData, make_batch
from nano_videodiff.training.presets import resolve

ROOT = Path(__file__).resolve().parents[1]
NUM_CLIPS, PER_SHARD = 10, 4  # 3 shards: 4 + 4 + 2 clips
VAE = ["--num_frames=5", "--resolution=16", "--vae_channels=8", "--vae_channel_mult=1", "--vae_latent_channels=4",
       "--vae_spatial_down=4", "--vae_temporal_down=2"]


@pytest.fixture(scope="module")
def clip_shards(tmp_path_factory):
    """Smoke-sized bouncing balls (4 frames of 16x16), clips 0..9 in shards of 4, through the command line."""
    out = tmp_path_factory.mktemp("shards")
    assert shards.main(["write", "--config=smoke", f"--num_clips={NUM_CLIPS}", f"--clips_per_shard={PER_SHARD}",
                        f"--out={out}/train-%06d.tar"]) == 0
    return out


def smoke_cfg(*args):
    return resolve(["--config=smoke", *args])[0]


def test_written_clips_read_back_exactly_with_metadata(clip_shards):
    assert sorted(p.name for p in clip_shards.iterdir()) == [f"train-{i:06d}.tar" for i in range(3)]
    source = toy_data.get_batch(toy_data.build_dataset(smoke_cfg().data, "train"), range(NUM_CLIPS))
    data = shards.ShardDataset(f"{clip_shards}/train-{{000000..000002}}.tar", num_frames=4, size=(16, 16),
                               channels=3)
    assert len(data) == NUM_CLIPS
    read = data.get_batch(range(NUM_CLIPS))
    # uint8 frames: exactly the 256-level quantisation of the source clips, within half a level of them
    expected = torch.from_numpy(np.stack([shards.to_uint8(v) for v in source["video"]])).permute(0, 1, 4, 2, 3)
    assert torch.equal(read["video"], expected.float() / 127.5 - 1)
    assert (read["video"] - source["video"]).abs().max() <= 0.5 / 127.5 + 1e-6
    assert torch.equal(read["frame_interval"], source["frame_interval"])
    meta = data.index.read_json(7)
    assert meta["index"] == 7 and meta["split"] == "train" and meta["fps"] == pytest.approx(8.0)
    assert meta["source"] == "bouncing_balls:train:7" and meta["label"] is None
    # fewer frames than written: the first ones
    assert torch.equal(shards.ShardDataset(str(clip_shards), 2, (16, 16), 3).get_batch([3])["video"], read["video"][3:4, :2])


def test_shard_specs_braces_folders_single_tars_and_errors(clip_shards):
    one = clip_shards / "train-000001.tar"
    assert len(shards.expand_shards(f"{clip_shards}/train-{{000000..000002}}.tar")) == 3
    assert shards.expand_shards(str(clip_shards)) == sorted(clip_shards.glob("*.tar"))
    assert shards.expand_shards(str(one)) == [one]
    assert len(shards.expand_shards(f"{one}::{clip_shards}/train-00000{{0,2}}.tar")) == 3
    assert len(shards.ShardIndex(str(one))) == PER_SHARD
    with pytest.raises(UserError, match="train-000003.tar not found"):
        shards.expand_shards(f"{clip_shards}/train-{{000000..000003}}.tar")
    with pytest.raises(UserError, match="needs --data_root"):
        shards.expand_shards("")
    with pytest.raises(UserError, match="4 frames of 16x16x3; this run needs at least --num_frames=8"):
        shards.ShardDataset(str(clip_shards), 8, (16, 16), 3)
    with pytest.raises(ValueError, match="--num_train_clips=11 but the shards"):
        toy_data.build_dataset(smoke_cfg("--dataset=webdataset", f"--data_root={clip_shards}",
                                         "--num_train_clips=11").data)
    with pytest.raises(UserError, match="needs a shard number field"):
        shards.main(["write", "--config=smoke", "--num_clips=2", f"--out={clip_shards}/x.tar"])


def test_endless_training_index_visits_every_clip_once_per_shuffled_epoch(clip_shards):
    cache = {}
    for epoch in range(3):
        order = [shards.epoch_order(epoch * NUM_CLIPS + p, NUM_CLIPS, 0, cache) for p in range(NUM_CLIPS)]
        assert sorted(order) == list(range(NUM_CLIPS))
        assert order == [shards.epoch_order(epoch * NUM_CLIPS + p, NUM_CLIPS, 0, {}) for p in range(NUM_CLIPS)]
    assert order != list(range(NUM_CLIPS))


@pytest.mark.parametrize("num_train_clips", [0, 6])
def test_step_batch_is_the_same_for_one_and_two_ranks_each_reading_its_slice(clip_shards, monkeypatch,
                                                                             num_train_clips):
    cfg = smoke_cfg("--dataset=webdataset", f"--data_root={clip_shards}", f"--num_train_clips={num_train_clips}",
                    "--masking=vdt")
    data = TrainingData(cfg)
    reads = []
    original = shards.ShardIndex.read_npy
    monkeypatch.setattr(shards.ShardIndex, "read_npy", lambda self, i, ext="npy": reads.append(i) or
                        original(self, i, ext))
    for step in (0, 3, 7):
        whole = make_batch(cfg, data, step, 0, 1, "cpu")
        reads.clear()
        halves = [make_batch(cfg, data, step, r, 2, "cpu") for r in (0, 1)]
        assert len(reads) == cfg.optim.batch_size  # each rank read its own 2 clips, nothing more
        assert torch.equal(torch.cat([h.x for h in halves]), whole.x)
        assert torch.equal(torch.cat([h.noise for h in halves]), whole.noise)
        assert torch.equal(torch.cat([h.cond.known for h in halves]), whole.cond.known)
        again = make_batch(cfg, TrainingData(cfg), step, 0, 1, "cpu")  # a fresh process: the same batch
        assert torch.equal(again.x, whole.x)


def test_webdataset_streaming_splits_shards_across_nodes_and_workers(tmp_path, monkeypatch):
    shards.main(["write", "--config=smoke", "--num_clips=12", "--clips_per_shard=3", f"--out={tmp_path}/s-%03d.tar"])
    spec = f"{tmp_path}/s-{{000..003}}.tar"
    monkeypatch.delenv("WORKER", raising=False)
    seen = {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen[rank] = [s["key"] for s in shards.streaming_dataset(spec)]
    assert sorted(seen[0] + seen[1]) == [f"{i:09d}" for i in range(12)]  # each sample exactly once
    assert seen[0] == [f"{i:09d}" for i in (0, 1, 2, 6, 7, 8)]            # rank 0: shards 0 and 2
    # and within a node, a DataLoader's workers split that node's shards again
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("NUM_WORKERS", "2")
    per_worker = []
    for worker in (0, 1):
        monkeypatch.setenv("WORKER", str(worker))
        per_worker.append([s["key"] for s in shards.streaming_dataset(spec)])
    assert per_worker == [seen[1][:3], seen[1][3:]]
    for name in ("RANK", "WORLD_SIZE", "WORKER", "NUM_WORKERS"):
        monkeypatch.delenv(name)
    sample = next(iter(shards.streaming_dataset(f"{tmp_path}/s-000.tar")))
    assert sample["video"].shape == (4, 3, 16, 16) and sample["frame_interval"] == pytest.approx(1 / 8)


def train_args(out, *extra):
    return ["--config=smoke", "--max_steps=3", "--log_every=1", "--preview_every=0", f"--out_dir={out}", *extra]


def logged_losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_train_script_on_shards_with_test_shards_for_previews(clip_shards, tmp_path):
    shards.main(["write", "--config=smoke", "--split=test", "--num_clips=2", f"--out={tmp_path}/test-%06d.tar"])
    result = train.main(train_args(tmp_path / "run", "--dataset=webdataset",
                                   f"--data_root={clip_shards}/train-{{000000..000002}}.tar",
                                   f"--test_data_root={tmp_path}/test-000000.tar", "--masking=predict",
                                   "--preview_every=3", "--num_preview=2"))
    assert np.isfinite(result["last_loss"]) and len(logged_losses(tmp_path / "run")) == 3
    assert (tmp_path / "run" / "previews" / "step_000003.gif").exists()


def test_two_processes_on_shards_equal_one_process(clip_shards, tmp_path):
    """The issue's 'Done when': the same shards train under torchrun with 2 CPU processes (gloo) as in one."""
    args = ["--config=smoke", "--max_steps=3", "--log_every=1", "--preview_every=0", "--dataset=webdataset",
            f"--data_root={clip_shards}", "--masking=vdt"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(ROOT / "train.py"), *args, f"--out_dir={tmp_path / 'two'}"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = train.main([*args, f"--out_dir={tmp_path / 'one'}"])
    assert logged_losses(tmp_path / "two") == pytest.approx(logged_losses(tmp_path / "one"), rel=1e-5)
    saved = torch.load(tmp_path / "two" / "ckpt.pt", weights_only=True)
    for name, value in single["model"].state_dict().items():
        assert torch.allclose(saved["model"][name], value, atol=1e-5), name


# ---- cached latents (W.A.L.T stage 2) -------------------------------------------------------------------

@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    """A (barely) trained smoke autoencoder with fitted latent statistics, as stage 1 leaves it."""
    out = tmp_path_factory.mktemp("vae")
    train.main(["--config=smoke", "--backbone=causal_vae", *VAE, f"--out_dir={out}", "--max_steps=2",
                "--preview_every=0"])
    return out / "ckpt.pt"


def stage2_args(autoencoder, *extra):
    return ["--config=smoke", *VAE, f"--autoencoder={autoencoder}", "--patch_size=2", "--num_train_clips=12", *extra]


def test_latent_shards_equal_on_the_fly_encoding(autoencoder, tmp_path):
    from nano_videodiff import latent
    assert shards.main(["encode", *stage2_args(autoencoder), "--clips_per_shard=5",
                        f"--out={tmp_path}/latents-%06d.tar"]) == 0
    cfg = resolve(stage2_args(autoencoder))[0]
    vae = latent.build_frozen_autoencoder(cfg)
    latent.load_autoencoder_weights(vae, str(autoencoder), cfg)
    cached = shards.LatentShards(f"{tmp_path}/latents-{{000000..000002}}.tar", cfg, vae)
    assert len(cached) == 12
    clips = toy_data.get_batch(toy_data.build_dataset(cfg.data), range(12))
    on_the_fly = latent.encode(vae, clips["video"])
    assert on_the_fly.shape == (12, 3, 4, 4, 4) and on_the_fly.dtype == torch.float32
    assert torch.equal(cached[torch.arange(12)], on_the_fly)  # exactly, fp32
    batch = cached.get_batch([11, 0, 5])
    assert torch.equal(batch["video"], on_the_fly[[11, 0, 5]])
    assert torch.equal(batch["frame_interval"], clips["frame_interval"][[11, 0, 5]])
    meta = cached.index.read_json(0)
    assert meta["autoencoder"] == str(autoencoder) and meta["latent_shape"] == [3, 4, 4, 4]

    # Another autoencoder (other weights), another latent shape, or more clips than cached: refused.
    other = latent.build_frozen_autoencoder(cfg)
    with pytest.raises(UserError, match="encoded by another autoencoder.*re-encode"):
        shards.LatentShards(str(tmp_path), cfg, other)
    wider = resolve(stage2_args(autoencoder, "--vae_latent_channels=8"))[0]
    with pytest.raises(UserError, match="vae_latent_channels: 4 vs 8"):
        shards.LatentShards(str(tmp_path), wider, vae)
    with pytest.raises(UserError, match="hold 12 latents"):
        shards.LatentShards(str(tmp_path), resolve(stage2_args(autoencoder, "--num_train_clips=13"))[0], vae)
    with pytest.raises(UserError, match="not latent shards"):
        clip_dir = tmp_path / "clips"
        shards.main(["write", "--config=smoke", "--num_clips=2", f"--out={clip_dir}/c-%06d.tar"])
        shards.LatentShards(str(clip_dir), cfg, vae)


def test_training_from_latent_shards_is_bit_exact_with_in_memory_latents(autoencoder, tmp_path):
    shards.main(["encode", *stage2_args(autoencoder), f"--out={tmp_path}/latents-%06d.tar"])
    common = [*stage2_args(autoencoder), "--masking=predict", "--num_context=3", "--max_steps=3", "--log_every=1",
              "--preview_every=0"]
    memory = train.main([*common, f"--out_dir={tmp_path / 'memory'}"])
    read = train.main([*common, f"--latent_shards={tmp_path}/latents-000000.tar", f"--out_dir={tmp_path / 'read'}"])
    assert logged_losses(tmp_path / "read") == logged_losses(tmp_path / "memory")  # bit-exact, same seed
    for (name, a), b in zip(memory["model"].state_dict().items(), read["model"].state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(UserError, match="--latent_shards are the latents of whole clips"):
        train.main([*common, f"--latent_shards={tmp_path}", "--image_fraction=0.5", f"--out_dir={tmp_path / 'x'}"])


def test_labels_are_kept_and_the_command_line_fails_in_one_line(tmp_path):
    """Toy Physion's scenario labels survive the round trip; tool mistakes are one-line errors (exit 2)."""
    physion = ["--config=physion_all", "--num_frames=4",
               "--resolution=16", f"--cache_dir={tmp_path / 'cache'}"]
    shards.main(["write", *physion, "--num_clips=4", "--num_train_clips=8", f"--out={tmp_path}/p-%06d.tar"])
    cfg = resolve([*physion, "--num_train_clips=8"])[0]
    source = toy_data.get_batch(toy_data.build_dataset(cfg.data), range(4))
    read = shards.ShardDataset(f"{tmp_path}/p-000000.tar", 4, (16, 16), 3).get_batch(range(4))
    assert torch.equal(read["labels"], source["labels"]) and read["frame_interval"][0] == pytest.approx(0.1)
    with pytest.raises(UserError, match="--autoencoder='' not found"):
        shards.main(["encode", "--config=smoke", "--num_clips=2", f"--out={tmp_path}/z-%06d.tar"])
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "nano_videodiff.data.shards", "write", "--config=smoke"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr == "error: pass --out=DIR/shards-%06d.tar (where to write the shards)\n"
