"""Quantiser pieces: golf's calibration, GPTQ, gate, LQER and dequantisation against the record's own functions,
fed the same weights and the same Hessians.

One set of weights: golf's GPT at small dims, every parameter random, copied into the record's GPT through
golf/equiv/model.py's name map. Dims: 8 heads x 48 = 384 wide, vocab 512, the recipe's layer structure, so every
tensor the record quantises has more than 65,536 elements (its fp16 pass-through bound, R:2229) as at the real
dims. The record's state is cast by its own dtype rule (GPT(h).bfloat16() then restore_fp32_params, R:3332-3333,
R:2694-2696): the embedding bf16, the rest fp32.
Pieces: Hessians from one calibration batch (golf's calibrate_hessians against the record's collect_hessians);
GPTQ symbols and fp16 scales per tensor class (attn, mlp int6; embed int7); the attention gate; the LQER picks and
their factors; the dequantised state with its dtypes; logits of the round-trip models.
"""

import contextlib
import dataclasses
import io

import torch

from golf.equiv.model import load_shared_weights, name_map, randomise_, softcapped, tokens
from golf.equiv.record import record_gpt, record_hparams
from golf.equiv.report import Piece, compare, verdict

HEAD_DIM, VOCAB, SEQ = 48, 512, 64
# fp32 X^T X of the same activations; the two forwards differ in op order only (model pieces: <= 1e-4 relative)
HESSIAN_RTOL = 1e-4
# Round-trip logits: both models in fp32 on the dequantised values (dtypes are compared in quant.dequantised).
LOGITS_ATOL, LOGITS_RTOL = 1e-4, 1e-4
# golf -> the record's flat (unbanked, R:2573-2595) name of each bank slot; other names are the same on both sides.
BANK_SLOTS = {("qo_bank", 0): "attn.c_q", ("qo_bank", 1): "attn.proj", ("kv_bank", 0): "attn.c_k",
              ("kv_bank", 1): "attn.c_v", ("mlp_up_bank", 0): "mlp.fc", ("mlp_down_bank", 0): "mlp.proj"}
CLASSES = {"attn": (".attn.q.", ".attn.k.", ".attn.v.", ".attn.proj."), "mlp": (".mlp.",), "embed": ("tok_emb",)}


def small_dims(cfg) -> dict:
    return dict(vocab_size=VOCAB, model_dim=cfg.num_heads * HEAD_DIM, train_seq_len=SEQ)


def flat_names(golf_model, record_model) -> dict[str, str]:
    """golf parameter name -> the record's flat state-dict name, for every tensor the two map one to one."""
    n = record_model.num_layers
    out = {}
    for golf_name, record_name, index in name_map(golf_model, record_model):
        if index is None:
            out[golf_name] = record_name
        elif isinstance(index, int) and record_name.endswith("_bank"):
            out[golf_name] = f"blocks.{index % n}.{BANK_SLOTS[(record_name, index // n)]}.weight"
    return out


def record_dtype_template(rec, h) -> dict[str, torch.Tensor]:
    """The record's flat state with its train/eval dtypes (deserialize's template, R:2694-2696)."""
    model = rec.module.GPT(h).bfloat16()
    rec.module.restore_fp32_params(model)
    return rec.module._unbank_state_dict(model.state_dict(), h.num_layers)


class OneBatch:
    """A loader that hands both calibrations the same (x, y) whatever they ask for."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def next_batch(self, *args):
        return self.x, self.x


def calibration_batch() -> torch.Tensor:
    """Two rows of SEQ; the first crosses a document start (BOS at 23), where the two calibrations could differ."""
    return torch.cat([tokens(7, SEQ, [0, 23]), tokens(8, SEQ, [])])


def hessian_piece(rec, h, golf_cfg, golf_model, record_model, rules, names) -> tuple[Piece, dict, dict | None, dict]:
    """golf's calibrate_hessians (one rank) against the record's collect_hessians, one batch, looping on (the
    record calibrates after training, R:2655). Returns the piece, the record's Hessians under golf's names, its
    activation RMS (#2101's AWQ-lite; None for a record without it) and golf's calibration rows per weight."""
    from golf.dist import DistEnv
    from golf.train import calibrate_hessians

    x = calibration_batch()
    record_model.looping_active = True
    theirs = rec.module.collect_hessians(record_model, OneBatch(x), h, torch.device("cpu"), n_calibration_batches=1)
    act_stats = None
    if isinstance(theirs, tuple):  # #2101 also returns the activation RMS that ranks AWQ-lite's groups
        theirs, act_stats = theirs
    for block in record_model.blocks:  # collect_hessians turns the fused Triton MLP back on (R:2143)
        block.mlp.use_fused = False
    cfg = dataclasses.replace(golf_cfg, gptq_calib_batches=1, gptq_calib_tokens=x.numel())
    rows_seen: dict[str, int] = {}
    ours = calibrate_hessians(cfg, DistEnv(0, 1, 0, torch.device("cpu")), golf_model, rules, OneBatch(x), rows_seen)
    by_golf = {g: theirs[r] for g, r in names.items() if r in theirs}
    missing = sorted(set(ours) ^ set(by_golf))
    worst, worst_name, worst_abs = 0.0, "", 0.0
    for name in sorted(set(ours) & set(by_golf)):
        diff = float((ours[name] - by_golf[name]).abs().max())
        rel = diff / max(float(by_golf[name].abs().max()), 1e-12)
        if rel >= worst:
            worst, worst_name, worst_abs = rel, name, diff
    detail = (f"{len(by_golf)} Hessians, (2, {SEQ}) batch with a BOS inside a row, worst {worst_name} "
              f"(max |diff| / max |record| <= {HESSIAN_RTOL:g})" + (f"; only one side: {missing}" if missing else ""))
    piece = verdict("quant.hessians", worst <= HESSIAN_RTOL and not missing, worst_abs, worst, detail)
    return piece, by_golf, act_stats, rows_seen


def class_of(name: str) -> str | None:
    return next((c for c, marks in CLASSES.items() if any(m in name for m in marks)), None)


def gptq_pieces(entries, result, names, h) -> list[Piece]:
    """Symbols and fp16 scales per tensor class, bit for bit."""
    from golf.quant.rtn import QuantTensor

    pieces = []
    for cls in CLASSES:
        members = [g for g in names if class_of(g) == cls and names[g] + ".q" in result]
        ours_q, theirs_q, ours_s, theirs_s, stored = [], [], [], [], []
        for g in members:
            e = entries[g]
            if not isinstance(e, QuantTensor):
                stored.append(g)
                continue
            ours_q.append(e.q.reshape(-1))
            theirs_q.append(result[names[g] + ".q"].reshape(-1))
            ours_s.append(e.scale.float())
            theirs_s.append(result[names[g] + ".scale"].float())
        if not members or stored:
            pieces.append(verdict(f"quant.gptq.{cls}", False, float("inf"), float("inf"),
                                  f"golf stores {stored or 'no tensor'} unquantised"))
            continue
        q, rq, s, rs = (torch.cat(t) for t in (ours_q, theirs_q, ours_s, theirs_s))
        share = float((q != rq).float().mean()) if q.shape == rq.shape else 1.0
        clip = {"attn": h.attn_clip_sigmas, "mlp": h.mlp_clip_sigmas, "embed": h.embed_clip_sigmas}[cls]
        bits = h.embed_bits if cls == "embed" else h.matrix_bits
        equal = q.shape == rq.shape and torch.equal(q, rq) and torch.equal(s, rs)
        max_abs = float((s - rs).abs().max()) if s.shape == rs.shape else float("inf")
        pieces.append(verdict(f"quant.gptq.{cls}", equal, max_abs, max_abs / max(float(rs.abs().max()), 1e-12),
                              f"{len(members)} tensors int{bits}, record clip {clip} sigma: {share:.3g} of symbols "
                              f"differ (symbols and fp16 scales bit-equal)"))
    return pieces


def gate_piece(entries, result, names) -> Piece:
    """The attention gate: int8 symbols and fp16 row scales of the record's _quantize_gate_int8_row (R:2195)."""
    from golf.quant.rtn import QuantTensor

    gates = [g for g in names if g.endswith(".attn.gate")]
    if not gates or names[gates[0]] + ".gq" not in result:
        return verdict("quant.gate", not gates, 0.0, 0.0, "the record stores no int8 gate here")
    stored = [g for g in gates if not isinstance(entries[g], QuantTensor)]
    if stored:
        return verdict("quant.gate", False, float("inf"), float("inf"),
                       f"golf stores {len(stored)} gates as {entries[stored[0]].dtype}, the record int8 per row")
    q = torch.cat([entries[g].q.reshape(-1) for g in gates])
    rq = torch.cat([result[names[g] + ".gq"].reshape(-1) for g in gates])
    s = torch.cat([entries[g].scale.float() for g in gates])
    rs = torch.cat([result[names[g] + ".gs"].float() for g in gates])
    equal = q.shape == rq.shape and torch.equal(q, rq) and torch.equal(s, rs)
    diff = float((s - rs).abs().max()) if s.shape == rs.shape else float("inf")
    return verdict("quant.gate", equal, diff, diff / max(float(rs.abs().max()), 1e-12),
                   f"{len(gates)} gates {tuple(entries[gates[0]].shape)}: int8 symbols and fp16 row scales bit-equal")


def lqer_pieces(entries, result, meta, names) -> list[Piece]:
    """Which tensors carry LQER factors, and the factors (A int2 + scale, B int4 + group scales) bit for bit."""
    ours = {g for g in names if getattr(entries[g], "lqer", None) is not None}
    theirs = {g for g in names if "lqer" in meta.get(names[g], "")}
    picks = verdict("quant.lqer.picks", ours == theirs, len(ours ^ theirs), 0.0,
                    f"golf {sorted(ours)} vs record {sorted(theirs)} (record: top {len(theirs)} by ||W - Q||_F)")
    both = sorted(ours & theirs)
    diffs = []
    for g in both:
        f, r = entries[g].lqer, names[g]
        pairs = ((f.qa, result[r + ".lqA_a"]), (f.a_scale.reshape(-1), result[r + ".lqAs_a"].reshape(-1)),
                 (f.qb, result[r + ".lqB_a"]), (f.b_scale, result[r + ".lqBs_a"]))
        diffs += [float((a.float() - b.float()).abs().max()) if a.shape == b.shape else float("inf") for a, b in pairs]
    worst = max(diffs, default=0.0)
    factors = verdict("quant.lqer.factors", bool(both) and worst == 0.0, worst, 0.0,
                      f"{len(both)} common picks: A, A scale, B, B group scales bit-equal")
    return [picks, factors]


def dequantised_piece(golf_state, record_state, names) -> Piece:
    """Every mapped tensor of the two dequantised states: values (exact) and dtype."""
    worst, worst_name, dtypes = 0.0, "", []
    for g, r in names.items():
        a, b = golf_state[g], record_state[r]
        if a.dtype != b.dtype:
            dtypes.append(f"{g} {a.dtype} vs {b.dtype}")
        diff = float((a.float() - b.float().reshape(a.shape)).abs().max())
        if diff >= worst:
            worst, worst_name = diff, g
    detail = f"{len(names)} tensors exact, worst {worst_name}; dtypes " + ("; ".join(dtypes) if dtypes else "equal")
    embed = golf_state["tok_emb.weight"].dtype
    return verdict("quant.dequantised", worst == 0.0 and not dtypes, worst, 0.0, f"{detail} (embedding {embed})")


def roundtrip_piece(rec, h, golf_cfg, golf_state, record_state) -> Piece:
    """Logits of GPT(golf) holding golf's dequantised state against the record's GPT holding its own, both fp32
    on CPU, looping on (the round trip is scored so)."""
    from golf.model.gpt import GPT

    golf_model = GPT(golf_cfg)
    golf_model.load_state_dict(golf_state)
    record_model = record_gpt(rec, h)
    head_dim = h.model_dim // h.num_heads
    banked = rec.module._rebank_state_dict(record_state, h.num_layers, h.model_dim, h.num_kv_heads * head_dim,
                                           int(h.mlp_mult * h.model_dim))
    record_model.load_state_dict({k: v.float() for k, v in banked.items()}, strict=True)
    record_model.looping_active = True
    record_model.eval()
    golf_model.eval()
    x = tokens(9, SEQ, [0])
    with torch.no_grad():
        theirs = record_model.forward_logits(x)
        ours = softcapped(golf_model, golf_model.logits(x))
    return compare("quant.roundtrip_logits", ours, theirs, LOGITS_ATOL, LOGITS_RTOL,
                   detail=f"(1, {SEQ}) tokens, fp32 forward of each side's dequantised weights")


def check(rec, cfg) -> list[Piece]:
    from golf.model.gpt import GPT
    from golf.params import assign_rules, param_rules
    from golf.quant.state import dequantize_state
    from golf.train import quantize_entries

    golf_cfg = dataclasses.replace(cfg, **small_dims(cfg), sw_seq_len=SEQ)
    h = record_hparams(rec, **small_dims(cfg), eval_seq_len=SEQ)
    torch.manual_seed(0)
    golf_model = GPT(golf_cfg)
    randomise_(golf_model)
    record_model = record_gpt(rec, h)
    load_shared_weights(golf_model, record_model)
    names = flat_names(golf_model, record_model)
    rules = assign_rules(golf_model.named_parameters(), param_rules(golf_cfg))
    pieces = []
    hessians_piece, hessians, act_stats, rows_seen = hessian_piece(rec, h, golf_cfg, golf_model, record_model, rules,
                                                                   names)
    pieces.append(hessians_piece)
    # Both quantisers get the record's Hessians, so a quantiser difference is not a calibration one.
    template = record_dtype_template(rec, h)
    record_flat = {k: v.to(template[k].dtype) for k, v in
                   rec.module._unbank_state_dict(record_model.state_dict(), h.num_layers).items()}
    with contextlib.redirect_stdout(io.StringIO()):  # its "Quantized weights:" log lines
        record_hessians = {names[g]: t for g, t in hessians.items()}
        stats = () if act_stats is None else (act_stats,)
        result, meta = rec.module.gptq_mixed_quantize(record_flat, record_hessians, *stats, h)
    golf_state = {k: v.detach().clone() for k, v in golf_model.state_dict().items()}
    entries = quantize_entries(golf_cfg, golf_state, rules, hessians, rows_seen)
    pieces += gptq_pieces(entries, result, names, h)
    pieces.append(gate_piece(entries, result, names))
    pieces += lqer_pieces(entries, result, meta, names)
    golf_deq = dequantize_state(entries, golf_model.state_dict())
    record_deq = rec.module.dequantize_mixed(result, meta, template)
    pieces.append(dequantised_piece(golf_deq, record_deq, names))
    pieces.append(roundtrip_piece(rec, h, golf_cfg, golf_deq, record_deq))
    return pieces
