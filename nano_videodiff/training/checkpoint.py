"""Checkpoints that are safe to load and never half-written.

- Saved with ``torch.save`` to a temporary file in the same folder, then ``os.replace``d over the old one:
  a crash mid-write leaves the previous checkpoint intact (the rename is atomic on POSIX and Windows).
- Loaded with ``torch.load(..., weights_only=True)``: only tensors and plain containers, never pickled code.
  So a checkpoint holds the config as a plain dict and RNG states as tensors.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict

import torch
from torch import nn


def save_checkpoint(path, payload: Dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def export_weights(path, out_path, dtype: torch.dtype = torch.float16, **extra) -> Dict[str, Any]:
    """A small, shareable copy of a training checkpoint: its config, step and EMA weights (the ones sampling
    uses) stored in ``dtype``, without the optimizer and RNG states; ``extra`` (e.g. metrics) is kept too.

    Floating-point tensors are cast to ``dtype`` (half precision halves the file); buffers that are not
    floating point stay as they are. ``models.load_model`` casts them back to float32 when it loads them.
    """
    ckpt = load_checkpoint(path)
    if "config" not in ckpt or "ema" not in ckpt:
        raise ValueError(f"{path} is not a nano-videodiff training checkpoint (no config/EMA weights inside)")
    weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in ckpt["ema"].items()}
    payload = {"config": ckpt["config"], "step": ckpt["step"], "ema": weights, "exported_from": str(path), **extra}
    for key in ("latent_stats_fitted",):  # what loaders of an autoencoder checkpoint look for
        if key in ckpt:
            payload[key] = ckpt[key]
    save_checkpoint(out_path, payload)
    return payload


def load_checkpoint(path, map_location="cpu") -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}. Train one with `python train.py --out_dir=DIR` "
                                "(it writes DIR/ckpt.pt), or pass the right path.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt file, or something that is not a safe checkpoint
        raise ValueError(f"could not load {path} as a nano-videodiff checkpoint "
                         f"(weights_only=True): {e}") from e


def clean_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Drop the key prefixes that torch.compile ('_orig_mod.') and DDP ('module.') add (whole name parts)."""
    from .distributed import strip_wrapper_prefixes
    return strip_wrapper_prefixes(state)


def load_model_state(model: nn.Module, state: Dict[str, torch.Tensor], what: str = "model") -> None:
    """Strict load with an error that says what differs, instead of PyTorch's wall of keys."""
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
        raise ValueError(f"the {what} weights in this checkpoint belong to a different architecture: "
                         + "; ".join(details) + ". Rebuild the model from the checkpoint's own config "
                         "(sample.py does), or train a new one.")
    model.load_state_dict(state)  # copies into the model's tensors: half-precision weights become float32
