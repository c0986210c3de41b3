import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from golf.config import GolfError
from golf.quant.gptq import HessianCollector, collect_hessians, gptq_quantize, output_error
from golf.quant.lowrank import lqer_factors
from golf.quant.rtn import QuantTensor, dequantize_rows, qmax_for_bits, quantize_rtn
from golf.quant.state import LqerPlan, dequantize_state, quantize_state


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(2, 40), bits=st.integers(4, 8),
       rule=st.sampled_from(["sdclip", "capped", "absmax"]), clip_k=st.floats(0.5, 14.0),
       log_std=st.floats(-6, 2), seed=st.integers(0, 2 ** 16))
def test_rtn_error_within_half_step_inside_clip_and_saturates_outside(rows, cols, bits, rule, clip_k, log_std, seed):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * 10.0 ** log_std
    qt = quantize_rtn(w, bits, clip_k, rule)
    qmax = qmax_for_bits(bits)
    assert qt.q.dtype == torch.int8 and qt.scale.dtype == torch.float16 and qt.scale.shape == (rows,)
    scale = qt.scale.double()[:, None]
    w64, q64 = w.double(), qt.q.double()
    assert q64.abs().max() <= qmax
    err = (dequantize_rows(qt).double() - w64).abs()
    inside = w64.abs() <= (qmax + 0.5) * scale * (1 - 1e-6)
    tol = scale / 2 + 1e-6 * torch.maximum(w64.abs(), scale)
    assert torch.all(err[inside] <= tol.expand_as(err)[inside])
    outside = w64.abs() >= (qmax + 0.5) * scale * (1 + 1e-6)
    assert torch.equal(q64[outside], torch.sign(w64[outside]) * qmax)


def test_absmax_uses_the_full_grid_and_clips_nothing():
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    for bits in range(4, 9):
        qt = quantize_rtn(w, bits)
        assert torch.equal(qt.q.abs().amax(dim=1), torch.full((8,), qmax_for_bits(bits), dtype=torch.int8))


def test_sdclip_scale_is_k_std_over_qmax_and_outliers_saturate():
    w = torch.randn(4, 256, generator=torch.Generator().manual_seed(1))
    w[0, 3] = 50.0
    qt = quantize_rtn(w, 6, 3.0, "sdclip")
    expected = (3.0 * w.std(dim=1) / 31).to(torch.float16)
    assert torch.equal(qt.scale, expected)
    assert qt.q[0, 3] == 31


def test_capped_never_exceeds_absmax():
    w = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    assert torch.equal(quantize_rtn(w, 6, 50.0, "capped").scale, quantize_rtn(w, 6, None, "absmax").scale)
    assert torch.all(quantize_rtn(w, 6, 1.0, "capped").scale < quantize_rtn(w, 6).scale)


def test_zero_rows_and_shapes_round_trip():
    w = torch.zeros(3, 5, 4, dtype=torch.bfloat16)
    w[1] = 1.0
    qt = quantize_rtn(w, 8, 12.0)
    assert qt.q.shape == (3, 20) and qt.shape == (3, 5, 4) and qt.dtype == torch.bfloat16
    assert torch.equal(qt.q[0], torch.zeros(20, dtype=torch.int8))
    assert dequantize_rows(qt).shape == (3, 5, 4)
    vec = quantize_rtn(torch.linspace(-1, 1, 9), 8)
    assert vec.q.shape == (1, 9) and torch.allclose(dequantize_rows(vec), torch.linspace(-1, 1, 9), atol=0.01)


@pytest.mark.parametrize("bad", [{"bits": 9}, {"bits": 1}, {"bits": 6, "rule": "median"},
                                 {"bits": 6, "rule": "sdclip", "clip_k": None}, {"bits": 6, "clip_k": -1.0}])
def test_bad_settings_are_golf_errors(bad):
    with pytest.raises(GolfError):
        quantize_rtn(torch.ones(2, 2), bad["bits"], bad.get("clip_k"), bad.get("rule"))


def correlated(n, cols, seed):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / math.sqrt(cols)
    return (torch.randn(n, cols, generator=g) / (1 + torch.arange(cols) / 4.0)) @ mix


def output_err(x, w, qt):
    return torch.linalg.norm(x @ w.T - x @ dequantize_rows(qt).T).item()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("bits,clip_k,act_order", [(6, 12.0, True), (4, 4.0, True), (8, None, False), (6, 2.5, False)])
def test_gptq_output_error_never_above_rtn(seed, bits, clip_k, act_order):
    x = correlated(512, 96, seed)
    w = torch.randn(48, 96, generator=torch.Generator().manual_seed(100 + seed)) * 0.02
    rule = "capped" if clip_k == 2.5 else None
    gptq = gptq_quantize(w, x.T @ x, bits, clip_k, block=32, act_order=act_order, rule=rule)
    rtn = quantize_rtn(w, bits, clip_k, rule)
    assert torch.equal(gptq.scale, rtn.scale)
    assert output_err(x, w, gptq) < output_err(x, w, rtn)


def test_gptq_with_diagonal_hessian_is_rtn():
    # No input correlations: the inverse Hessian's Cholesky factor is diagonal, nothing propagates.
    w = torch.randn(16, 40, generator=torch.Generator().manual_seed(3))
    gptq = gptq_quantize(w, torch.diag(torch.rand(40) + 0.5), 5, 10.0, block=8)
    assert torch.equal(gptq.q, quantize_rtn(w, 5, 10.0).q)


def test_gptq_dead_columns_quantise_to_zero():
    x = correlated(256, 32, 5)
    x[:, [3, 17]] = 0.0
    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(6))
    qt = gptq_quantize(w, x.T @ x, 6, 12.0)
    assert torch.all(qt.q[:, [3, 17]] == 0) and torch.isfinite(dequantize_rows(qt)).all()
    assert output_err(x, w, qt) < output_err(x, w, quantize_rtn(w, 6, 12.0))


def test_gptq_rejects_mismatched_hessian():
    with pytest.raises(GolfError):
        gptq_quantize(torch.ones(4, 8), torch.eye(7), 6, 12.0)


class Looped(nn.Module):
    """One shared linear called twice per forward, like a looped block."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6, bias=False)
        self.head = nn.Linear(6, 3, bias=False)

    def forward(self, x):
        return self.head(self.lin(self.lin(x)))


def test_collect_hessians_adds_every_call_and_removes_hooks():
    torch.manual_seed(0)
    model = Looped()
    batches = [torch.randn(2, 5, 6) for _ in range(3)]
    hs = collect_hessians(model, {"lin": model.lin, "head": model.head}, batches, lambda m, b: m(b))
    expected_lin = torch.zeros(6, 6)
    expected_head = torch.zeros(6, 6)
    with torch.no_grad():
        for b in batches:
            first = b.reshape(-1, 6)
            second = model.lin(first)
            third = model.lin(second)
            expected_lin += first.T @ first + second.T @ second
            expected_head += third.T @ third
    assert torch.allclose(hs["lin"], expected_lin, atol=1e-5)
    assert torch.allclose(hs["head"], expected_head, atol=1e-5)
    assert not model.lin._forward_pre_hooks and not model.head._forward_pre_hooks


def test_hooks_go_even_when_forward_raises():
    model = Looped()

    def failing(m, b):
        m(b)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        collect_hessians(model, {"lin": model.lin}, [torch.randn(1, 6)], failing)
    assert not model.lin._forward_pre_hooks
    with HessianCollector({"lin": model.lin}) as c:
        model(torch.randn(4, 6))
    assert c.rows_seen["lin"] == 8 and not model.lin._forward_pre_hooks


class FixedLoader:
    """next_batch as DistributedTokenLoader's, from a fixed list of (B, T) token batches."""

    def __init__(self, batches):
        self.batches = iter(batches)

    def next_batch(self, tokens, seq_len, accum):
        x = next(self.batches)
        assert x.numel() == tokens and x.shape[1] == seq_len
        return x, x


def test_calibration_gives_the_tied_embedding_the_head_input_hessian():
    from golf.dist import DistEnv
    from golf.params import assign_rules, param_rules
    from golf.train import calibrate_hessians
    from tests.tiny_eval import TINY_EVAL, tiny_model

    cfg = dataclasses.replace(TINY_EVAL, gptq_calib_batches=2, gptq_calib_tokens=2 * TINY_EVAL.train_seq_len)
    model = tiny_model(cfg)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, cfg.vocab_size, (2, cfg.train_seq_len), generator=g) for _ in range(2)]
    rules = assign_rules(model.named_parameters(), param_rules(cfg))
    hessians = calibrate_hessians(cfg, DistEnv(0, 1, 0, torch.device("cpu")), model, rules, FixedLoader(batches))
    model.eval()
    with torch.no_grad():
        hidden = torch.cat([model.hidden(b).reshape(-1, cfg.model_dim) for b in batches])
    assert torch.allclose(hessians["tok_emb.weight"], hidden.T @ hidden, rtol=1e-4, atol=1e-4)
    assert any(n.startswith("blocks.") for n in hessians)  # the block hooks fired in the same passes


def test_collect_hessians_adds_the_inputs_forward_returns():
    model = Looped()
    batches = [torch.randn(3, 6) for _ in range(2)]
    hs = collect_hessians(model, {}, batches, lambda m, b: {"extra": m.lin(b)})
    with torch.no_grad():
        expected = sum(model.lin(b).T @ model.lin(b) for b in batches)
    assert torch.allclose(hs["extra"], expected, atol=1e-5)


def test_quantize_state_follows_plan_and_dequantize_restores_dtypes():
    torch.manual_seed(0)
    state = {"a": torch.randn(16, 32), "b": torch.randn(8, 16, dtype=torch.bfloat16), "gain": torch.randn(16),
             "steps": torch.tensor([3, 4])}
    plan = {"a": {"bits": 6, "clip_k": 12.0, "method": "gptq"}, "b": {"bits": 8, "clip_k": None, "method": "gptq"},
            "gain": {"bits": None}, "steps": {"bits": None}}
    x = correlated(128, 32, 0)
    entries = quantize_state(state, plan, {"a": x.T @ x})
    assert torch.equal(entries["a"].q, gptq_quantize(state["a"], x.T @ x, 6, 12.0).q)
    assert torch.equal(entries["b"].q, quantize_rtn(state["b"], 8).q)  # no Hessian: RTN
    assert entries["gain"].dtype == torch.float16 and torch.equal(entries["steps"], state["steps"])
    back = dequantize_state(entries, state)
    assert {n: t.dtype for n, t in back.items()} == {n: t.dtype for n, t in state.items()}
    assert torch.allclose(back["a"], state["a"], atol=float(entries["a"].scale.max()) * 2)
    with pytest.raises(GolfError, match="gain"):
        quantize_state(state, {k: v for k, v in plan.items() if k != "gain"}, None)
    with pytest.raises(GolfError, match="method"):
        quantize_state({"a": state["a"]}, {"a": {"bits": 6, "method": "awq"}}, None)
    with pytest.raises(GolfError, match="shape"):
        dequantize_state(entries, {"a": torch.zeros(32, 16)})
    assert isinstance(entries["a"], QuantTensor)


def lqer_case(seed=0):
    """A weight whose error after int4 RTN has real low-rank structure (a few strong input directions)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(96, 64, generator=g) @ torch.diag(torch.linspace(3, 0.05, 64)) * 0.02
    x = correlated(256, 64, seed)
    return w, x.T @ x


def test_lqer_factors_use_the_asymmetric_levels_and_group_steps():
    w, h = lqer_case()
    qt = quantize_rtn(w, 4, 3.0)
    f = lqer_factors(w, qt, 4, 2, 4, 64)
    assert f.qa.shape == (96, 4) and f.qb.shape == (4, 64) and f.a_scale.shape == (1,) and f.b_scale.shape == (4,)
    assert int(f.qa.min()) >= -2 and int(f.qa.max()) <= 1 and int(f.qb.min()) >= -8 and int(f.qb.max()) <= 7
    assert f.qa.dtype == torch.int8 and f.a_scale.dtype == torch.float16 and f.b_scale.dtype == torch.float16
    assert set(f.qa.unique().tolist()) == {-2, -1, 0, 1}  # the int2 grid is used, not collapsed
    odd = lqer_factors(w[:, :60], quantize_rtn(w[:, :60], 4, 3.0), 3, 2, 4, 64)
    assert odd.group == 60 and odd.b_scale.shape == (3,)  # 64 does not divide 3 x 60: one group per row of B


def test_lqer_cuts_the_error_it_is_fitted_to():
    w, h = lqer_case()
    qt = quantize_rtn(w, 4, 3.0)
    base_f = torch.linalg.norm(w - dequantize_rows(qt)).item()
    base_h = output_error(w, dequantize_rows(qt), h)
    fro = dataclasses.replace(qt, lqer=lqer_factors(w, qt, 8, 4, 8, 64))
    hess = dataclasses.replace(qt, lqer=lqer_factors(w, qt, 8, 4, 8, 64, h))
    assert torch.linalg.norm(w - dequantize_rows(fro)).item() < 0.9 * base_f
    assert output_error(w, dequantize_rows(hess), h) < 0.9 * base_h
    assert output_error(w, dequantize_rows(hess), h) < output_error(w, dequantize_rows(fro), h)


def test_lqer_plan_corrects_the_top_k_by_weight_error_or_by_output_error():
    w, h = lqer_case()
    state = {"small": w * 0.1, "big": w, "mid": w * 0.5, "gain": torch.randn(64)}
    plan = {n: {"bits": 4, "clip_k": 3.0, "method": "rtn"} for n in ("small", "big", "mid")} | {"gain": {"bits": None}}
    # "big" has the largest ||W - Q||_F, but its inputs are 100x weaker: the smallest output error.
    hessians = {"small": h, "big": h * 1e-4, "mid": h}

    def corrected(select):
        entries = quantize_state(state, plan, hessians, LqerPlan(top_k=2, select=select))
        return {n for n, e in entries.items() if isinstance(e, QuantTensor) and e.lqer is not None}

    assert LqerPlan().select == "weight_error" and corrected("weight_error") == {"big", "mid"}  # the record's rule
    assert corrected("output_error") == {"mid", "small"}
    plain = quantize_state(state, plan, None, LqerPlan(top_k=0))
    assert all(e.lqer is None for e in plain.values() if isinstance(e, QuantTensor))
    with pytest.raises(GolfError, match="LQER_WEIGHTING"):
        quantize_state(state, plan, None, LqerPlan(top_k=1, weighting="l1"))


def test_attention_gate_is_int8_per_row_at_absmax_and_prior_keeps_it_fp16():
    from golf.config import Config
    from golf.params import param_rules, rule_for
    from golf.recipes import PRIOR

    rule = rule_for("blocks.3.attn.gate", param_rules(Config()))
    assert (rule.bits, rule.clip_k, rule.optim) == (8, None, "adam")
    assert rule_for("blocks.3.attn.gate", param_rules(PRIOR)).bits is None
    gate = torch.randn(8, 12)
    qt = quantize_state({"g": gate}, {"g": {"bits": rule.bits, "clip_k": rule.clip_k}})["g"]
    # scale absmax / 127 per row in fp16, symbols in [-127, 127] (record R:2195-2204)
    assert torch.equal(qt.scale, (gate.abs().amax(dim=1) / 127).half()) and qt.q.abs().max() == 127


def test_lqer_per_byte_takes_most_error_removed_per_byte_within_the_budget():
    from golf.quant.lowrank import factor_bytes
    from golf.quant.state import lqer_by_bytes, select_within

    w, h = lqer_case()
    g = torch.Generator().manual_seed(5)
    lowrank = torch.randn(96, 2, generator=g) @ torch.randn(2, 64, generator=g)  # error a rank-4 fit removes
    state = {"lowrank": w + 0.5 * lowrank, "plain": w, "wide": torch.cat([w, w], 0), "gain": torch.randn(64)}
    names = ("lowrank", "plain", "wide")
    plan = {n: {"bits": 3, "clip_k": 3.0, "method": "rtn"} for n in names} | {"gain": {"bits": None}}
    hessians = {n: h for n in names}
    base = quantize_state(state, plan, hessians)
    fit = lambda n: lqer_factors(state[n], base[n], 4, 2, 4, 64, None)  # noqa: E731
    rows = lqer_by_bytes(state, base, hessians, fit)
    ratios = [r["gain"] / r["bytes"] for r in rows]
    assert [r["name"] for r in rows][0] == "lowrank" and ratios == sorted(ratios, reverse=True)
    assert all(r["bytes"] == factor_bytes(r["factors"]) for r in rows)
    budget = rows[0]["bytes"] + rows[1]["bytes"] - 1  # room for the best one, not the best two
    chosen = select_within(rows, budget)
    assert "lowrank" in chosen and rows[1]["name"] not in chosen
    assert sum(factor_bytes(f) for f in chosen.values()) <= budget
    # Wired through the plan: the same choice, and a zero budget (or top_k 0) corrects nothing.
    entries = quantize_state(state, plan, hessians, LqerPlan(select="per_byte", budget_bytes=budget))
    assert {n for n, e in entries.items() if getattr(e, "lqer", None) is not None} == set(chosen)
    for off in (LqerPlan(select="per_byte", budget_bytes=0), LqerPlan(top_k=0, select="per_byte")):
        assert all(getattr(e, "lqer", None) is None for e in quantize_state(state, plan, hessians, off).values())
    with pytest.raises(GolfError, match="LQER_SELECT"):
        quantize_state(state, plan, hessians, LqerPlan(select="best"))
