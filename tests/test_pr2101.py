"""PR #2101's pieces as golf options: AWQ-lite, AsymLogit, the TTT LoRA mask, the 2560 context, and its recipe."""

import dataclasses
import os
import re
from pathlib import Path

import pytest
import torch

from golf.artifact import decode_artifact, encode_artifact, read_artifact
from golf.config import Config, GolfError
from golf.model.gpt import GPT
from golf.optim import build_optimizers
from golf.params import assign_rules, param_rules
from golf.quant.awq import activation_rms, protect_salient_groups
from golf.quant.gptq import collect_hessians, gptq_quantize
from golf.quant.rtn import dequantize_rows, qmax_for_bits, round_to_grid, row_scales
from golf.quant.state import quantize_state
from golf.recipes import PR2101, PR2101_SOURCES, RECIPES
from golf.ttt import DocLoRA, doc_lora_losses, doc_ttt, ttt_global_phase
from tests.tiny_eval import TINY_DOC, TINY_EVAL, tiny_model

PR2101_DIR = Path("/work/shared/upstream") / Path(PR2101).name


# ---------------------------------------------------------------- AWQ-lite
def planted_state(seed=0):
    """Two GPTQ matrices (int6, int7) whose inputs have a planted loud column group each, and a raw vector."""
    gen = torch.Generator().manual_seed(seed)
    state = {"a.weight": torch.randn(48, 256, generator=gen), "b.weight": torch.randn(32, 192, generator=gen),
             "c": torch.randn(8, generator=gen)}
    xa, xb = torch.randn(500, 256, generator=gen), torch.randn(400, 192, generator=gen)
    xa[:, 64:128] *= 8.0  # a's group 1: the most salient of all
    xb[:, 0:64] *= 4.0  # b's group 0: the second
    plan = {"a.weight": {"bits": 6, "clip_k": 12.0, "method": "gptq"},
            "b.weight": {"bits": 7, "clip_k": 14.0, "method": "gptq"}, "c": {"bits": None}}
    return state, plan, {"a.weight": xa, "b.weight": xb}


def test_activation_rms_is_the_rms_of_the_calibration_inputs():
    _, _, xs = planted_state()
    lin = {n: torch.nn.Linear(x.shape[1], 4, bias=False) for n, x in xs.items()}
    rows: dict = {}
    hessians = collect_hessians(None, lin, [0, 1], lambda m, i: {n: x[i::2] for n, x in xs.items()}, rows)
    assert rows == {n: x.shape[0] for n, x in xs.items()}
    rms = activation_rms(hessians, rows)
    for n, x in xs.items():
        torch.testing.assert_close(rms[n], x.pow(2).mean(dim=0).sqrt(), rtol=1e-5, atol=0)


def test_awq_protects_exactly_the_top_k_salient_groups_at_its_bits():
    state, plan, xs = planted_state()
    hessians = {n: x.T @ x for n, x in xs.items()}
    rms = activation_rms(hessians, {n: x.shape[0] for n, x in xs.items()})
    # The ranking by hand: act RMS x mean |w| per column, summed over each 64-column group, over both matrices.
    scores = sorted(((float((x.pow(2).mean(0).sqrt() * state[n].abs().mean(0))[g:g + 64].sum()), n, g)
                     for n, x in xs.items() for g in range(0, x.shape[1] - 63, 64)), reverse=True)
    assert [(n, g) for _, n, g in scores[:2]] == [("a.weight", 64), ("b.weight", 0)]
    one = protect_salient_groups(state, plan, rms, 1, 8, 64)
    assert one["a.weight"]["protect"] == ((64,), 64, 8) and "protect" not in one["b.weight"]
    two = protect_salient_groups(state, plan, rms, 2, 8, 64)
    assert two["a.weight"]["protect"] == ((64,), 64, 8) and two["b.weight"]["protect"] == ((0,), 64, 8)
    assert "protect" not in protect_salient_groups(state, plan, rms, 1, 7, 64)["b.weight"]  # int7 is not below 7
    entries = quantize_state(state, two, hessians)
    for name, start in (("a.weight", 64), ("b.weight", 0)):
        e, cols = entries[name], torch.arange(start, start + 64)
        rest = torch.ones(e.q.shape[1], dtype=torch.bool)
        rest[cols] = False
        assert e.awq.starts == (start,) and e.awq.bits == 8
        torch.testing.assert_close(e.awq.scale, row_scales(state[name], 8, plan[name]["clip_k"]), rtol=0, atol=0)
        assert e.q[:, rest].abs().max() <= qmax_for_bits(plan[name]["bits"]) and e.q[:, cols].abs().max() <= 127
        # The finer grid: 2^(8 - bits) times the levels over the same clip, so larger symbols on like weights.
        torch.testing.assert_close(e.awq.scale.float(), e.scale.float() * qmax_for_bits(plan[name]["bits"]) / 127,
                                   rtol=2e-3, atol=0)
        assert e.q[:, cols].abs().max() > e.q[:, rest].abs().max()
        deq = dequantize_rows(e)
        torch.testing.assert_close(deq[:, cols], e.q[:, cols].float() * e.awq.scale.float()[:, None])
        torch.testing.assert_close(deq[:, rest], e.q[:, rest].float() * e.scale.float()[:, None])


def test_awq_groups_with_a_diagonal_hessian_are_rtn_on_the_finer_step():
    w = torch.randn(16, 128, generator=torch.Generator().manual_seed(1))
    qt = gptq_quantize(w, torch.eye(128), 6, 12.0, act_order=False, protect=((64,), 64, 8))
    torch.testing.assert_close(qt.q[:, 64:], round_to_grid(w, row_scales(w, 8, 12.0), 8)[:, 64:], rtol=0, atol=0)
    torch.testing.assert_close(qt.q[:, :64], round_to_grid(w, row_scales(w, 6, 12.0), 6)[:, :64], rtol=0, atol=0)


def test_awq_groups_survive_the_artifact():
    state, plan, xs = planted_state()
    hessians = {n: x.T @ x for n, x in xs.items()}
    plan = protect_salient_groups(state, plan, activation_rms(hessians, {n: x.shape[0] for n, x in xs.items()}),
                                  2, 8, 64)
    entries = quantize_state(state, plan, hessians)
    groups = {"a.weight": "mlp", "b.weight": "embed", "c": "scalars"}
    for layout in ("none", "bitpack"):  # bitpack packs the symbols at 8 bits: the protected ones need them
        blob = encode_artifact(entries, groups, {}, "brotli", layout)
        decoded, _ = decode_artifact(blob, "x.golf")
        for name in ("a.weight", "b.weight"):
            assert decoded[name].awq.starts == entries[name].awq.starts
            assert torch.equal(dequantize_rows(decoded[name]), dequantize_rows(entries[name]))
    # The finer groups and their steps are counted in the artifact's bytes (byte symbols: brotli sees the entropy).
    unprotected = {n: {k: v for k, v in s.items() if k != "protect"} for n, s in plan.items()}
    plain = quantize_state(state, unprotected, hessians)
    with_awq = len(encode_artifact(entries, groups, {}, "brotli", "none"))
    assert with_awq > len(encode_artifact(plain, groups, {}, "brotli", "none")) + 1000


# ---------------------------------------------------------------- AsymLogit
ASYM = dataclasses.replace(TINY_EVAL, asym_softcap=True)


def asym_pair():
    sym = tiny_model()
    asym = GPT(ASYM)
    asym.load_state_dict(sym.state_dict(), strict=False)
    with torch.no_grad():
        asym.softcap_pos.fill_(ASYM.logit_softcap)
        asym.softcap_neg.fill_(ASYM.logit_softcap)
    return sym, asym


def test_asym_softcap_with_equal_caps_is_the_symmetric_softcap():
    sym, asym = asym_pair()
    x = torch.randint(4, 1024, (2, 32), generator=torch.Generator().manual_seed(0))
    assert torch.equal(asym.token_losses(x, x.roll(-1, 1)), sym.token_losses(x, x.roll(-1, 1)))
    # Logits large enough for the cap to bite: equal caps of 2.0 equal a symmetric cap of 2.0.
    small_sym = GPT(dataclasses.replace(TINY_EVAL, logit_softcap=2.0))
    small_asym = GPT(dataclasses.replace(ASYM, logit_softcap=2.0))
    small_sym.load_state_dict(sym.state_dict())
    small_asym.load_state_dict({**sym.state_dict(), "softcap_pos": torch.tensor(2.0), "softcap_neg": torch.tensor(2.0)})
    assert torch.equal(small_asym.token_losses(x, x), small_sym.token_losses(x, x))


def test_asym_softcap_changes_eval_but_not_the_training_loss():
    sym, asym = asym_pair()
    with torch.no_grad():
        asym.softcap_pos.fill_(10.0)
        asym.softcap_neg.fill_(50.0)
    x = torch.randint(4, 1024, (2, 32), generator=torch.Generator().manual_seed(0))
    y = x.roll(-1, 1)
    assert not torch.allclose(asym.token_losses(x, y), sym.token_losses(x, y))
    loss = asym(x, y)
    assert torch.equal(loss, sym(x, y))
    loss.backward()
    assert asym.softcap_pos.grad is None and asym.softcap_neg.grad is None  # training never reaches the caps
    rules = assign_rules(asym.named_parameters(), param_rules(ASYM))
    held = {id(p) for opt in build_optimizers(asym, rules, ASYM) for g in opt.param_groups for p in g["params"]}
    assert id(asym.softcap_pos) not in held and id(asym.softcap_neg) not in held
    assert rules["softcap_pos"].bits is None  # stored raw (fp16), as #2101's passthrough


def test_asym_caps_score_doc_ttt_and_stay_fixed_through_its_global_phase():
    cfg = dataclasses.replace(TINY_DOC, asym_softcap=True)
    model = tiny_model(cfg)
    with torch.no_grad():
        model.softcap_pos.fill_(3.0)
        model.softcap_neg.fill_(5.0)
    x = torch.randint(4, 1024, (2, 32), generator=torch.Generator().manual_seed(0))
    y = x.roll(-1, 1)
    torch.testing.assert_close(doc_lora_losses(model, None, None, x, y, None), model.token_losses(x, y))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tokens = torch.randint(4, 1024, (200,), generator=torch.Generator().manual_seed(1))
    assert ttt_global_phase(model, tokens, cfg, 0, 1, torch.device("cpu"), None) > 0
    after = dict(model.named_parameters())
    assert after["softcap_pos"].item() == 3.0 and after["softcap_neg"].item() == 5.0
    assert not torch.equal(after["tok_emb.weight"], before["tok_emb.weight"])  # the phase did train the rest


# ---------------------------------------------------------------- TTT LoRA mask
def test_masked_doc_lora_targets_get_no_adapter():
    model = tiny_model(TINY_DOC)
    lora = DocLoRA(model, dataclasses.replace(TINY_DOC, ttt_doc_lora_off="q,v"), 2, torch.device("cpu"), key=0)
    names = [n for n, _ in lora.modules_]
    assert names and not any(re.search(r"\.attn\.(q|v)$", n) for n in names)
    assert any(n.endswith(".attn.k") for n in names) and any(n.endswith(".mlp") for n in names)
    with torch.no_grad():
        for b in lora.b:
            b.normal_()
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, a, o, n=n: seen.setdefault(n, []).append(o.detach().clone()))
             for n, m in model.named_modules() if re.search(r"\.attn\.(q|k|v)$", n)]
    x = torch.randint(4, 1024, (2, 16), generator=torch.Generator().manual_seed(0))
    lora.begin(torch.tensor([0, 1]))
    model.hidden(x)
    lora.begin(None)
    model.hidden(x)
    for h in hooks:
        h.remove()
    # Block 0 sees the same input either way (nothing adapted runs before it): q and v give the base layer's own
    # output, k its output plus its adapter's.
    for kind in ("q", "k", "v"):
        adapted, plain = seen[f"blocks.0.attn.{kind}"]
        assert torch.equal(adapted, plain) == (kind != "k"), kind
    with pytest.raises(GolfError, match="TTT_DOC_LORA_OFF"):
        DocLoRA(model, dataclasses.replace(TINY_DOC, ttt_doc_lora_off="q,o"), 2, torch.device("cpu"), key=0)


# ---------------------------------------------------------------- eval / TTT context
def test_longer_context_is_only_a_window_length():
    """The 2560 context is sw_seq_len: windows of short documents are the same, and each window stays within it."""
    gen = torch.Generator().manual_seed(0)
    docs = [torch.cat([torch.tensor([1]), torch.randint(4, 1024, (n,), generator=gen)]) for n in (20, 24, 30, 90)]
    val = torch.cat(docs)
    counts = torch.ones(val.numel() - 1)
    short, long = (dataclasses.replace(TINY_DOC, ttt_doc_lora_lr=0.0, ttt_phases=0, sw_seq_len=L) for L in (32, 48))
    losses = {}
    for cfg in (short, long):
        losses[cfg.sw_seq_len] = torch.zeros(val.numel() - 1)
        doc_ttt(tiny_model(cfg), val, None, cfg, byte_counts=counts, target_losses=losses[cfg.sw_seq_len])
    first_long = sum(d.numel() for d in docs[:3])  # targets of the three short documents, then the 90-token one
    torch.testing.assert_close(losses[32][: first_long + 32], losses[48][: first_long + 32], rtol=0, atol=0)
    assert not torch.allclose(losses[32][first_long + 48:], losses[48][first_long + 48:])


# ---------------------------------------------------------------- the recipe
def test_the_default_is_pr2101_and_pr1855_differs_only_in_its_sourced_values():
    cfg, base = RECIPES["pr2101"], RECIPES["pr1855"]
    assert cfg == Config() == RECIPES["default"]
    changed = {f.name for f in dataclasses.fields(Config) if getattr(cfg, f.name) != getattr(base, f.name)}
    assert changed <= set(PR2101_SOURCES)
    for name, source in PR2101_SOURCES.items():
        assert getattr(cfg, name) == source.value, name
    assert base.awq_top_k == 0 and not base.asym_softcap and base.ttt_doc_lora_off == ""  # the record has none


def test_pr2101_values_match_its_log():
    log = PR2101_DIR / "train_seed42.log"
    if not log.is_file():
        pytest.skip(f"no PR #2101 folder at {PR2101_DIR}")
    header = dict(re.findall(r"^  (\w+): (.*)$", log.read_text().split("train_shards:", 1)[0], flags=re.M))
    for name, source in PR2101_SOURCES.items():
        if source.log_key is not None:
            assert header[source.log_key] == (source.log_value or str(source.value)), name
    assert header["ttt_eval_seq_len"] == header["eval_seq_len"]  # one golf window length serves both
    assert float(header["ttt_lora_lr"]) * float(header["ttt_local_lr_mult"]) == RECIPES["pr2101"].ttt_doc_lora_lr
    assert header["ttt_q_lora"] == header["ttt_v_lora"] == "False" and header["ttt_k_lora"] == "True"


class RandomLoader:
    """Training-batch stand-in: random non-BOS tokens of the asked shape."""

    def __init__(self):
        self.gen = torch.Generator().manual_seed(3)

    def next_batch(self, global_tokens, seq_len, grad_accum_steps):
        x = torch.randint(4, 1024, (global_tokens // seq_len, seq_len), generator=self.gen)
        return x, x.roll(-1, 1)


# AWQ-lite (2 groups of 8 columns) and AsymLogit on, GPTQ, a codec every pack has.
RUN = dataclasses.replace(ASYM, awq_top_k=2, awq_group=8, gptq_calib_batches=2, gptq_calib_tokens=256,
                          quant_method="gptq", codec="brotli", symbol_layout="none")


def calibrated(cfg=RUN):
    """(model, rules, Hessians, rows seen) as golf.train's calibration leaves them, on random training tokens."""
    from golf.dist import DistEnv
    from golf.train import calibrate_hessians

    model = tiny_model(cfg)
    rules = assign_rules(model.named_parameters(), param_rules(cfg))
    rows: dict = {}
    hessians = calibrate_hessians(cfg, DistEnv(0, 1, 0, torch.device("cpu")), model, rules, RandomLoader(), rows)
    return model, rules, hessians, rows


def awq_groups(path) -> int:
    return sum(len(e.awq.starts) for e in read_artifact(path)[0].values() if getattr(e, "awq", None) is not None)


def test_a_run_writes_and_reloads_the_awq_groups_and_the_caps(tmp_path):
    """golf.train's calibration -> quantise -> write -> reload with AWQ-lite and AsymLogit on."""
    from golf.model.attention import sdpa_attention
    from golf.train import load_artifact_model, quantize_and_write

    model, rules, hessians, rows = calibrated()
    assert set(rows) == set(hessians) and rows["tok_emb.weight"] == 512  # 2 batches of 256 tokens, one head call
    path = tmp_path / "final_model.golf"
    quantize_and_write(RUN, model, rules, hessians, str(path), rows)
    assert awq_groups(path) == 2
    assert read_artifact(path)[0]["softcap_pos"].dtype == torch.float16
    reloaded = load_artifact_model(str(path), RUN, sdpa_attention, torch.device("cpu"))
    assert reloaded.softcap_pos.item() == model.softcap_pos.half().item()


def test_an_artifact_over_the_limit_is_rewritten_without_the_awq_groups(tmp_path):
    """golf.train.fit_artifact: SIZE_FALLBACK drops AWQ-lite's groups only when code + artifact break the limit."""
    from golf import train

    model, rules, hessians, rows = calibrated()
    path = str(tmp_path / "final_model.golf")

    def fit(cfg, code_bytes):
        lines = []
        size = train.fit_artifact(cfg, model, rules, hessians, path, rows, code_bytes, lines.append)
        return size, awq_groups(path), lines

    with_awq, groups, lines = fit(RUN, 0)
    assert groups == 2 and lines == [] and with_awq == os.path.getsize(path)
    # Code that leaves less than the AWQ artifact: rewritten without the groups, smaller, and the log says so.
    code = train.SIZE_LIMIT - with_awq + 1
    size, groups, lines = fit(RUN, code)
    assert groups == 0 and size < with_awq and size == os.path.getsize(path)
    assert lines == [f"size_fallback artifact_bytes:{with_awq} code_bytes:{code} limit:16000000 awq_top_k:2 "
                     f"rewritten_artifact_bytes:{size} (without AWQ-lite's groups)"]
    assert read_artifact(path)[1]["config"]["awq_top_k"] == 0  # the artifact says how it was quantised
    # SIZE_FALLBACK=0 keeps the groups (the run then reports the size violation), as does a fitting artifact.
    assert fit(dataclasses.replace(RUN, size_fallback=False), code)[1:] == (2, [])
