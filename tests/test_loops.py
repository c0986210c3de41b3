import dataclasses

import pytest
import torch

from golf.config import GolfError
from golf.model.gpt import GPT
from golf.model.loops import Recurrence, sample_passes, virtual_layers
from tests.test_model import TINY, randomize


def block_calls(model: GPT, idx: torch.Tensor) -> list[int]:
    """Indices of the unique blocks in the order one forward runs them."""
    calls = []
    hooks = [b.register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, b in enumerate(model.blocks)]
    model.logits(idx)
    for h in hooks:
        h.remove()
    return calls


def test_virtual_layers_prelude_loop_coda():
    plan = virtual_layers(num_blocks=5, start=1, end=2, passes=3, grad_passes=1)
    assert [v.block for v in plan] == [0, 1, 2, 1, 2, 1, 2, 3, 4]
    assert [v.loop_pass for v in plan] == [-1, 0, 0, 1, 1, 2, 2, -1, -1]
    assert [v.grad for v in plan] == [True, False, False, False, False, True, True, True, True]


def test_eval_loops_more_than_train():
    # Seed train_gpt2.py style: every block in the loop, more passes at eval than in training.
    cfg = dataclasses.replace(TINY, num_layers=2, loop_start=0, loop_end=1, lane_layers=0, train_loops=3,
                              eval_loops=6, loop_enable_at=0.0)
    model = GPT(cfg)
    idx = torch.randint(0, 64, (1, 8))
    assert block_calls(model.train(), idx) == [0, 1] * 3
    assert block_calls(model.eval(), idx) == [0, 1] * 6


def test_middle_segment_starts_looping_partway_through_training():
    # 2026-04 record style: plain stack until loop_enable_at of training, then the middle block loops; eval loops.
    model = GPT(dataclasses.replace(TINY, train_loops=3, loop_enable_at=0.35, lane_layers=0))
    idx = torch.randint(0, 64, (1, 8))
    model.set_progress(step=10, frac=0.2)
    assert block_calls(model.train(), idx) == [0, 1, 2]
    assert block_calls(model.eval(), idx) == [0, 1, 1, 1, 2]
    model.set_progress(step=40, frac=0.4)
    assert block_calls(model.train(), idx) == [0, 1, 1, 1, 2]


def test_sampled_depth_is_poisson_lognormal_with_mean_4_and_same_on_every_rank():
    draws = torch.tensor([sample_passes(1337, step, 4.0, 0.5, 16) for step in range(4000)], dtype=torch.float64)
    assert abs(draws.mean().item() - 4.0) < 0.2
    assert draws.min() >= 1 and draws.max() <= 16
    assert draws.var() > 4.0  # over-dispersed vs Poisson(4) (variance 4): the log-normal rate adds spread
    # Depth depends only on (seed, step): every rank draws the same, other steps differ.
    assert [sample_passes(1337, s, 4.0, 0.5, 16) for s in range(50)] == draws[:50].int().tolist()
    assert len({sample_passes(7, s, 4.0, 0.5, 16) for s in range(50)}) > 3


def test_recurrence_resamples_depth_each_step():
    cfg = dataclasses.replace(TINY, loop_schedule="recurrent", train_loops=4)
    model = GPT(cfg)
    depths = set()
    for step in range(20):
        model.set_progress(step, step / 20)
        depths.add(model.schedule.train_passes)
        assert model.schedule.train_passes == sample_passes(cfg.seed, step, 4.0, 0.5, 16)
    assert len(depths) > 2


def test_truncated_bptt_gives_no_gradient_to_early_recurrences():
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, loop_schedule="recurrent", recur_bptt=2, unet_skips=False, lane_layers=0)
    model = GPT(cfg)
    randomize(model.blocks)
    model.schedule.train_passes = 5
    outputs = []

    def keep(module, args, out):
        if out.requires_grad:
            out.retain_grad()
        outputs.append(out)

    hook = model.blocks[1].register_forward_hook(keep)  # block 1 is the recurrent block: one output per pass
    idx = torch.randint(0, 64, (2, 8))
    model(idx, idx).backward()
    hook.remove()
    assert len(outputs) == 5
    for early in outputs[:3]:
        assert not early.requires_grad and early.grad is None
    for late in outputs[3:]:
        assert late.grad is not None and late.grad.abs().sum() > 0
    assert model.blocks[1].mlp.fc.weight.grad.abs().sum() > 0
    assert model.schedule.inject.weight.grad.abs().sum() > 0


def test_injection_adapter_starts_as_identity_on_the_state():
    schedule = Recurrence(TINY)
    state, prelude_out = torch.randn(2, 4, 32), torch.randn(2, 4, 32)
    assert torch.equal(schedule.enter_pass(state, prelude_out), state)


def test_fresh_adapters_and_skips_leave_the_function_unchanged_and_learn_away_from_it():
    torch.manual_seed(0)
    plain_cfg = dataclasses.replace(TINY, unet_skips=False, skip_gates=False, loop_enable_at=0.0)
    plain = GPT(plain_cfg)
    randomize(plain.blocks)
    extras = GPT(dataclasses.replace(plain_cfg, unet_skips=True, pass_adapter_rank=2))
    missing, unexpected = extras.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("schedule.") for k in missing)
    assert len(extras.schedule.adapters) == TINY.train_loops  # one per (pass, looped block)
    idx = torch.randint(0, 64, (2, 8))
    assert torch.allclose(extras.logits(idx), plain.logits(idx), atol=1e-6)
    with torch.no_grad():
        extras.schedule.skip_weights.fill_(0.5)
    assert not torch.allclose(extras.logits(idx), plain.logits(idx), atol=1e-3)
    with torch.no_grad():
        extras.schedule.skip_weights.zero_()
        extras.schedule.adapters[1].up.weight.normal_()  # the second pass's adapter only
    assert not torch.allclose(extras.logits(idx), plain.logits(idx), atol=1e-3)


def test_bad_loop_settings_are_clear_errors():
    with pytest.raises(GolfError, match="LOOP_END"):
        GPT(dataclasses.replace(TINY, loop_end=3))
    with pytest.raises(GolfError, match="LANE_LAYERS"):
        GPT(dataclasses.replace(TINY, lane_layers=2))
