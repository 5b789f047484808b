"""Window attention, the identity mask for images, and AdaLN-LoRA: the ideas of W.A.L.T's transformer
(Gupta et al. 2023, "Photorealistic Video Generation with Diffusion Models", arXiv 2312.06662,
Sec. 4.2-4.3 and Eq. 3). The backbone that stacks them is ``walt.py``.

Tokens live on a grid ``(B, T, H, W, D)``: T latent frames of H x W patch tokens of width D. Full
self-attention over all N = T H W tokens costs N^2 query-key pairs per layer. W.A.L.T alternates two
cheaper layers (Sec. 4.2):

- spatial window (SW), window ``1 x H x W``: a whole frame. T (H W)^2 pairs. Images and videos alike.
- spatiotemporal window (STW), window ``(1+t) x h' x w'``: all latent frames of a small spatial tile (the
  paper: 5 x 8 x 8 on a 5 x 16 x 16 latent, i.e. 4 windows). N (T h' w') pairs.

Windows are non-overlapping (no shifted windows in the paper). Both layers are one reshape:
``window_partition`` cuts the grid into windows and stacks them along the batch dimension, one call of
``layers.Attention`` (SDPA) attends within all windows at once, ``window_merge`` puts every token back.
A window size of 0 means "the whole extent" of that axis (so ``(0, 0, 0)`` is full attention).

Identity mask for images (Sec. 4.2): "For images, we simply use an identity attention mask ensuring that
the value embeddings corresponding to the image frame latents are passed through the layer as is."
Read literally, an identity (diagonal) attention mask lets each image token attend only to itself, so the
attention returns its own value vector ``v_i`` unchanged; the value/output projections and the residual
update would still change the token. What the mask is *for* is that nothing flows between the frames of
an image batch (or from a video) in the STW layers, so one batch can hold images and videos. We implement
the stronger, exactly testable reading, "passed through the layer as is": for a sample flagged in
``cond.is_image`` the whole residual STW sub-layer is the identity, ``x_out = x`` bit for bit
(``torch.where`` on the residual update, so no computation mixes in and no (N x N) mask is built, which
would also block the fused attention kernels). The MLP that follows is per token and still runs on images.

AdaLN-LoRA (Sec. 4.3, Eq. 3): every block i needs A_i = (gamma_1, gamma_2, beta_1, beta_2, alpha_1,
alpha_2), 6 vectors of width d, from the conditioning c. A separate adaLN per block costs
num_blocks x d x 6d parameters; W.A.L.T shares one and adds a rank-r correction per block:
    A_1 = MLP(c),    A_i = A_1 + W_b^i W_a^i c  (i != 1),   W_b^i in R^{d x r},  W_a^i in R^{r x 6d}.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .layers import Attention, modulate
from ..errors import UserError

Window = Tuple[int, int, int]
KINDS = ("spatial", "spatiotemporal")


# ----------------------------------------------------------------------------------------------
# Windows: partition and merge (Sec. 4.2)
# ----------------------------------------------------------------------------------------------

def resolve_window(window: Sequence[int], grid: Sequence[int]) -> Window:
    """``(wt, wh, ww)`` with every 0 replaced by the grid's extent ``(T, H, W)`` on that axis."""
    if len(window) != 3 or any(int(w) < 0 for w in window):
        raise UserError(f"a window is 3 non-negative sizes (frames, height, width); got {tuple(window)}")
    return tuple(int(g) if int(w) == 0 else int(w) for w, g in zip(window, grid))


def check_window(window: Sequence[int], grid: Sequence[int], what: str = "window") -> Window:
    """Resolve ``window`` on ``grid`` (T, H, W) and fail, saying what to change, unless it tiles the grid."""
    resolved = resolve_window(window, grid)
    bad = [f"{axis} {g} is not divisible by {w}" for axis, g, w in zip(("frames", "height", "width"), grid, resolved)
           if g % w]
    if bad:
        raise UserError(f"the token grid {'x'.join(map(str, grid))} (frames x height x width) cannot be cut into "
                        f"{what}s of {'x'.join(map(str, resolved))}: {'; '.join(bad)}. Choose window sizes that "
                        "divide the grid (--walt_window_t/--walt_window_h/--walt_window_w; 0 = the whole axis) "
                        "or change the number of frames / resolution / patch size")
    return resolved


def window_partition(tokens: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """(B, T, H, W, D) -> (B * num_windows, wt * wh * ww, D): non-overlapping windows stacked on the batch.

    Windows are ordered (batch, window along T, along H, along W); inside a window tokens are row-major in
    (t, h, w). ``window`` may contain 0 (= whole axis).
    """
    wt, wh, ww = check_window(window, tokens.shape[1:4])
    return rearrange(tokens, "b (nt wt) (nh wh) (nw ww) d -> (b nt nh nw) (wt wh ww) d", wt=wt, wh=wh, ww=ww)


def window_merge(windows: torch.Tensor, window: Sequence[int], grid: Sequence[int]) -> torch.Tensor:
    """Inverse of ``window_partition``: (B * num_windows, wt * wh * ww, D) -> (B, T, H, W, D), grid = (T, H, W)."""
    wt, wh, ww = check_window(window, grid)
    t, h, w = grid
    return rearrange(windows, "(b nt nh nw) (wt wh ww) d -> b (nt wt) (nh wh) (nw ww) d",
                     nt=t // wt, nh=h // wh, nw=w // ww, wt=wt, wh=wh, ww=ww)


def window_self_attention(attn: Attention, tokens: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """Self-attention restricted to each window: partition, one batched ``attn`` call, merge. (B, T, H, W, D)."""
    out = attn(window_partition(tokens, window))
    return window_merge(out, window, tokens.shape[1:4])


def attention_pairs(grid: Sequence[int], window: Sequence[int]) -> int:
    """Query-key pairs of one window-attention layer on one sample: N tokens x (tokens per window)."""
    wt, wh, ww = check_window(window, grid)
    return math.prod(grid) * wt * wh * ww


class WindowAttentionLayer(nn.Module):
    """Pre-norm residual window self-attention: ``x + gate * WindowAttn(modulate(LN(x), shift, scale))``.

    kind "spatial": window 1 x H x W (each frame on its own, Sec. 4.2 SW).
    kind "spatiotemporal": window ``window`` = (frames, height, width) in tokens, 0 = whole axis (STW);
    samples flagged in ``is_image`` leave this layer exactly as they entered (the identity mask, see the
    module docstring). ``self.window`` may be changed after construction (the benchmarks do, for full attention).
    """

    def __init__(self, dim: int, heads: int, kind: str, window: Sequence[int] = (0, 4, 4), qk_norm: bool = True):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown window kind {kind!r}; choose from {', '.join(KINDS)}")
        self.kind = kind
        self.window = (1, 0, 0) if kind == "spatial" else tuple(window)
        resolve_window(self.window, (1, 1, 1))  # validates the sizes
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads, qk_norm)

    def forward(self, x: torch.Tensor, shift: Optional[torch.Tensor] = None, scale: Optional[torch.Tensor] = None,
                gate: Optional[torch.Tensor] = None, is_image: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, T, H, W, D); shift/scale/gate broadcastable to x (e.g. (B, 1, 1, 1, D)) or None; is_image (B,)."""
        h = self.norm(x)
        if shift is not None:
            h = modulate(h, shift, scale)
        update = window_self_attention(self.attn, h, self.window)
        out = x + (update if gate is None else gate * update)
        if self.kind == "spatiotemporal" and is_image is not None:
            if is_image.shape != (x.shape[0],) or is_image.dtype != torch.bool:
                raise ValueError(f"is_image must be a (B,) = ({x.shape[0]},) bool tensor; got "
                                 f"{tuple(is_image.shape)} {is_image.dtype}")
            out = torch.where(is_image.to(x.device)[:, None, None, None, None], x, out)  # identity for images
        return out


# ----------------------------------------------------------------------------------------------
# AdaLN-LoRA (Sec. 4.3, Eq. 3)
# ----------------------------------------------------------------------------------------------

def adaln_lora_parameters(dim: int, depth: int, rank: int, num_vectors: int = 6) -> int:
    """Parameters of the modulation of ``depth`` blocks by Eq. 3 (biases included).

    One adaLN ("MLP(c)": a linear layer d -> 6d with bias) has d * 6d + 6d parameters. Rank 0: one per block.
    Rank r: one shared, plus W_b^i (d x r) and W_a^i (r x 6d) for each of the depth - 1 other blocks.
    """
    full = dim * num_vectors * dim + num_vectors * dim
    if rank == 0:
        return depth * full
    return full + (depth - 1) * rank * (dim + num_vectors * dim)


class AdaLNLoRA(nn.Module):
    """Modulation vectors of every block from one conditioning vector c (B, d): returns (depth, B, 6d).

    A_1 = W SiLU(c) + b (adaLN's MLP, as DiT); for i > 1, rank r > 0: A_i = A_1 + (SiLU(c) W_b^i) W_a^i;
    rank 0: A_i = W_i SiLU(c) + b_i, a separate full adaLN per block (the baseline of Table 4).
    Eq. 3 writes the low-rank term on c itself; we feed it the same SiLU(c) as the shared linear layer, so
    that A_i is exactly that layer with a rank-r update of its weight (LoRA's form). Same parameter count.
    Zero-initialised (adaLN-Zero): W, b and every W_a^i (W_i, b_i at rank 0) are 0, so every A_i starts at 0
    and every gated branch starts as the identity; W_b^i is random so W_a^i gets gradients at once.
    """

    def __init__(self, dim: int, depth: int, rank: int = 2, num_vectors: int = 6):
        super().__init__()
        if depth < 1 or rank < 0:
            raise ValueError(f"AdaLNLoRA needs depth >= 1 and rank >= 0; got depth={depth}, rank={rank}")
        self.dim, self.depth, self.rank, self.num_vectors = dim, depth, rank, num_vectors
        width = num_vectors * dim
        self.shared = nn.Linear(dim, width)  # A_1's MLP
        nn.init.zeros_(self.shared.weight)
        nn.init.zeros_(self.shared.bias)
        others = depth - 1
        if rank > 0:  # the paper's names: W_b^i (d x r) projects c down, W_a^i (r x 6d) back up
            self.lora_b = nn.Parameter(torch.randn(others, dim, rank) / math.sqrt(dim))
            self.lora_a = nn.Parameter(torch.zeros(others, rank, width))
        else:
            self.weight = nn.Parameter(torch.zeros(others, dim, width))
            self.bias = nn.Parameter(torch.zeros(others, width))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        h = F.silu(c)
        first = self.shared(h)  # (B, 6d)
        if self.depth == 1:
            return first[None]
        if self.rank > 0:
            rest = first + (h @ self.lora_b) @ self.lora_a  # (depth-1, B, r) @ (depth-1, r, 6d)
        else:
            rest = h @ self.weight + self.bias[:, None]  # (depth-1, B, 6d)
        return torch.cat([first[None], rest], 0)
