"""Tests for the VDT backbone (nano_videodiff/backbones/vdt.py) and the shared layers (nano_videodiff/backbones/layers.py)."""
import math

import pytest
import torch
from helpers import gen, randomise, video

from nano_videodiff.backbones import layers
from nano_videodiff.conditioning import DROPPED_LABEL, Cond
from nano_videodiff.backbones.layers import Attention, attention, patchify, unpatchify
from nano_videodiff.backbones.vdt import VDT, VDTBlock



def small_vdt(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(in_channels=3, patch_size=2, dim=32, depth=2, heads=2, num_classes=0)
    cfg.update(kw)
    return VDT(**cfg)




# Backbone: shapes, init, gradients ---------------------------------------------------------------------------

SHAPES = [  # (T, H, W, patch)
    (1, 8, 8, 2), (3, 8, 12, 2), (4, 12, 8, 4), (2, 4, 16, 4), (5, 6, 10, 2),
]


@pytest.mark.parametrize("t,h,w,p", SHAPES)
def test_output_shape_and_zero_output_at_init(t, h, w, p):
    model = small_vdt(patch_size=p)
    x = video(2, t, 3, h, w)
    out = model(x, torch.tensor([-0.5, 0.7]), Cond())[0]
    assert out.shape == x.shape
    assert torch.all(out == 0)  # zero-initialised output layer
    randomise(model)
    out = model(x, torch.tensor([-0.5, 0.7]), Cond())[0]
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().sum() > 0


def test_blocks_start_as_identity():
    """adaLN-Zero: every gate is 0 at init, so each block returns its input unchanged."""
    torch.manual_seed(0)
    block = VDTBlock(dim=16, heads=2)
    x = torch.randn(2, 3, 5, 16)
    c = torch.randn(2, 16)
    assert torch.equal(block(x, c), x)


def test_block_factorises_time_and_space():
    """Temporal attention mixes frames only at the same patch position; spatial attention mixes patches
    only within a frame. Perturb one token and see where the block's output changes."""
    torch.manual_seed(0)
    block = randomise(VDTBlock(dim=16, heads=2), seed=1)
    x = torch.randn(1, 3, 4, 16)
    c = torch.randn(1, 16)
    ada = block.ada.linear
    dim = 16

    def output_with_gates(keep):  # keep: which of ("t", "s") residual branches stay switched on
        with torch.no_grad():
            saved = ada.weight.clone(), ada.bias.clone()
            for k, gate in (("t", 2), ("s", 5), ("m", 8)):  # chunk index of each gate
                if k not in keep:
                    ada.weight[gate * dim:(gate + 1) * dim] = 0
                    ada.bias[gate * dim:(gate + 1) * dim] = 0
            y0 = block(x, c)
            x1 = x.clone()
            x1[0, 0, 0] += 1.0  # perturb frame 0, patch 0
            y1 = block(x1, c)
            ada.weight.copy_(saved[0]), ada.bias.copy_(saved[1])
        return (y1 - y0).abs().sum(-1)[0]  # (T, N): where the output moved

    moved = output_with_gates({"t"})
    assert (moved[:, 0] > 0).all()  # every frame at patch 0
    assert torch.all(moved[:, 1:] == 0)  # no other patch
    moved = output_with_gates({"s"})
    assert (moved[0, :] > 0).all()  # every patch of frame 0
    assert torch.all(moved[1:, :] == 0)  # no other frame


@pytest.mark.parametrize("conditioning", ["concat", "adaln", "cross_attention"])
def test_gradients_reach_every_parameter(conditioning):
    """With zero-init output and adaLN-Zero, the first backward only reaches the output layer (every other
    gradient is exactly 0, but present). After a few optimiser steps the gates open and every parameter
    gets a non-zero, finite gradient. Labels and a known mask are given so that every parameter is used."""
    model = small_vdt(num_classes=3, conditioning=conditioning)
    b, t, h, w = 2, 3, 4, 6
    x = video(b, t, 3, h, w, seed=1)
    target = video(b, t, 3, h, w, seed=2)
    known = torch.zeros(b, t, 1, h, w, dtype=torch.bool)
    known[:, 0] = True
    cond = Cond(labels=torch.tensor([0, DROPPED_LABEL]), frame_interval=torch.tensor([0.1, 0.0]), known=known)
    c_noise = torch.tensor([-0.3, 0.4])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    names = [n for n, _ in model.named_parameters()]

    for step in range(5):
        opt.zero_grad(set_to_none=True)
        loss = ((model(x, c_noise, cond)[0] - target) ** 2).mean()
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, (step, name)
            assert torch.isfinite(p.grad).all(), (step, name)
        nonzero = {n for n, p in model.named_parameters() if p.grad.abs().sum() > 0}
        if step == 0:
            assert nonzero == {"final.weight", "final.bias"}
        opt.step()
    assert nonzero == set(names), sorted(set(names) - nonzero)


def some_known_masks(b, t, h, w):
    known = torch.zeros(b, t, 1, h, w, dtype=torch.bool)
    known[0, :2] = True  # sample 0: two context frames
    known[1, 0, :, :2, :] = True  # sample 1: the top rows of frame 0
    return known  # sample 2: nothing known


@pytest.mark.parametrize("conditioning", ["concat", "adaln", "cross_attention"])
def test_samples_in_a_batch_are_independent(conditioning):
    """Each video's output depends on its own input, mask and labels only (no mixing across the batch)."""
    model = randomise(small_vdt(num_classes=2, conditioning=conditioning), seed=8, std=0.15)
    b, t, h, w = 3, 3, 4, 4
    x = video(b, t, 3, h, w, seed=9)
    known = some_known_masks(b, t, h, w)
    labels = torch.tensor([0, 1, DROPPED_LABEL])
    c_noise = torch.tensor([-0.5, 0.1, 0.6])
    out = model(x, c_noise, Cond(labels=labels, known=known))[0]
    for i in range(b):
        alone = model(x[i:i + 1], c_noise[i:i + 1], Cond(labels=labels[i:i + 1], known=known[i:i + 1]))[0]
        torch.testing.assert_close(alone[0], out[i], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("conditioning", ["concat", "adaln", "cross_attention"])
def test_known_content_reaches_generated_positions(conditioning):
    model = randomise(small_vdt(conditioning=conditioning), seed=10, std=0.15)
    b, t, h, w = 1, 3, 4, 4
    x = video(b, t, 3, h, w, seed=11)
    known = torch.zeros(b, t, 1, h, w, dtype=torch.bool)
    known[:, 0] = True
    x2 = x.clone()
    x2[:, 0] += 1.0  # change only the given frame
    a = model(x, torch.zeros(1), Cond(known=known))[0]
    b_ = model(x2, torch.zeros(1), Cond(known=known))[0]
    assert (a[:, 1:] - b_[:, 1:]).abs().max() > 1e-3  # the generated frames see the context
    fresh = small_vdt(conditioning=conditioning)  # every mode starts at exactly zero output
    assert torch.all(fresh(x, torch.zeros(1), Cond(known=known))[0] == 0)


@pytest.mark.parametrize("conditioning", ["adaln", "cross_attention"])
def test_without_known_content_the_context_path_is_silent(conditioning):
    """Only known patches are context: with nothing known, the context embedding must not matter
    (cross-attention then reads the learned null token only; adaLN pools nothing)."""
    model = randomise(small_vdt(conditioning=conditioning), seed=12, std=0.15)
    x = video(2, 3, 3, 4, 4, seed=13)
    nothing = torch.zeros(2, 3, 1, 4, 4, dtype=torch.bool)
    a = model(x, torch.zeros(2), Cond(known=nothing))[0]
    with torch.no_grad():
        model.context_embed.weight.add_(1.0), model.context_embed.bias.add_(1.0)
    b = model(x, torch.zeros(2), Cond(known=nothing))[0]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    some = nothing.clone()
    some[:, 0] = True  # ... but with known content it does
    c = model(x, torch.zeros(2), Cond(known=some))[0]
    with torch.no_grad():
        model.context_embed.weight.sub_(1.0), model.context_embed.bias.sub_(1.0)
    d = model(x, torch.zeros(2), Cond(known=some))[0]
    assert not torch.allclose(c, d, atol=1e-4)


def test_unknown_conditioning_name_raises():
    with pytest.raises(ValueError, match="conditioning"):
        small_vdt(conditioning="film")


def test_runs_under_bf16_autocast():
    model = randomise(small_vdt(), seed=3, std=0.1)
    x = video(2, 2, 3, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, torch.zeros(2), Cond())[0]
    assert out.shape == x.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), model(x, torch.zeros(2), Cond())[0], rtol=0.1, atol=0.1)


# Conditioning --------------------------------------------------------------------------------------------

def test_labels_change_the_output():
    model = randomise(small_vdt(num_classes=4), seed=4)
    x = video(1, 2, 3, 4, 4).expand(3, -1, -1, -1, -1)
    out = model(x, torch.zeros(3), Cond(labels=torch.tensor([0, 3, DROPPED_LABEL])))[0]
    assert torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1], atol=1e-4)
    assert not torch.allclose(out[0], out[2], atol=1e-4)
    assert not torch.allclose(out[1], out[2], atol=1e-4)
    # the same label gives the same output (the differences above come from the labels alone)
    again = model(x[:1], torch.zeros(1), Cond(labels=torch.tensor([3])))[0]
    torch.testing.assert_close(again[0], out[1], rtol=1e-5, atol=1e-5)


def test_dropped_label_uses_its_own_learned_row():
    emb = randomise(layers.LabelEmbedder(5, 8), seed=5)
    got = emb(torch.tensor([DROPPED_LABEL, 0, 4]))
    assert torch.equal(got[0], emb.table.weight[5])  # the extra row after the 5 classes
    assert torch.equal(got[1], emb.table.weight[0])
    assert torch.equal(got[2], emb.table.weight[4])


def capture_conditioning(model, x, c_noise, cond):
    """The conditioning vector c that drives adaLN, read from the input of the final modulation."""
    seen = {}
    handle = model.final_ada.register_forward_hook(lambda mod, inp, out: seen.update(c=inp[0].detach()))
    model(x, c_noise, cond)[0]
    handle.remove()
    return seen["c"]


def test_frame_interval_zero_gives_same_conditioning_for_any_T():
    model = randomise(small_vdt(), seed=6)
    c_noise = torch.tensor([0.2, -0.1])
    zero = torch.zeros(2)
    cs = [capture_conditioning(model, video(2, t, 3, 4, 4, seed=t), c_noise, Cond(frame_interval=zero))
          for t in (1, 2, 5)]
    assert torch.equal(cs[0], cs[1]) and torch.equal(cs[0], cs[2])
    # no interval given means interval 0; a real interval changes c
    c_none = capture_conditioning(model, video(2, 3, 3, 4, 4), c_noise, Cond())
    assert torch.equal(c_none, cs[0])
    c_fps = capture_conditioning(model, video(2, 3, 3, 4, 4), c_noise, Cond(frame_interval=torch.tensor([1 / 24] * 2)))
    assert not torch.allclose(c_fps, cs[0])


def test_known_mask_reaches_the_network():
    model = randomise(small_vdt(), seed=7)
    x = video(1, 3, 3, 4, 4)
    known = torch.zeros(1, 3, 1, 4, 4, dtype=torch.bool)
    known[:, 0] = True
    a = model(x, torch.zeros(1), Cond())[0]
    b = model(x, torch.zeros(1), Cond(known=known))[0]
    assert not torch.allclose(a, b)


# Layers: patches -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p,c,h,w", [(1, 3, 4, 6), (2, 3, 8, 6), (4, 1, 8, 12)])
def test_patchify_unpatchify_are_inverses(p, c, h, w):
    x = video(2, 3, c, h, w)
    tokens = patchify(x, p)
    assert tokens.shape == (2, 3, (h // p) * (w // p), c * p * p)
    assert torch.equal(unpatchify(tokens, p, c, h, w), x)
    other = torch.randn(tokens.shape, generator=gen(1))
    assert torch.equal(patchify(unpatchify(other, p, c, h, w), p), other)


def test_patchify_layout():
    """Token n = i * (W/p) + j of frame t holds the pixels x[t, :, i p:(i+1) p, j p:(j+1) p] (row-major)."""
    p, c, h, w = 2, 3, 4, 6
    x = video(1, 2, c, h, w)
    tokens = patchify(x, p)
    for t in range(2):
        for i in range(h // p):
            for j in range(w // p):
                expected = x[0, t, :, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(-1)
                assert torch.equal(tokens[0, t, i * (w // p) + j], expected)


# Layers: attention -----------------------------------------------------------------------------------------

def ref_attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d)) v in float64; mask True = attend."""
    q, k, v = q.double(), k.double(), v.double()
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, -1) @ v


def qkv(seed, n=7, m=9, d=8):
    g = gen(seed)
    return (torch.randn(2, 3, n, d, generator=g), torch.randn(2, 3, m, d, generator=g),
            torch.randn(2, 3, m, d, generator=g))


def some_mask(n=7, m=9, seed=0):
    mask = torch.rand(n, m, generator=gen(seed)) < 0.5
    mask[:, 0] = True  # every query attends somewhere
    return mask


@pytest.mark.parametrize("masked", [False, True])
def test_attention_matches_reference_fp32(masked):
    q, k, v = qkv(0)
    mask = some_mask() if masked else None
    out = attention(q, k, v, mask)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref_attention(q, k, v, mask), rtol=1e-5, atol=1e-5)
    if masked:  # the mask matters
        assert not torch.allclose(out, attention(q, k, v), atol=1e-3)


@pytest.mark.parametrize("bf16_is_fast", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_attention_matches_reference_bf16(masked, bf16_is_fast, monkeypatch):
    from nano_videodiff import hardware
    monkeypatch.setattr(hardware, "_cpu_verdict", (bf16_is_fast, "as on a CPU with or without bf16 units"))
    q, k, v = qkv(1)
    mask = some_mask(seed=1) if masked else None
    expected = ref_attention(q, k, v, mask)
    # bf16 tensors on CPU (what a Linear produces under autocast): explicit matmuls where bf16 is fast
    out = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), expected, rtol=0.05, atol=0.05)
    # float32 tensors under bf16 autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v, mask)
    torch.testing.assert_close(out.double(), expected, rtol=0.05, atol=0.05)


def test_attention_bf16_long_sequences_take_the_fused_kernel_and_stay_correct():
    """Beyond EXPLICIT_ATTENTION_MAX_KEYS keys the fused kernel runs (no N x N logits kept): same result."""
    from nano_videodiff.backbones.layers import EXPLICIT_ATTENTION_MAX_KEYS
    g = gen(3)
    n = EXPLICIT_ATTENTION_MAX_KEYS + 44
    q, k, v = (torch.randn(2, 2, n, 16, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.rand(2, 1, n, n, generator=g) > 0.3
    mask[..., 0] = True  # every query sees at least one key
    out = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    torch.testing.assert_close(out.double(), ref_attention(q, k, v, mask), rtol=0.05, atol=0.05)


def ref_attention_module(mod, x, context=None):
    """Attention written out from the module's weights: heads split the channels as (h d)."""
    context = x if context is None else context
    h, d = mod.heads, mod.head_dim
    dim = h * d
    q = x.double() @ mod.to_q.weight.double().T + mod.to_q.bias.double()
    kv = context.double() @ mod.to_kv.weight.double().T + mod.to_kv.bias.double()
    k, v = kv[..., :dim], kv[..., dim:]

    def heads(t):
        return t.reshape(*t.shape[:-1], h, d).transpose(1, 2)  # (B, h, N, d)

    q, k, v = heads(q), heads(k), heads(v)
    if mod.qk_norm:
        q = q / torch.sqrt((q**2).mean(-1, keepdim=True) + 1e-12) * mod.q_gain.double()
        k = k / torch.sqrt((k**2).mean(-1, keepdim=True) + 1e-12) * mod.k_gain.double()
    out = ref_attention(q, k, v).transpose(1, 2).reshape(x.shape[0], x.shape[1], dim)
    return out @ mod.proj.weight.double().T + mod.proj.bias.double()


@pytest.mark.parametrize("qk_norm", [False, True])
def test_attention_module_matches_reference(qk_norm):
    torch.manual_seed(0)
    mod = Attention(16, 4, qk_norm=qk_norm)
    if qk_norm:
        with torch.no_grad():
            mod.q_gain.copy_(torch.rand(4) + 0.5)
            mod.k_gain.copy_(torch.rand(4) + 0.5)
    x = torch.randn(2, 6, 16, generator=gen(2))
    out = mod(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref_attention_module(mod, x), rtol=1e-4, atol=1e-4)


def test_qk_norm_makes_attention_invariant_to_query_key_scale():
    torch.manual_seed(1)
    x = torch.randn(2, 6, 16, generator=gen(3))
    for qk_norm in (True, False):
        mod = Attention(16, 2, qk_norm=qk_norm)
        a = mod(x)
        with torch.no_grad():
            mod.to_q.weight.mul_(5.0), mod.to_q.bias.mul_(5.0)
            mod.to_kv.weight[:16].mul_(5.0), mod.to_kv.bias[:16].mul_(5.0)  # the key half
        b = mod(x)
        if qk_norm:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        else:  # without the norm, the logits (and the output) change
            assert not torch.allclose(a, b, atol=1e-3)


def test_cross_attention_with_context():
    torch.manual_seed(2)
    mod = Attention(16, 2, context_dim=8)
    x = torch.randn(3, 5, 16, generator=gen(4))
    context = torch.randn(3, 11, 8, generator=gen(5))
    out = mod(x, context=context)
    assert out.shape == (3, 5, 16)
    torch.testing.assert_close(out.double(), ref_attention_module(mod, x, context), rtol=1e-4, atol=1e-4)
    # attention has no notion of context order: permuting the context leaves the output unchanged
    perm = torch.randperm(11, generator=gen(6))
    torch.testing.assert_close(mod(x, context=context[:, perm]), out, rtol=1e-5, atol=1e-5)


def test_adaln_modulation_starts_at_zero_and_modulate_identity():
    ada = layers.AdaLNModulation(8, 3)
    outs = ada(torch.randn(4, 8))
    assert len(outs) == 3 and all(o.shape == (4, 8) and torch.all(o == 0) for o in outs)
    x = torch.randn(4, 8)
    assert torch.equal(layers.modulate(x, torch.zeros(8), torch.zeros(8)), x)
    shift, scale = torch.randn(8), torch.randn(8)
    torch.testing.assert_close(layers.modulate(x, shift, scale), x * (1 + scale) + shift)


# Bad input -------------------------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    model = small_vdt(patch_size=2)
    c_noise = torch.zeros(2)
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        model(torch.randn(2, 3, 8, 8), c_noise, Cond())[0]  # an image batch, rank 4
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(2, 2, 4, 8, 8), c_noise, Cond())[0]
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(2, 2, 3, 7, 8), c_noise, Cond())[0]
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(2, 2, 3, 8, 5), c_noise, Cond())[0]

    labelled = small_vdt(num_classes=3)
    x = torch.randn(2, 2, 3, 4, 4)
    with pytest.raises(ValueError, match="labels"):
        labelled(x, c_noise, Cond())[0]
    with pytest.raises(ValueError, match="labels must be in"):
        labelled(x, c_noise, Cond(labels=torch.tensor([0, 3])))[0]
    with pytest.raises(ValueError, match="labels must be in"):
        labelled(x, c_noise, Cond(labels=torch.tensor([-2, 0])))[0]
    with pytest.raises(TypeError, match="integer"):
        labelled(x, c_noise, Cond(labels=torch.tensor([0.0, 1.0])))[0]
