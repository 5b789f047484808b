"""WebDataset shards of clips and of cached latents: write them once, read any sample by its global index.

**Format.** A shard is a plain tar file in the WebDataset layout (``webdataset`` package): the files of one
sample share a key and differ in their extension. A clip is

    000000042.npy    uint8 (T, H, W, C), the frames exactly as decoded (lossless, no codec round trip)
    000000042.json   {"fps", "frame_interval", "label", "caption", "source", "index", "split", ...}

We store frames as ``.npy`` rather than ``.mp4``: it is exact (what is read is what was written, so tests can
compare with ``==``), needs no decoder in the loader, and reading is a ``memcpy``; it costs disk (a 16-frame
32x32 RGB clip is 49 KB). Re-encode to MP4 only if disk matters more than decode time. A cached latent
(W.A.L.T's stage 2, below) is ``000000042.latent.npy`` (float32, the normalised latent) plus the same JSON.

**Reading: indexed, not streamed.** This project's guarantee is that the global batch of step s is a pure
function of (seed, s) (training/batches.py): exact resume and the same batch for any world size, each rank
taking its slice. A streaming reader (each rank iterates its own shards) cannot give that, so training uses
``ShardDataset``: each tar is opened once to index where its members' bytes are (``tarfile``), then sample
``i`` is one seek and one read, and a rank reads only the samples of its slice. ``streaming_dataset`` is
WebDataset's own pipeline (``split_by_node``/``split_by_worker``) for users who prefer it (docs/own_videos.md).

**Cached latents (W.A.L.T, arXiv 2312.06662, Sec. 4.1 and 5.2).** Stage 2 trains on the normalised latents
of a *frozen* causal autoencoder, so they can be computed once: ``encode`` writes them to shards, with a
hash of the autoencoder's weights (its latent statistics included), and training with ``--latent_shards``
refuses shards made by another autoencoder or for another latent shape.

Commands::

    python -m nano_videodiff.data.shards write --config=smoke --out=shards/train-%06d.tar --clips_per_shard=64
    python -m nano_videodiff.data.shards encode --config=physion_collide_main \\
        --autoencoder=checkpoints/physion_autoencoder.pt --out=latents/train-%06d.tar
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from ..errors import UserError, run_script
from ..training.config import square_to_height_width

# Clips per encoder call, here and in training/batches.py encode_dataset: the same chunks give bit-identical
# latents (another batch size may change the float rounding of the convolutions).
ENCODE_BATCH = 64


# ----------------------------------------------------------------------------------------------
# Shard lists: brace patterns, folders, single tars
# ----------------------------------------------------------------------------------------------

def expand_shards(spec: str) -> List[Path]:
    """``"dir/shards-{000000..000009}.tar"`` (WebDataset's brace expansion), a folder of ``*.tar``, or one tar.

    Several specs may be joined with ``::`` as in WebDataset. Every shard must exist: a missing one is named.
    """
    from braceexpand import braceexpand  # a dependency of webdataset
    if not spec:
        raise UserError("--dataset=webdataset needs --data_root: a shard pattern such as "
                        "'shards/train-{000000..000009}.tar', a folder of .tar files or one .tar")
    paths: List[Path] = []
    for part in spec.split("::"):
        if Path(part).is_dir():
            found = sorted(Path(part).glob("*.tar"))
            if not found:
                raise UserError(f"{part} holds no .tar shards; write some with "
                                "python -m nano_videodiff.data.shards write --out=DIR/shards-%06d.tar")
            paths += found
            continue
        for name in braceexpand(part):
            if not Path(name).is_file():
                raise UserError(f"shard {name} not found (from {spec!r}); check the pattern's range and folder")
            paths.append(Path(name))
    return paths


def sample_key(member_name: str):
    """(key, extension) as WebDataset splits a member name: the key ends at the first dot of the file name."""
    folder, _, base = member_name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext if dot else "")


# ----------------------------------------------------------------------------------------------
# The indexed (map-style) reader
# ----------------------------------------------------------------------------------------------

class ShardIndex:
    """Where every sample's files are in a list of tars: sample i -> {extension: (shard, offset, size)}.

    Samples are numbered in shard order, then in the order they appear in their tar (the order they were
    written), so index i of the shards is clip i of the dataset they were written from.
    """

    def __init__(self, spec: str):
        self.paths = expand_shards(spec)
        self.samples: List[Dict[str, tuple]] = []
        for shard, path in enumerate(self.paths):
            try:
                with tarfile.open(path, "r:") as tar:  # uncompressed: offsets are seekable positions
                    keys: Dict[str, Dict[str, tuple]] = {}
                    for member in tar:
                        if member.isfile():
                            key, ext = sample_key(member.name)
                            keys.setdefault(key, {})[ext] = (shard, member.offset_data, member.size)
            except tarfile.TarError as e:
                raise UserError(f"{path} is not a readable (uncompressed) tar shard: {e}") from None
            self.samples += keys.values()  # dicts keep insertion order: the order in the tar
        if not self.samples:
            raise UserError(f"the shards {spec!r} hold no samples")

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, index: int, ext: str) -> bytes:
        files = self.samples[index]
        if ext not in files:
            raise UserError(f"sample {index} of {self.paths[0].parent} has no .{ext} file (it has "
                            f"{', '.join(sorted(files))}); were these shards written for another purpose?")
        shard, offset, size = files[ext]
        # A fresh handle per read: safe in DataLoader workers (no file position shared across a fork).
        with open(self.paths[shard], "rb") as f:
            f.seek(offset)
            return f.read(size)

    def read_json(self, index: int) -> dict:
        return json.loads(self.read(index, "json"))

    def read_npy(self, index: int, ext: str = "npy") -> np.ndarray:
        return np.load(io.BytesIO(self.read(index, ext)), allow_pickle=False)


def epoch_order(index: int, length: int, seed: int, cache: dict) -> int:
    """Global index -> sample, for training without a fixed clip count (``--num_train_clips=0``: one index per
    sample ever drawn, past the end of the shards): epoch e = index // length visits every sample once, in a
    shuffled order that depends on (seed, e) only, so the batch of a step stays a pure function of (seed, step)."""
    epoch, position = divmod(int(index), length)
    if cache.get("epoch") != epoch:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        cache.update(epoch=epoch, order=torch.randperm(length, generator=g))
    return int(cache["order"][position])


class ShardDataset:
    """Clips from WebDataset shards, by global index, in this project's dataset contract (toy_data).

    ``get_batch(indices)`` -> video (B, T, C, H, W) float32 in [-1, 1], frame_interval (B,) seconds, and
    labels (B,) when the shards carry them. Clips longer than ``num_frames`` give their first frames.

    Index i is the i-th written clip, unless ``shuffle_epochs`` (training with ``--num_train_clips=0``, one
    index per sample ever drawn): then every index goes through ``epoch_order``, so each pass over the shards
    is in its own shuffled order, and the first pass is not the (maybe sorted) order they were written in.
    """

    def __init__(self, spec: str, num_frames: int, size: Tuple[int, int], channels: int, seed: int = 0,
                 shuffle_epochs: bool = False):
        self.index = ShardIndex(spec)
        self.spec, self.num_frames, self.seed, self._epoch = spec, num_frames, seed, {}
        self.shuffle_epochs = shuffle_epochs
        first = self.index.read_npy(0)
        if first.ndim != 4 or first.dtype != np.uint8:
            raise UserError(f"{spec}: clips must be uint8 arrays (T, H, W, C), found {first.dtype} {first.shape}")
        t, h, w, c = first.shape
        if t < num_frames or (h, w) != tuple(size) or c != channels:
            raise UserError(f"the shards {spec} hold clips of {t} frames of {h}x{w}x{c}; this run needs at least "
                            f"--num_frames={num_frames} of {size[0]}x{size[1]}x{channels}: pass those values "
                            f"(--height={h} --width={w}), or rewrite the shards with them")

    def __len__(self) -> int:
        return len(self.index)

    def clip(self, i: int) -> dict:
        i = epoch_order(i, len(self), self.seed, self._epoch) if self.shuffle_epochs else int(i)
        frames = torch.from_numpy(self.index.read_npy(i)[: self.num_frames])
        meta = self.index.read_json(i)
        item = {"video": frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0,
                "frame_interval": torch.tensor(float(meta["frame_interval"]))}
        if meta.get("label") is not None:
            item["labels"] = torch.tensor(int(meta["label"]))
        return item

    def __getitem__(self, i: int) -> dict:
        return self.clip(i)

    def get_batch(self, indices: Sequence[int]) -> Dict[str, torch.Tensor]:
        items = [self.clip(i) for i in indices]
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(T, C, H, W) in [-1, 1] -> uint8 (T, H, W, C): the nearest of the 256 levels a video file holds."""
    return ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


# ----------------------------------------------------------------------------------------------
# WebDataset's streaming pipeline (an alternative to the indexed reader; not the training default)
# ----------------------------------------------------------------------------------------------

def streaming_dataset(spec: str, shuffle_buffer: int = 0):
    """WebDataset's own ``IterableDataset``: shards split across ranks (``split_by_node``: rank r of w takes
    shards r, r + w, ...) and across a DataLoader's workers (``split_by_worker``), samples decoded to dicts.

    Each rank then sees its own stream, so batches depend on the shard count and the world size: use it for
    throughput when exact resume and world-size-independent batches do not matter. Give at least
    world size x workers shards, or some ranks get none.
    """
    import webdataset as wds
    urls = [str(p) for p in expand_shards(spec)]
    pipeline = wds.WebDataset(urls, nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker,
                              shardshuffle=False, empty_check=False)
    if shuffle_buffer:
        pipeline = pipeline.shuffle(shuffle_buffer)

    def decode(sample):
        meta = json.loads(sample["json"])
        frames = torch.from_numpy(np.load(io.BytesIO(sample["npy"])))
        return {"key": sample["__key__"], "video": frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0,
                "frame_interval": float(meta["frame_interval"]), "label": meta.get("label")}
    return pipeline.map(decode)


# ----------------------------------------------------------------------------------------------
# Cached latents (W.A.L.T stage 2)
# ----------------------------------------------------------------------------------------------

def weights_hash(module: torch.nn.Module) -> str:
    """sha256 of a module's state dict (names, dtypes, shapes, values): which autoencoder made a latent.

    Hashing the weights rather than the checkpoint file makes the check hold wherever the weights come
    from (the stage-1 file, an export of it, or the copy inside a resumed stage-2 checkpoint).
    """
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # the raw bytes, for any dtype and shape
    return h.hexdigest()


def latent_signature(cfg) -> dict:
    """What fixes a latent's meaning besides the weights: the pixel clip shape and the autoencoder's shape."""
    from ..latent import VAE_FIELDS
    d = cfg.data
    return {"num_frames": d.num_frames, "height": d.height, "width": d.width, "channels": d.channels,
            **{k: getattr(cfg.model, k) for k in VAE_FIELDS}}


class LatentShards:
    """Normalised latents (W.A.L.T Sec. 4.1/5.2) cached in shards by ``encode``, as the training data of stage 2.

    ``latents[idx]`` (a tensor of indices) -> (B, 1 + k, c, h, w) float32, as ``TrainingData.latents``
    (the in-memory cache) gives; ``get_batch`` also gives frame_interval and labels from the metadata, so
    no pixel clip is ever decoded or simulated. Built only after checking that the shards were encoded by
    this run's autoencoder (``weights_hash``) for this run's clip and latent shape.
    """

    def __init__(self, spec: str, cfg, autoencoder: torch.nn.Module):
        self.index = ShardIndex(spec)
        self.spec, self.seed, self._epoch = spec, cfg.data.data_seed, {}
        self.shuffle_epochs = cfg.data.num_train_clips == 0  # as ShardDataset: shuffled passes over the shards
        meta = self.index.read_json(0)
        if "autoencoder_sha256" not in meta:
            raise UserError(f"{spec} are not latent shards (no autoencoder hash in their metadata); write them "
                            "with python -m nano_videodiff.data.shards encode")
        want, have = latent_signature(cfg), square_to_height_width(meta.get("signature", {}))
        differ = [f"{k}: {have.get(k)!r} vs {v!r}" for k, v in want.items() if have.get(k) != v]
        if differ:
            raise UserError(f"--latent_shards={spec} were encoded for other settings ({'; '.join(differ)}); pass "
                            "the same values or re-encode")
        if meta["autoencoder_sha256"] != weights_hash(autoencoder):
            raise UserError(f"--latent_shards={spec} were encoded by another autoencoder ({meta.get('autoencoder')}"
                            f"), not --autoencoder={cfg.data.autoencoder}: re-encode them with this one, or pass "
                            "the autoencoder they were made with")
        if cfg.data.num_train_clips > len(self):
            raise UserError(f"--num_train_clips={cfg.data.num_train_clips} but --latent_shards={spec} hold "
                            f"{len(self)} latents: pass at most that many (0 = all, in shuffled passes)")

    def __len__(self) -> int:
        return len(self.index)

    def _resolve(self, i: int) -> int:
        return epoch_order(i, len(self), self.seed, self._epoch) if self.shuffle_epochs else int(i)

    def __getitem__(self, indices) -> torch.Tensor:
        return torch.stack([torch.from_numpy(self.index.read_npy(self._resolve(i), "latent.npy"))
                            for i in torch.as_tensor(indices).reshape(-1).tolist()])

    def get_batch(self, indices: Sequence[int]) -> Dict[str, torch.Tensor]:
        metas = [self.index.read_json(self._resolve(i)) for i in indices]
        batch = {"video": self[list(indices)],
                 "frame_interval": torch.tensor([float(m["frame_interval"]) for m in metas])}
        if metas[0].get("label") is not None:
            batch["labels"] = torch.tensor([int(m["label"]) for m in metas])
        return batch


# ----------------------------------------------------------------------------------------------
# Writing: `write` (clips) and `encode` (latents)
# ----------------------------------------------------------------------------------------------

@dataclass
class ToolOptions:
    out: str = ""                 # shard pattern with a printf field, e.g. DIR/shards-%06d.tar
    clips_per_shard: int = 256    # samples per tar (WebDataset suggests shards of a few hundred MB)
    split: str = "train"          # which split of the dataset to write: train | test
    num_clips: int = 0            # how many clips (0 = --num_train_clips / --num_test_clips of the config)


def clip_count(cfg, dataset, options: ToolOptions) -> int:
    n = options.num_clips or (cfg.data.num_train_clips if options.split == "train" else cfg.data.num_test_clips)
    if n <= 0:
        raise UserError("how many clips? pass --num_clips=N (the config's dataset is procedural and endless)")
    if hasattr(dataset, "__len__") and n > len(dataset):
        raise UserError(f"--num_clips={n} but the {options.split} split has {len(dataset)} clips")
    return n


def clip_metadata(cfg, batch: dict, j: int, index: int, split: str) -> dict:
    interval = float(batch["frame_interval"][j])
    meta = {"index": index, "split": split, "frame_interval": interval,
            "fps": (1.0 / interval) if interval > 0 else None, "source": f"{cfg.data.dataset}:{split}:{index}",
            "caption": batch["captions"][j] if "captions" in batch else None,
            "label": int(batch["labels"][j]) if "labels" in batch else None}
    return meta


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_samples(pattern: str, samples, clips_per_shard: int) -> int:
    """Write ``(key, {ext: bytes})`` samples with ``webdataset.ShardWriter``; returns the number of shards."""
    import webdataset as wds
    if "%" not in pattern:
        raise UserError(f"--out={pattern} needs a shard number field, e.g. {pattern.removesuffix('.tar')}-%06d.tar")
    Path(pattern).parent.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(pattern, maxcount=clips_per_shard, verbose=0) as sink:
        for key, files in samples:
            sink.write({"__key__": key, **files})
        return sink.shard


def batches_of(dataset, n: int, batch_size: int):
    import toy_data
    for start in range(0, n, batch_size):
        yield start, toy_data.get_batch(dataset, range(start, min(start + batch_size, n)))


def write_clips(cfg, options: ToolOptions) -> int:
    """Clips 0 .. n - 1 of the config's dataset (any dataset of toy_data's contract) into shards."""
    import toy_data
    dataset = toy_data.build_dataset(cfg.data, options.split)
    n = clip_count(cfg, dataset, options)

    def samples():
        for start, batch in batches_of(dataset, n, ENCODE_BATCH):
            for j in range(len(batch["video"])):
                meta = clip_metadata(cfg, batch, j, start + j, options.split)
                yield f"{start + j:09d}", {"npy": npy_bytes(to_uint8(batch["video"][j])),
                                           "json": json.dumps(meta).encode()}
    shards = write_samples(options.out, samples(), options.clips_per_shard)
    print(f"wrote {n} clips of {cfg.data.dataset} ({options.split}) into {shards} shards: {options.out}")
    return n


def encode_clips(cfg, options: ToolOptions) -> int:
    """Clips 0 .. n - 1 as normalised latents of the frozen autoencoder, into latent shards (W.A.L.T stage 2).

    The chunks of ``ENCODE_BATCH`` clips are the ones ``training/batches.py`` ``encode_dataset`` uses, so the
    latents are bit-identical to the in-memory cache a training run would compute.
    """
    import toy_data
    from .. import latent
    from ..hardware import pick_device
    path = cfg.data.autoencoder  # the config field, as train.py takes it
    if not path or not Path(path).is_file():
        raise UserError(f"--autoencoder={path!r} not found: pass a trained stage-1 checkpoint "
                        "(python train.py --config=walt_vae_physion writes one)")
    vae = latent.build_frozen_autoencoder(cfg)
    latent.load_autoencoder_weights(vae, str(path), cfg)
    device = pick_device(cfg.run.device)
    digest, signature = weights_hash(vae), latent_signature(cfg)
    vae.to(device)
    dataset = toy_data.build_dataset(cfg.data, options.split)
    n = clip_count(cfg, dataset, options)

    def samples():
        for start, batch in batches_of(dataset, n, ENCODE_BATCH):
            z = latent.encode(vae, batch["video"].to(device)).cpu()
            for j in range(len(z)):
                meta = {**clip_metadata(cfg, batch, j, start + j, options.split), "autoencoder": str(path),
                        "autoencoder_sha256": digest, "signature": signature, "latent_shape": list(z.shape[1:])}
                yield f"{start + j:09d}", {"latent.npy": npy_bytes(z[j].numpy()), "json": json.dumps(meta).encode()}
    shards = write_samples(options.out, samples(), options.clips_per_shard)
    print(f"encoded {n} clips into {shards} latent shards: {options.out} (train with --latent_shards=...)")
    return n


USAGE = """usage: python -m nano_videodiff.data.shards write|encode --config=PRESET [--key=value ...] --out=DIR/x-%06d.tar
  write:  clips of the config's dataset as WebDataset shards (uint8 .npy frames + .json metadata)
  encode: their normalised latents under the frozen autoencoder (--autoencoder=...), for --latent_shards"""


def main(argv=None) -> int:
    from ..training import presets
    from ..training.config import parse_into, split_args
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("write", "encode"):
        print(USAGE)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    command, rest = argv[0], argv[1:]
    values, wants_help = split_args(rest)
    tool = {k: values.pop(k) for k in list(values) if k in ToolOptions.__dataclass_fields__}
    options = parse_into(ToolOptions(), tool)
    if wants_help:
        print(USAGE)
        return 0
    if options.split not in ("train", "test"):
        raise UserError(f"--split must be train or test, got {options.split!r}")
    if not options.out:
        raise UserError("pass --out=DIR/shards-%06d.tar (where to write the shards)")
    cfg, _, _ = presets.resolve([f"--{k}={v}" for k, v in values.items()])
    cfg.data.autoencoder = cfg.data.autoencoder.format(out_dir=cfg.run.out_dir)
    (write_clips if command == "write" else encode_clips)(cfg, options)
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))  # user errors: "error: <message>", exit status 2 (errors.py)
