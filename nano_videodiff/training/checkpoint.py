"""Checkpoints that are safe to load and never half-written.

- Saved with ``torch.save`` to a temporary file in the same folder, fsynced, then renamed over the old one
  (``files.atomic_write``): a crash, a kill or a full disk mid-write leaves the previous checkpoint intact.
  A kill -9 leaves the temporary, which ``remove_orphans`` deletes at the next start.
- Loaded with ``torch.load(..., weights_only=True)``: only tensors and plain containers, never pickled code.
  So a checkpoint holds the config as a plain dict and RNG states as tensors. A damaged file (its zip
  checksums), a file of Python objects, or weights that are NaN are refused with a message of our own.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Dict

import torch
from torch import nn

from ..errors import MissingFile, UserError, WriteFailed
from ..files import atomic_write, process_is_gone, remove_orphans


def save_checkpoint(path, payload: Dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, lambda f: torch.save(payload, f))
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as "[enforce fail ...] unexpected pos"
        reason = getattr(e, "strerror", None) or "disk full?"
        before = "the previous checkpoint is intact" if path.exists() else "no checkpoint was written"
        raise WriteFailed(f"could not write {path} ({reason}); {before}") from e


def remove_stale_temporaries(path) -> None:
    """The temporaries of ``path`` whose writer was killed: ``files.remove_orphans``, and the older name
    ``.ckpt.pt.tmp-PID`` (of this folder's runs, which ran on this machine under the folder lock)."""
    path = Path(path)
    removed = remove_orphans(path)
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name.rpartition("-")[2]
        if pid.isdigit() and process_is_gone(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    if removed:
        print(f"removed {len(removed)} unfinished checkpoint file(s) of killed runs from {path.parent}")


def export_weights(path, out_path, dtype: torch.dtype = torch.float16, **extra) -> Dict[str, Any]:
    """A small, shareable copy of a training checkpoint: its config, step and EMA weights (the ones sampling
    uses) stored in ``dtype``, without the optimizer and RNG states; ``extra`` (e.g. metrics) is kept too.

    Floating-point tensors are cast to ``dtype`` (half precision halves the file); buffers that are not
    floating point stay as they are. ``models.load_model`` casts them back to float32 when it loads them.
    """
    ckpt = load_checkpoint(path)
    if "config" not in ckpt or "ema" not in ckpt:
        raise UserError(f"{path} is not a nano-videodiff training checkpoint (no config/EMA weights inside)")
    weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in ckpt["ema"].items()}
    payload = {"config": ckpt["config"], "step": ckpt["step"], "ema": weights, "exported_from": str(path), **extra}
    for key in ("latent_stats_fitted",):  # what loaders of an autoencoder checkpoint look for
        if key in ckpt:
            payload[key] = ckpt[key]
    save_checkpoint(out_path, payload)
    return payload


def load_checkpoint(path, map_location="cpu") -> Dict[str, Any]:
    """The dict in a checkpoint file, loaded with ``weights_only=True``; anything else is a UserError
    naming the file (never PyTorch's advice to pass ``weights_only=False``: that runs code from the file)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"no checkpoint at {path}. Train one with `python train.py --out_dir=DIR` "
                          "(it writes DIR/ckpt.pt), or pass the right path.")
    problem = _damage(path)
    if problem:
        raise UserError(f"{path} is not a readable checkpoint: {problem}; use another copy or an earlier "
                        "checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.findall(r"GLOBAL (\S+) was not an allowed global", str(e))
        what = f"Python objects ({', '.join(found)})" if found else "pickled Python data"
        raise UserError(f"{path} holds {what}, not only tensors and plain values: it was not written by "
                        "train.py, and loading it could run code from the file, so it is refused") from None
    except Exception as e:  # a pickle stream cut short, or bytes that are no pickle at all
        first_line = (str(e).strip().splitlines() or [""])[0][:160]
        reason = type(e).__name__ if "weights_only" in first_line or not first_line else first_line
        raise UserError(f"{path} is not a readable checkpoint ({reason}); use another copy or an earlier "
                        "checkpoint") from e
    if not isinstance(ckpt, dict):
        raise UserError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint (train.py writes a dict of "
                        "config, weights and training state)")
    return ckpt


def _damage(path: Path) -> str:
    """Why ``path`` cannot be a checkpoint ("" if it may be): empty, cut short, or bytes that do not match the
    CRC-32 checksums torch.save's zip format stores (a bit flip, which torch.load alone would not notice).
    torch.save writes them unless ``torch.serialization.set_crc32_options(False)``; we never turn them off."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "the file is empty"
    if head != b"PK\x03\x04":  # not a zip: the legacy torch.save format, or not torch at all
        return "" if head[:2] == b"\x80\x02" else "it does not begin like a file torch.save writes"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every member once: milliseconds for a toy checkpoint
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"it is cut short or damaged ({e})"
    return f"its part {bad} does not match its checksum (damaged on disk or in a copy)" if bad else ""


def clean_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Drop the key prefixes that torch.compile ('_orig_mod.') and DDP ('module.') add (whole name parts)."""
    from .distributed import strip_wrapper_prefixes
    return strip_wrapper_prefixes(state)


def load_model_state(model: nn.Module, state: Dict[str, torch.Tensor], what: str = "model", source="") -> None:
    """Strict load with an error that says what differs, instead of PyTorch's wall of keys; weights that are
    NaN or infinite (a diverged run) are refused, since everything sampled from them would be too."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"the {what} weights{f' in {source}' if source else ''} are not a dict of tensors")
    state = clean_state_dict(state)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        def show(keys):
            return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
        details = []
        if missing:
            details.append(f"missing {show(missing)}")
        if unexpected:
            details.append(f"unexpected {show(unexpected)}")
        if mismatched:
            details.append("shape mismatch " + show([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                                                     for k in mismatched]))
        raise UserError(f"the {what} weights in this checkpoint belong to a different architecture: "
                         + "; ".join(details) + ". Rebuild the model from the checkpoint's own config "
                         "(sample.py does), or train a new one.")
    model.load_state_dict(state)  # copies into the model's tensors: half-precision weights become float32
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]  # not buffers: masks
    if bad:                                                                              # may hold -inf
        raise UserError(f"the {what} weights{f' in {source}' if source else ''} hold NaN or infinite values "
                        f"({len(bad)} tensors, e.g. {bad[0]}): the run diverged. Use an earlier checkpoint, or "
                        "train again with a lower --lr")
