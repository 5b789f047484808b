"""Tests for W.A.L.T's window attention, identity mask and AdaLN-LoRA (nano_videodiff/backbones/window_attention.py)."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import gen, randomise

from nano_videodiff.backbones.layers import Attention
from nano_videodiff.backbones.window_attention import (AdaLNLoRA, WindowAttentionLayer, adaln_lora_parameters,
                                             attention_pairs, resolve_window, window_merge, window_partition,
                                             window_self_attention)


def grid_tokens(b, t, h, w, d, seed=0):
    return torch.randn(b, t, h, w, d, generator=gen(seed))


def random_attention(dim=8, heads=2, qk_norm=True, seed=0):
    torch.manual_seed(seed)
    attn = randomise(Attention(dim, heads, qk_norm), seed=seed, std=0.3)
    if qk_norm:  # gains away from 1 so that a reference that forgot them would fail
        with torch.no_grad():
            attn.q_gain.copy_(torch.rand(attn.head_dim, generator=gen(seed + 1)) + 0.5)
            attn.k_gain.copy_(torch.rand(attn.head_dim, generator=gen(seed + 2)) + 0.5)
    return attn


def reference_self_attention(attn, tokens):
    """Full self-attention over tokens (B, N, D) from the module's weights: plain matmuls, softmax, float64."""
    h, d = attn.heads, attn.head_dim
    x = tokens.double()
    q = x @ attn.to_q.weight.double().T + attn.to_q.bias.double()
    kv = x @ attn.to_kv.weight.double().T + attn.to_kv.bias.double()
    k, v = kv[..., :h * d], kv[..., h * d:]
    split = lambda z: z.reshape(*z.shape[:-1], h, d).transpose(-2, -3)  # noqa: E731  (B, h, N, d)
    q, k, v = split(q), split(k), split(v)
    if attn.qk_norm:
        q = q / torch.sqrt(q.pow(2).mean(-1, keepdim=True)) * attn.q_gain.double()
        k = k / torch.sqrt(k.pow(2).mean(-1, keepdim=True)) * attn.k_gain.double()
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    out = (weights @ v).transpose(-2, -3).reshape(*tokens.shape[:-1], h * d)
    return out @ attn.proj.weight.double().T + attn.proj.bias.double()


# Partition and merge -----------------------------------------------------------------------------------------

CASES = [  # (T, H, W), window (0 = whole axis)
    ((4, 6, 8), (2, 3, 4)), ((5, 4, 4), (5, 2, 2)), ((3, 4, 6), (0, 2, 3)), ((2, 4, 4), (1, 0, 0)),
    ((3, 2, 2), (0, 0, 0)), ((1, 3, 5), (1, 1, 1)),
]


@pytest.mark.parametrize("grid,window", CASES)
def test_partition_then_merge_is_identity(grid, window):
    x = grid_tokens(2, *grid, 3)
    windows = window_partition(x, window)
    wt, wh, ww = resolve_window(window, grid)
    assert windows.shape == (2 * math.prod(grid) // (wt * wh * ww), wt * wh * ww, 3)
    assert torch.equal(window_merge(windows, window, grid), x)
    other = torch.randn(windows.shape, generator=gen(1))
    assert torch.equal(window_partition(window_merge(other, window, grid), window), other)


def test_partition_layout():
    """Window k = ((b * nt + it) * nh + ih) * nw + iw holds x[b, it wt:(it+1) wt, ih wh:.., iw ww:..] row-major."""
    grid, (wt, wh, ww) = (4, 6, 4), (2, 3, 2)
    x = grid_tokens(2, *grid, 5)
    windows = window_partition(x, (wt, wh, ww))
    nt, nh, nw = 4 // wt, 6 // wh, 4 // ww
    for b, it, ih, iw in itertools.product(range(2), range(nt), range(nh), range(nw)):
        k = ((b * nt + it) * nh + ih) * nw + iw
        block = x[b, it * wt:(it + 1) * wt, ih * wh:(ih + 1) * wh, iw * ww:(iw + 1) * ww]
        assert torch.equal(windows[k], block.reshape(-1, 5))


def test_non_divisible_window_raises_a_clear_error():
    x = grid_tokens(1, 4, 6, 6, 2)
    with pytest.raises(ValueError, match=r"frames 4 is not divisible by 3.*walt_window_t"):
        window_partition(x, (3, 2, 2))
    with pytest.raises(ValueError, match=r"height 6 is not divisible by 4; width 6 is not divisible by 4"):
        window_partition(x, (0, 4, 4))
    with pytest.raises(ValueError, match="non-negative"):
        resolve_window((1, -2, 2), (4, 6, 6))


def test_attention_pairs_counts_same_window_pairs():
    """N x (tokens per window), checked against counting the pairs (i, j) that share a window."""
    for grid, window in CASES:
        wt, wh, ww = resolve_window(window, grid)
        coords = torch.tensor(list(itertools.product(*(range(g) for g in grid))))  # (N, 3)
        window_id = coords // torch.tensor([wt, wh, ww])
        same = (window_id[:, None, :] == window_id[None, :, :]).all(-1)
        assert attention_pairs(grid, window) == int(same.sum())
    assert attention_pairs((5, 16, 16), (5, 8, 8)) * 4 == attention_pairs((5, 16, 16), (0, 0, 0))


# Window attention against independent references ----------------------------------------------------------

@pytest.mark.parametrize("qk_norm", [True, False])
def test_window_covering_the_grid_is_full_attention(qk_norm):
    attn = random_attention(qk_norm=qk_norm)
    x = grid_tokens(2, 3, 2, 4, 8, seed=1)
    expected = reference_self_attention(attn, x.flatten(1, 3)).reshape(x.shape)
    for window in [(0, 0, 0), (3, 2, 4)]:
        out = window_self_attention(attn, x, window)
        torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_spatial_window_is_per_frame_attention():
    attn = random_attention(seed=2)
    x = grid_tokens(2, 3, 2, 4, 8, seed=3)
    layer = WindowAttentionLayer(8, 2, "spatial")
    assert layer.window == (1, 0, 0)
    out = window_self_attention(attn, x, layer.window)
    for t in range(3):  # each frame attends within itself only
        expected = reference_self_attention(attn, x[:, t].flatten(1, 2)).reshape(x[:, t].shape)
        torch.testing.assert_close(out[:, t].double(), expected, rtol=1e-5, atol=1e-5)


def test_spatiotemporal_windows_match_per_window_reference():
    """Each 2x2x2 window, cut out by slicing, attended to on its own, gives the layer's output there."""
    attn = random_attention(seed=4)
    x = grid_tokens(2, 4, 4, 6, 8, seed=5)
    out = window_self_attention(attn, x, (2, 2, 2))
    for it, ih, iw in itertools.product(range(2), range(2), range(3)):
        region = (slice(None), slice(2 * it, 2 * it + 2), slice(2 * ih, 2 * ih + 2), slice(2 * iw, 2 * iw + 2))
        expected = reference_self_attention(attn, x[region].reshape(2, 8, 8)).reshape(x[region].shape)
        torch.testing.assert_close(out[region].double(), expected, rtol=1e-5, atol=1e-5)


def test_layer_is_prenorm_modulated_gated_residual():
    """x + gate * WindowAttn(LN(x) * (1 + scale) + shift), written out with the full-attention reference."""
    torch.manual_seed(0)
    layer = WindowAttentionLayer(8, 2, "spatiotemporal", window=(0, 0, 0))
    layer.attn = random_attention(seed=6)
    x = grid_tokens(2, 2, 2, 2, 8, seed=7)
    shift, scale, gate = (torch.randn(2, 1, 1, 1, 8, generator=gen(s)) for s in (8, 9, 10))
    normed = F.layer_norm(x, (8,), eps=1e-6) * (1 + scale) + shift
    expected = x.double() + gate.double() * reference_self_attention(layer.attn, normed.flatten(1, 3)).reshape(x.shape)
    torch.testing.assert_close(layer(x, shift, scale, gate).double(), expected, rtol=1e-5, atol=1e-5)


# The identity mask for images (Sec. 4.2) ------------------------------------------------------------------

def mixed_batch_layer(kind, seed=11):
    torch.manual_seed(seed)
    layer = randomise(WindowAttentionLayer(8, 2, kind, window=(0, 2, 2)), seed=seed, std=0.3)
    x = grid_tokens(3, 3, 4, 4, 8, seed=seed + 1)
    mods = [torch.randn(3, 1, 1, 1, 8, generator=gen(seed + k)) for k in (2, 3, 4)]
    is_image = torch.tensor([False, True, False])
    return layer, x, mods, is_image


def test_images_pass_a_spatiotemporal_layer_bit_exactly():
    layer, x, (shift, scale, gate), is_image = mixed_batch_layer("spatiotemporal")
    for args in [(shift, scale, gate), (None, None, None)]:
        out = layer(x, *args, is_image=is_image)
        assert torch.equal(out[1], x[1])  # the image: exactly as it entered
        assert (out[0] - x[0]).abs().min() > 0 and (out[2] - x[2]).abs().min() > 0  # the videos: changed
        # the videos' results are those of a batch without the image
        videos = layer(x[[0, 2]], *(a[[0, 2]] if a is not None else None for a in args))
        torch.testing.assert_close(out[[0, 2]], videos, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="is_image"):
        layer(x, is_image=torch.tensor([0, 1, 0]))


def test_spatial_layers_process_images():
    """The identity is for the spatiotemporal layers only: spatial layers see each image frame alone."""
    layer, x, (shift, scale, gate), is_image = mixed_batch_layer("spatial")
    out = layer(x, shift, scale, gate, is_image=is_image)
    assert torch.equal(out, layer(x, shift, scale, gate))  # is_image plays no role
    assert (out[1] - x[1]).abs().min() > 0


# AdaLN-LoRA (Eq. 3) ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dim,depth,rank", [(8, 1, 2), (8, 5, 2), (16, 4, 3), (12, 6, 0), (8, 3, 0)])
def test_adaln_lora_parameter_count_matches_eq3(dim, depth, rank):
    module = AdaLNLoRA(dim, depth, rank)
    assert sum(p.numel() for p in module.parameters()) == adaln_lora_parameters(dim, depth, rank)


def test_adaln_lora_parameter_formula_reproduces_the_papers_numbers():
    """Sec. 4.3: a separate adaLN in each of ViT-g's 40 blocks (d = 1408) costs 475M (biases aside), while
    AdaLN-LoRA at r = 2 needs about 12M; Table 4 vs Table 3d: W.A.L.T-L (24 x 1024) with separate adaLN is
    458M and with r = 2 is 313M, a 145M difference."""
    assert abs(adaln_lora_parameters(1408, 40, 0) / 475e6 - 1) < 0.005
    assert 11.5e6 < adaln_lora_parameters(1408, 40, 2) < 13e6
    saved = adaln_lora_parameters(1024, 24, 0) - adaln_lora_parameters(1024, 24, 2)
    assert abs(saved / 145e6 - 1) < 0.01


@pytest.mark.parametrize("rank", [2, 0])
def test_adaln_lora_follows_eq3(rank):
    torch.manual_seed(0)
    module = randomise(AdaLNLoRA(6, 4, rank), seed=1)
    c = torch.randn(3, 6, generator=gen(2))
    h = F.silu(c).double()
    out = module(c).double()
    assert out.shape == (4, 3, 36)
    a1 = h @ module.shared.weight.double().T + module.shared.bias.double()  # A_1 = MLP(c)
    torch.testing.assert_close(out[0], a1, rtol=1e-5, atol=1e-6)
    for i in range(1, 4):
        if rank:  # A_i = A_1 + W_b^i W_a^i c
            expected = a1 + h @ module.lora_b[i - 1].double() @ module.lora_a[i - 1].double()
        else:     # a separate adaLN
            expected = h @ module.weight[i - 1].double() + module.bias[i - 1].double()
        torch.testing.assert_close(out[i], expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out[1], out[2])  # blocks are modulated differently


def test_adaln_lora_starts_at_zero_and_trains():
    module = AdaLNLoRA(6, 3, 2)
    c = torch.randn(2, 6, generator=gen(3))
    out = module(c)
    assert torch.all(out == 0)
    out.mul(torch.randn(out.shape, generator=gen(4))).sum().backward()
    assert module.lora_a.grad.abs().sum() > 0 and module.shared.weight.grad.abs().sum() > 0
