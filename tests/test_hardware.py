"""--dtype=auto: bf16 only where bf16 matmuls are fast; the probe mocked both ways (hardware.py)."""
import pytest
import torch
import torch.nn.functional as F

from nano_videodiff import hardware
from nano_videodiff.backbones import layers

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh_verdict(monkeypatch):
    """Each test decides anew; the real verdict of this process is restored afterwards."""
    monkeypatch.setattr(hardware, "_cpu_verdict", None)


def fake_probe(monkeypatch, fp32_s: float, bf16_s: float) -> list:
    calls = []

    def seconds(dtype, *args, **kwargs):
        calls.append(dtype)
        return {torch.float32: fp32_s, torch.bfloat16: bf16_s}[dtype]
    monkeypatch.setattr(hardware, "matmul_seconds", seconds)
    return calls


def test_cpu_without_bf16_units_runs_fp32_without_probing(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_bf16_units", lambda: False)
    calls = fake_probe(monkeypatch, 1.0, 0.1)  # even a "fast" probe must not be consulted
    choice = hardware.resolve_dtype("auto", CPU)
    assert choice.name == "fp32" and "AVX-512-BF16" in choice.reason and calls == []
    assert not hardware.explicit_bf16_attention()


def test_cpu_with_bf16_units_and_a_fast_probe_runs_bf16(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_bf16_units", lambda: True)
    calls = fake_probe(monkeypatch, 1.0, 0.25)
    choice = hardware.resolve_dtype("auto", CPU)
    assert choice.name == "bf16" and "4.0x" in choice.reason
    assert hardware.explicit_bf16_attention()
    hardware.resolve_dtype("auto", CPU)
    assert sorted(calls, key=str) == sorted([torch.float32, torch.bfloat16], key=str)  # probed once per process


def test_cpu_that_reports_bf16_units_but_is_slow_runs_fp32(monkeypatch):
    """E.g. kernels restricted with ATEN_CPU_CAPABILITY=avx2 on an AVX-512 machine: the flags say yes."""
    monkeypatch.setattr(hardware, "cpu_has_bf16_units", lambda: True)
    fake_probe(monkeypatch, 1.0, 30.0)
    choice = hardware.resolve_dtype("auto", CPU)
    assert choice.name == "fp32" and "0.03x" in choice.reason
    assert not hardware.explicit_bf16_attention()


def test_a_speedup_below_the_margin_is_not_enough(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_bf16_units", lambda: True)
    fake_probe(monkeypatch, 1.0, 1.0 / (hardware.PROBE_MIN_SPEEDUP * 0.99))
    assert hardware.resolve_dtype("auto", CPU).name == "fp32"


@pytest.mark.parametrize("name", ["bf16", "fp16", "fp32"])
def test_an_explicit_dtype_is_kept(monkeypatch, name):
    monkeypatch.setattr(hardware, "cpu_has_bf16_units", lambda: False)
    choice = hardware.resolve_dtype(name, CPU)
    assert choice.name == name and "--dtype" in choice.reason


def test_cuda_follows_the_gpus_bf16_support(monkeypatch):
    cuda = torch.device("cuda")  # a device object needs no GPU
    for supported, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert hardware.resolve_dtype("auto", cuda).name == expected
    assert hardware.resolve_dtype("auto", torch.device("mps")).name == "fp32"


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="--dtype must be one of"):
        hardware.resolve_dtype("bfloat16", CPU)


def test_the_real_probe_measures_positive_times():
    assert 0 < hardware.matmul_seconds(torch.float32, n=32, repeats=2) < 10


@pytest.mark.parametrize("fast", [True, False])
def test_attention_takes_explicit_bf16_matmuls_only_where_bf16_is_fast(monkeypatch, fast):
    """The short-sequence bf16 special case follows the verdict; both paths give softmax(qk^T/sqrt d) v."""
    monkeypatch.setattr(hardware, "_cpu_verdict", (fast, "mocked"))
    fused_calls = []
    real_sdpa = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        fused_calls.append(1)
        return real_sdpa(*args, **kwargs)
    monkeypatch.setattr(layers.F, "scaled_dot_product_attention", spy)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 16, 8, generator=g) for _ in range(3))
    reference = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, -1) @ v
    out = layers.attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert (len(fused_calls) == 0) == fast
    torch.testing.assert_close(out.float(), reference, atol=3e-2, rtol=3e-2)
    layers.attention(q, k, v)  # fp32 always takes the fused kernel
    assert len(fused_calls) == (1 if fast else 2)
