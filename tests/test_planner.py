"""training/planner.py: its numbers against real CPU measurements of the same step.

- activations: the bytes the planner measures under FakeTensorMode vs the bytes a real CPU forward leaves
  allocated for backward (the profiler's allocator accounting), within ACTIVATION_TOLERANCE;
- gradients and optimizer state: vs the tensors a real train.py-style step allocates (exact);
- FLOPs: the fake count vs the same counter on real tensors (exact), and above the MLPs' 6 N tokens.
"""
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import train
from nano_videodiff.errors import UserError
from nano_videodiff.training import planner as P
from nano_videodiff.training.distributed import apply_activation_checkpointing, find_blocks
from nano_videodiff.training.optim import build_optimizer
from nano_videodiff.training.paper_configs import reduced
from nano_videodiff.training.presets import get_preset

# Stated tolerance of the activation estimate against a real CPU forward (measured: exact, to the byte, for
# these presets; GPU kernels may save slightly different tensors, e.g. attention's logsumexp layout).
ACTIVATION_TOLERANCE = 0.05


def live_bytes_after_forward(network, cfg, batch, dtype) -> int:
    """Bytes a real forward leaves allocated (saved for backward, plus the scalar loss): every allocation
    minus every free, as the profiler's memory accounting records them."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss = P.network_forward(network, cfg, batch, dtype)
    del loss
    return sum(e.self_cpu_memory_usage for e in prof.key_averages())


def real_network(cfg, checkpointing=False):
    torch.manual_seed(0)
    network = P.build_network(cfg)
    if checkpointing:
        apply_activation_checkpointing(network)
    P.network_forward(network, cfg, 1, "fp32").backward()  # first-call allocations out of the way
    return network


@pytest.mark.parametrize("name,dtype", [("vdt_s2", "fp32"), ("vdt_s2", "bf16"), ("walt_l", "bf16"),
                                        ("walt_xl", "bf16"), ("snapvideo_500m", "bf16")])
def test_activation_memory_matches_a_real_cpu_forward(name, dtype):
    cfg = reduced(get_preset(name))
    network = real_network(cfg)
    real = [live_bytes_after_forward(network, cfg, b, dtype) for b in (1, 2)]
    per_sample, fixed = P.measure_activations(cfg, dtype)[False]
    assert per_sample == pytest.approx(real[1] - real[0], rel=ACTIVATION_TOLERANCE)
    assert fixed + per_sample == pytest.approx(real[0], rel=ACTIVATION_TOLERANCE)


def test_activation_checkpointing_keeps_block_inputs_and_recomputes_one_block():
    cfg = reduced(get_preset("vdt_s2"))
    real_plain = live_bytes_after_forward(real_network(cfg), cfg, 2, "fp32")
    real_ckpt = live_bytes_after_forward(real_network(cfg, checkpointing=True), cfg, 2, "fp32")
    with P.fake_mode():
        network = P.build_network(cfg)
        saved = P.saved_bytes(network, lambda: P.network_forward(network, cfg, 2, "fp32"), find_blocks(network))
    # after the forward: what is outside the blocks and each block's inputs; backward adds one block's
    assert saved["total"] == pytest.approx(real_plain, rel=ACTIVATION_TOLERANCE)
    assert saved["outside"] + saved["block_inputs"] == pytest.approx(real_ckpt, rel=ACTIVATION_TOLERANCE)
    assert P.activation_bytes(saved, True) == saved["outside"] + saved["block_inputs"] + saved["largest_block"]
    assert P.activation_bytes(saved, True) < P.activation_bytes(saved, False)


def test_gradient_and_optimizer_bytes_match_a_real_step():
    cfg = reduced(get_preset("snapvideo_500m"))  # LAMB
    cfg.optim.batch_size = 2
    plan = P.plan(cfg)
    torch.manual_seed(0)
    network = P.build_network(cfg)
    optimizer = build_optimizer([p for p in network.parameters()], cfg.optim)
    P.network_forward(network, cfg, 1, "fp32").backward()
    optimizer.step()
    params = sum(p.numel() * p.element_size() for p in network.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in network.parameters() if p.grad is not None)
    state = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                if torch.is_tensor(v) and v.numel() > 1)
    assert plan["weights"] == plan["ema"] == params and plan["frozen"] == 0
    assert plan["grads"] == pytest.approx(grads, rel=1e-3)  # known_embed: no gradient without given frames
    assert plan["optimizer"] == pytest.approx(state, rel=1e-3)
    # the per-device sums: DDP replicates everything (and keeps gradient buckets), FSDP shards all but the EMA
    assert plan["ddp"] == params * 2 + 2 * plan["grads"] + plan["optimizer"] + plan["activations"]
    half = P.plan(cfg, world_size=2)
    assert half["local_batch"] == 1 and half["activations"] == pytest.approx(plan["fixed"] + plan["per_sample"])
    assert half["fsdp"] == pytest.approx((params + plan["grads"] + plan["optimizer"]) / 2 + params
                                         + 8 * plan["largest_unit"] + half["activations"])


def test_flops_fake_equal_real_and_exceed_the_mlps_six_n_tokens():
    cfg = reduced(get_preset("vdt_s2"))
    fake = P.training_flops(cfg)
    network = real_network(cfg)
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False, custom_mapping=P.CPU_ATTENTION) as counter:
        P.network_forward(network, cfg, 1, "fp32").backward()
    assert fake == counter.get_total_flops()
    tokens = cfg.data.num_frames * (cfg.data.height // cfg.model.patch_size) * (cfg.data.width // cfg.model.patch_size)
    mlp = sum(m.weight.numel() for name, m in network.named_modules() if ".mlp." in f".{name}." and
              isinstance(m, torch.nn.Linear))
    assert mlp > 0 and fake > 6 * mlp * tokens
    assert P.step_seconds(1e12, 8, 2, 100e12, 0.5) == pytest.approx(8e12 / (2 * 100e12 * 0.5))


def test_plan_flags_and_train_py_prints_a_plan_without_training(tmp_path, capsys):
    assert P.plan_request(["--config=x", "--lr=1"]) == (["--config=x", "--lr=1"], None)
    rest, request = P.plan_request(["--plan", "--world_size=8", "--mfu=0.3", "--depth=1"])
    assert rest == ["--depth=1"] and request == P.PlanRequest(8, 0.3)
    with pytest.raises(UserError, match="add --plan"):
        P.plan_request(["--world_size=8"])
    with pytest.raises(UserError, match="divisible by --world_size"):
        train.main(["--config=smoke", "--plan", "--world_size=3"])
    train.main(["--config=smoke", "--plan", "--world_size=2", f"--out_dir={tmp_path / 'run'}"])
    text = capsys.readouterr().out
    assert "total per device: DDP" in text and "A100 80GB" in text and "H100 SXM 80GB" in text
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_preset_table_has_a_full_row_per_preset():
    table = P.preset_table(["vdt_s2"], world_size=8).splitlines()
    header, row = [c.strip() for c in table[0].strip("|").split("|")], [c.strip() for c in table[2].strip("|").split("|")]
    assert len(table) == 3 and len(row) == len(header) and row[0] == "vdt_s2"
    assert row[8].endswith("(accumulation x1)")  # 32 clips of 16 x 128x128 per GPU fit in 80 GB at once
