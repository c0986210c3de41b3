"""`python -m golf.bench quant`: RTN vs GPTQ vs GPTQ+LQER layer-output error, codecs vs entropy, artifact bytes.

Default: synthetic layers (Gaussian weights, std 0.02, fed correlated inputs: white noise through a
random mixing with a decaying spectrum, so GPTQ has correlations to exploit).
`--smoke SECONDS`: train the smoke preset for SECONDS on the sample data, then val_bpb of the fp32
model, RTN, GPTQ and GPTQ+LQER (top-K, both weightings; per_byte as configured) at the run's bits (matrices
int6, embedding int7).
`--record`: a record-size model (Config() defaults, 36M params) with trained-like random weights (Gaussian
rows, per-row std spread exp(0.3 z), as tools/preflight.py draws them) and synthetic Hessians: the
artifact bytes of each combination of embedding quantiser, LQER and codec, and today's (previous) default.
`--artifact PATH`: only the codec table, on the symbols of any final_model.golf.
`--vs-record`: golf's artifact beside the 1.0611 record's own per-group serializer (its train_gpt.py imported on
the CPU, `_serialize_pergroup`: lrzip -L 9 per tensor kind, similarity-sorted rows, brotli remainder), both fed the
SAME quantised symbols, scales and LQER factors: bytes per group and in total. On a record-dims state
(Config from the env, trained-like Gaussian rows, RTN symbols: the codecs see the same grid either way) or, with
--smoke SECONDS / --artifact PATH, on a smoke-trained state.
The codec table compresses the same GPTQ symbols with each codec, group by group, in each layout (rows as
stored, transposed, similarity-sorted, sorted then transposed), and sums each codec's best layout per group.
"""
import argparse
import dataclasses
import json
import math
import os
import sys
import time

import numpy
import torch

from golf.artifact import compress_chunks, encode_artifact, read_artifact, read_file_bytes, read_header
from golf.budget import WallclockBudget
from golf.compress import CODECS, similarity_order
from golf.config import Config, GolfError, from_env
from golf.data import load_val_byte_sidecar, load_val_tokens
from golf.dist import setup_dist
from golf.evaluate import eval_bpb, target_byte_counts
from golf.model.attention import sdpa_attention
from golf.model.gpt import GPT
from golf.params import assign_rules, param_rules
from golf.quant.awq import activation_rms, protect_salient_groups
from golf.quant.gptq import output_error
from golf.quant.rtn import QuantTensor, as_rows, dequantize_rows
from golf.quant.state import LqerPlan, add_lqer, dequantize_state, quantize_state
from golf.size_predict import record_serialized_streams, record_serializer
from golf.tokenizer import build_byte_luts, load_tokenizer
from golf.train import RunLog, build_and_train, calibrate_hessians

# (rows, cols) of the synthetic layers: an attention projection and the MLP pair of dim 512.
BENCH_SHAPES = {"attn.proj": (512, 512), "mlp.fc": (2048, 512), "mlp.proj": (512, 2048)}
BENCH_CLIP_K = {"attn.proj": 13.0, "mlp.fc": 11.5, "mlp.proj": 11.5}  # the records' SDClip k
BENCH_TOKENS = 4096
LQER_BUDGETS = (6_000, 12_000, 24_000, 48_000)  # per_byte budgets (nominal factor bytes) the LQER sweep tries


# The artifact's codecs (ZPAQ included: lrzip -L 9's back end, in-process) but zlib.
BENCH_CODECS = {k: v for k, v in CODECS.items() if k != "zlib"}
LAYOUTS = {"rows": lambda q: q, "transposed": lambda q: q.T, "simsort": lambda q: q[similarity_order(q)],
           "simsort+T": lambda q: q[similarity_order(q)].T}  # the record's layout for its hot tensors


def correlated_inputs(n: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """(n, cols) inputs whose covariance has singular values decaying like 1 / (1 + i / 8)."""
    mixing = torch.randn(cols, cols, generator=generator) / math.sqrt(cols)
    spectrum = 1.0 / (1.0 + torch.arange(cols) / 8.0)
    return (torch.randn(n, cols, generator=generator) * spectrum) @ mixing


def synthetic_layers(seed: int) -> tuple[dict, dict]:
    """({name: weight (rows, cols)}, {name: Hessian X^T X (cols, cols)}) for BENCH_SHAPES."""
    generator = torch.Generator().manual_seed(seed)
    state, hessians = {}, {}
    for name, (rows, cols) in BENCH_SHAPES.items():
        state[name] = torch.randn(rows, cols, generator=generator) * 0.02
        x = correlated_inputs(BENCH_TOKENS, cols, generator)
        hessians[name] = x.T @ x
    return state, hessians


def order0_entropy_bytes(symbols: numpy.ndarray) -> float:
    """Bytes an ideal order-0 coder needs for these int8 symbols (one histogram for all)."""
    counts = numpy.unique(symbols, return_counts=True)[1]
    p = counts / counts.sum()
    return float(-(p * numpy.log2(p)).sum() * symbols.size / 8)


def with_lqer(state, hessians, entries, weighting: str, top_k: int, select: str = "output_error",
              budget: int = 0) -> dict:
    return add_lqer(state, entries, hessians, dataclasses.replace(LqerPlan(), top_k=top_k, weighting=weighting,
                                                                  select=select, budget_bytes=budget))


def quant_report(state: dict[str, torch.Tensor], hessians: dict[str, torch.Tensor], plan: dict[str, dict]) -> dict:
    """Quantise `state` by `plan` with RTN, GPTQ and GPTQ + LQER (every tensor, each weighting; same bits
    and clip). Returns {"layers": [{name, rtn, gptq, lqer_frobenius, lqer_hessian}] output errors for names
    with a Hessian, "codecs": [{codec, layout, bytes, entropy_bytes, ratio, encode_s, decode_s}] over the GPTQ
    symbols, "lqer_k": [{k, error, factor_bytes}] total output error and stored factor bytes by top-K}."""
    rtn = quantize_state(state, {n: {**s, "method": "rtn"} for n, s in plan.items()})
    gptq = quantize_state(state, {n: {**s, "method": "gptq"} for n, s in plan.items()}, hessians)
    every = len(state)
    lqer = {w: with_lqer(state, hessians, gptq, w, every) for w in ("frobenius", "hessian")}
    names = [n for n in state if n in hessians and isinstance(gptq[n], QuantTensor)]

    def err(entries, name):
        return output_error(state[name], dequantize_rows(entries[name]), hessians[name])

    layers = [{"name": n, "rtn": err(rtn, n), "gptq": err(gptq, n), "lqer_frobenius": err(lqer["frobenius"], n),
               "lqer_hessian": err(lqer["hessian"], n)} for n in names]
    lqer_k = []
    selections = [(f"top-{k}", k, "output_error", 0) for k in range(min(len(names), 12) + 1)]
    selections += [(f"per_byte {b:,}", 1, "per_byte", b) for b in LQER_BUDGETS]
    for label, k, select, budget in selections:
        entries = with_lqer(state, hessians, gptq, "hessian", k, select, budget)
        blocks = read_header(encode_artifact(entries, {n: "all" for n in entries}, {}), "bench")[0]["blocks"]
        lqer_k.append({"k": label, "tensors": sum(1 for e in entries.values() if getattr(e, "lqer", None) is not None),
                       "error": math.sqrt(sum(err(entries, n) ** 2 for n in names)),
                       "factor_bytes": sum(b["length"] for b in blocks.values() if b["part"].startswith("lqer"))})
    by_group: dict[str, list] = {}
    for n, e in gptq.items():
        if isinstance(e, QuantTensor):
            by_group.setdefault(plan[n].get("group", "all"), []).append(e.q)
    return {"layers": layers, "codecs": codec_table(by_group), "lqer_k": lqer_k}


def codec_table(groups: dict[str, list[torch.Tensor]], codecs=None, layouts=None) -> list[dict]:
    """Each codec on the same int8 symbols, group by group as the artifact stores them (each tensor's rows,
    its transpose, or its rows in similarity order, back to back); matrix codecs get the tensors' shapes."""
    rows = []
    for group, qs in groups.items():
        mats = [as_rows(q).numpy().astype(numpy.int8) for q in qs]
        for layout in layouts or LAYOUTS:
            laid = [numpy.ascontiguousarray(LAYOUTS[layout](m)) for m in mats]
            symbols = numpy.concatenate([m.ravel() for m in laid])
            data = symbols.tobytes()
            chunks = [(m.tobytes(), m.shape) for m in laid]
            entropy = order0_entropy_bytes(symbols)
            for codec in codecs or BENCH_CODECS:
                decompress = BENCH_CODECS[codec][1]
                start = time.perf_counter()
                blob = compress_chunks(codec, chunks)
                encode_s = time.perf_counter() - start
                start = time.perf_counter()
                exact = decompress(blob) == data
                rows.append({"group": group, "codec": codec, "layout": layout, "symbols": symbols.size,
                             "bytes": len(blob), "entropy_bytes": entropy, "ratio": len(blob) / entropy,
                             "encode_s": encode_s, "decode_s": time.perf_counter() - start, "exact": exact})
    return rows


def best_layouts(rows: list[dict]) -> list[dict]:
    """Per codec: each group at its smallest layout, summed (what an artifact using that codec would store,
    before the row order's permutation bytes)."""
    out = []
    for codec in dict.fromkeys(r["codec"] for r in rows):
        best = [min((r for r in rows if r["codec"] == codec and r["group"] == g), key=lambda r: r["bytes"])
                for g in dict.fromkeys(r["group"] for r in rows)]
        out.append({"codec": codec, "bytes": sum(r["bytes"] for r in best),
                    "entropy_bytes": sum(r["entropy_bytes"] for r in best),
                    "layouts": {r["group"]: r["layout"] for r in best},
                    "decode_s": sum(r["decode_s"] for r in best)})
    return out


def smoke_model(seconds: float) -> tuple[dict, dict, dict, dict]:
    """Train the smoke preset for `seconds`; returns ({fp32, rtn, gptq, lqer_*: val_bpb}, state, hessians, plan)."""
    cfg = dataclasses.replace(from_env({"PRESET": "smoke"}), max_wallclock_seconds=seconds, quant_reserve_seconds=0.0,
                              quant_method="gptq", out_dir=os.path.join("runs", "bench_quant"))
    env = setup_dist(cfg.device)
    model, rules, loader, _ = build_and_train(cfg, env, RunLog(cfg, env), WallclockBudget(cfg, env.device),
                                              sdpa_attention)
    hessians = calibrate_hessians(cfg, env, model, rules, loader)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    val = load_val_tokens(cfg.data_path, cfg.val_max_tokens)
    luts = build_byte_luts(load_tokenizer(cfg.tokenizer_path), cfg.vocab_size)
    byte_counts = target_byte_counts(val, luts, load_val_byte_sidecar(cfg.data_path, cfg.val_max_tokens))
    score = lambda m: eval_bpb(m, val, luts, cfg.sw_seq_len, cfg.sw_seq_len, cfg.val_batch_tokens,  # noqa: E731
                               byte_counts=byte_counts).val_bpb
    bpb = {"fp32": score(model)}
    plan = {n: {"bits": r.bits, "clip_k": r.clip_k, "group": r.group} for n, r in rules.items()}
    rtn = quantize_state(state, {n: {**s, "method": "rtn"} for n, s in plan.items()})
    gptq = quantize_state(state, {n: {**s, "method": "gptq"} for n, s in plan.items()}, hessians)
    runs = {"rtn": rtn, "gptq": gptq, **{f"gptq+lqer_{w}": with_lqer(state, hessians, gptq, w, cfg.lqer_top_k)
                                         for w in ("frobenius", "hessian")},
            f"gptq+lqer per_byte {cfg.lqer_budget_bytes:,}": with_lqer(state, hessians, gptq, cfg.lqer_weighting,
                                                                     cfg.lqer_top_k, "per_byte", cfg.lqer_budget_bytes)}
    for label, entries in runs.items():
        model.load_state_dict(dequantize_state(entries, state))
        bpb[label] = score(model)
    quantised = [n for n in hessians if plan[n]["bits"] is not None]
    return bpb, {n: state[n] for n in quantised}, hessians, {n: plan[n] for n in quantised}


def trained_like_state(cfg: Config, seed: int) -> tuple[dict, dict, dict]:
    """(state, plan, groups) of GPT(cfg), quantised matrices redrawn as Gaussian rows of std 1 / sqrt(cols) x
    exp(0.3 z_row) (tools/preflight.py's trained-like draw), the rest as initialised."""
    torch.manual_seed(seed)
    model = GPT(cfg, sdpa_attention)
    rules = assign_rules(model.named_parameters(), param_rules(cfg))
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, p in model.state_dict().items():
        if rules[name].bits is not None:
            rows = p.shape[0] if p.dim() > 1 else 1
            spread = torch.exp(0.3 * torch.randn(rows, 1, generator=g))
            p = (torch.randn(rows, p.numel() // rows, generator=g) * spread / math.sqrt(p.numel() // rows)).reshape(p.shape)
        state[name] = p.detach()
    plan = {n: {"bits": r.bits, "clip_k": r.clip_k} for n, r in rules.items()}
    return state, plan, {n: r.group for n, r in rules.items()}


def synthetic_hessians(state: dict, plan: dict, seed: int) -> dict:
    """One correlated-input Hessian per input width, shared by every quantised matrix of that width."""
    g = torch.Generator().manual_seed(seed)
    by_cols = {}
    out = {}
    for name, w in state.items():
        if plan[name]["bits"] is not None and w.dim() == 2:
            cols = w.shape[1]
            if cols not in by_cols:
                x = correlated_inputs(BENCH_TOKENS, cols, g)
                by_cols[cols] = x.T @ x
            out[name] = by_cols[cols]
    return out


def previous_default_bytes(entries: dict, groups: dict) -> int:
    """Bytes of the format this build replaces (version 1, the previous default): brotli-11 over each group's
    parts in order (symbols, then fp16 scales byte-shuffled), a plain-JSON header (~300 B a tensor), 44 B
    preamble + checksum. The JSON is re-created here with the same fields, so +-1% of the header."""
    chunks, records = {}, []
    for name, e in entries.items():
        parts = [e.q.numpy().tobytes(), e.scale.view(torch.uint8).numpy().reshape(-1, 2).T.tobytes()] \
            if isinstance(e, QuantTensor) else [e.view(torch.uint8).numpy().reshape(-1, e.element_size()).T.tobytes()]
        chunks.setdefault(groups[name], []).extend(parts)
        records.append({"name": name, "group": groups[name], "kind": "quant", "shape": list(e.shape),
                        "dtype": "float32", "bits": 6, "scale_layout": "row_fp16",
                        "parts": [{"part": "q", "transform": "none", "offset": 10 ** 7, "length": 10 ** 6}] * len(parts)})
    payload = sum(len(CODECS["brotli"][0](b"".join(c))) for c in chunks.values())
    header = json.dumps({"groups": {g: {"codec": "brotli", "offset": 10 ** 7, "length": 10 ** 6, "raw_length": 10 ** 7}
                                    for g in chunks}, "tensors": records, "meta": {"config": dataclasses.asdict(Config())}},
                        sort_keys=True, separators=(",", ":"))
    return 44 + len(header) + payload


def record_report(seed: int, codecs=("ans", "ctx", Config().codec), cfg: Config | None = None) -> list[dict]:
    """Artifact bytes at record size for each combination (embedding RTN int8 | GPTQ int7) x (LQER off | top-K |
    per_byte) x codec, plus the previous default (RTN int8 embedding, version 1 with brotli). The matrices are RTN
    int6 in every row (GPTQ of 34M matrix params takes too long on a shared CPU; it moves symbols within
    the same grid), so the rows differ only by the embedding, LQER, codec and container."""
    cfg = cfg or Config()
    state, plan, groups = trained_like_state(cfg, seed)
    hessians = synthetic_hessians(state, plan, seed)
    # The embedding's Hessian: the head input (dim 512), like every other 512-wide input here.
    hessians["tok_emb.weight"] = next(h for n, h in hessians.items() if h.shape[0] == cfg.model_dim)
    start = time.perf_counter()
    matrices = quantize_state({n: w for n, w in state.items() if n != "tok_emb.weight"},
                              {n: {**s, "method": "rtn"} for n, s in plan.items()})
    matrix_s = time.perf_counter() - start
    rows = []
    embeds = {"rtn-int8": {"bits": 8, "method": "rtn"}, "gptq-int7": {"bits": cfg.embed_bits, "method": "gptq"}}
    for embed, embed_spec in embeds.items():
        start = time.perf_counter()
        emb = {"tok_emb.weight": state["tok_emb.weight"]}
        base = {**quantize_state(emb, {"tok_emb.weight": {**plan["tok_emb.weight"], **embed_spec}}, hessians),
                **matrices}
        base = {n: base[n] for n in state}
        quant_s = matrix_s + time.perf_counter() - start
        if embed == "rtn-int8":
            start = time.perf_counter()
            rows.append({"combination": "previous default: embed rtn-int8, v1 brotli", "bytes":
                         previous_default_bytes(base, groups), "quant_s": quant_s,
                         "encode_s": time.perf_counter() - start})
        selections = (("lqer off", 0, "weight_error", 0),
                      (f"lqer top-{cfg.lqer_top_k}", cfg.lqer_top_k, "weight_error", 0),
                      (f"lqer per_byte {cfg.lqer_budget_bytes:,}", cfg.lqer_top_k, "per_byte", cfg.lqer_budget_bytes))
        for label, top_k, select, budget in selections:
            start = time.perf_counter()
            entries = with_lqer(state, hessians, base, cfg.lqer_weighting, top_k, select, budget)
            lqer_s = time.perf_counter() - start
            for codec in codecs:
                # The default's codecs with its layouts; ctx alone with auto (a similarity sort where it pays); the
                # others as they store best on i.i.d. rows (rows as they are).
                layout = cfg.symbol_layout if codec == cfg.codec else "auto" if codec == "ctx" else "none"
                start = time.perf_counter()
                blob = encode_artifact(entries, groups, {"config": dataclasses.asdict(cfg)}, codec, layout)
                header = read_header(blob, "record")[0]
                rows.append({"combination": f"embed {embed}, {label}, v2 {codec} {layout}", "bytes": len(blob),
                             "quant_s": quant_s + lqer_s, "encode_s": time.perf_counter() - start,
                             "lqer_bytes": sum(b["length"] for b in header["blocks"].values()
                                               if b["part"].startswith("lqer")),
                             "lqer_tensors": [t["name"] for t in header["tensors"] if t.get("lqer")]})
    return rows


# The record's streams (its _GROUP_ORDER) -> the golf group holding the same symbols; the rest (scales, gates,
# LQER factors, raw tensors, row orders, headers) is "other" on both sides.
RECORD_STREAM_GROUP = {"_tok_emb.weight.q": "embed", "attn.c_k.weight.q": "attn", "attn.c_q.weight.q": "attn",
                       "attn.c_v.weight.q": "attn", "attn.proj.weight.q": "attn", "mlp.fc.weight.q": "mlp",
                       "mlp.proj.weight.q": "mlp"}


def golf_group_bytes(blob: bytes) -> dict[str, int]:
    """{group: bytes of its symbol block} of a golf artifact, 'other' (every other block, the header, preamble and
    checksum) and 'total'."""
    header, _ = read_header(blob, "bench")
    out = {b["group"]: b["length"] for b in header["blocks"].values() if b["part"] == "q"}
    out["other"] = len(blob) - sum(out.values())
    out["total"] = len(blob)
    return out


def vs_record(entries: dict, groups: dict, cfg: Config, module) -> list[dict]:
    """Both serializers on the same quantised entries: one row per golf group ({group, golf, record, streams}),
    the record's bytes summed over its streams of that group's symbols."""
    start = time.perf_counter()
    ours = golf_group_bytes(encode_artifact(entries, groups, {"config": dataclasses.asdict(cfg)}, cfg.codec,
                                            cfg.symbol_layout))
    golf_s = time.perf_counter() - start
    start = time.perf_counter()
    theirs = record_serialized_streams(module, entries, cfg.num_layers)
    record_s = time.perf_counter() - start
    rows = []
    # A golf group with no record stream (the int8 attention gate's: the record keeps it in its remainder) is "other".
    matched = [g for g in ours if g in RECORD_STREAM_GROUP.values()]
    ours["other"] += sum(b for g, b in ours.items() if g not in matched + ["other", "total"])
    for group in matched + ["other", "total"]:
        streams = [s for s, g in RECORD_STREAM_GROUP.items() if g == group]
        if group == "other":
            streams = [s for s in theirs if s not in RECORD_STREAM_GROUP and s != "total"]
        if group == "total":
            streams = ["total"]
        rows.append({"group": group, "golf": ours[group], "record": sum(theirs[s] for s in streams),
                     "streams": {s: theirs[s] for s in streams}})
    rows[-1].update(golf_s=golf_s, record_s=record_s)
    return rows


def print_vs_record(title: str, rows: list[dict]) -> None:
    print(title)
    print(f"{'group':<8} {'golf B':>12} {'record B':>12} {'golf/record':>11}  record streams")
    for r in rows:
        streams = ", ".join(f"{s} {b:,}" for s, b in r["streams"].items()) if r["group"] != "total" else \
            f"encode golf {r['golf_s']:.1f}s, record {r['record_s']:.1f}s"
        print(f"{r['group']:<8} {r['golf']:>12,} {r['record']:>12,} {r['golf'] / r['record']:>11.5f}  {streams}",
              flush=True)


def record_dims_entries(cfg: Config, seed: int) -> tuple[dict, dict]:
    """(entries, groups) of a record-dims state: trained-like Gaussian rows (trained_like_state), every matrix RTN
    at the Config's bits and clips (the codecs compare on the same symbols; GPTQ of 36M weights takes too long
    here and moves symbols within the same grid), LQER by the Config's plan on synthetic Hessians. With AWQ_TOP_K,
    the embedding is GPTQ'd with its most salient groups protected (where #2101's runs put its one group)."""
    state, plan, groups = trained_like_state(cfg, seed)
    hessians = synthetic_hessians(state, plan, seed)
    hessians["tok_emb.weight"] = next(h for n, h in hessians.items() if h.shape[0] == cfg.model_dim)
    plan = {n: {**s, "method": "rtn"} for n, s in plan.items()}
    if cfg.awq_top_k > 0:  # AWQ-lite's groups where PR #2101's runs put them: the tied embedding (GPTQ: it protects)
        emb = {"tok_emb.weight": {**plan["tok_emb.weight"], "method": "gptq"}}
        act = activation_rms({"tok_emb.weight": hessians["tok_emb.weight"]}, {"tok_emb.weight": BENCH_TOKENS})
        plan.update(protect_salient_groups({"tok_emb.weight": state["tok_emb.weight"]}, emb, act, cfg.awq_top_k,
                                           cfg.awq_bits, cfg.awq_group))
    entries = quantize_state(state, plan, hessians)
    lqer = LqerPlan(cfg.lqer_top_k, cfg.lqer_rank, cfg.lqer_a_bits, cfg.lqer_b_bits, cfg.lqer_group,
                    cfg.lqer_weighting, cfg.lqer_select, cfg.lqer_budget_bytes)
    return add_lqer(state, entries, hessians, lqer), groups


def artifact_groups(path: str) -> dict[str, str]:
    """{tensor name: codec group} as the artifact's header records them."""
    header, _ = read_header(read_file_bytes(path), path)
    return {t["name"]: t["group"] for t in header["tensors"]}


def print_layers(report: dict, state: dict) -> None:
    print(f"{'layer':<28} {'shape':>10} {'rtn err':>9} {'gptq/rtn':>9} {'+lqerF/rtn':>11} {'+lqerH/rtn':>11}")
    for row in report["layers"]:
        shape = "x".join(map(str, state[row["name"]].shape))
        print(f"{row['name']:<28} {shape:>10} {row['rtn']:>9.4f} {row['gptq'] / row['rtn']:>9.3f} "
              f"{row['lqer_frobenius'] / row['rtn']:>11.3f} {row['lqer_hessian'] / row['rtn']:>11.3f}")
    total = {k: math.sqrt(sum(r[k] ** 2 for r in report["layers"])) for k in ("rtn", "gptq", "lqer_frobenius",
                                                                            "lqer_hessian")}
    print(f"{'all':<28} {'':>10} {total['rtn']:>9.4f} {total['gptq'] / total['rtn']:>9.3f} "
          f"{total['lqer_frobenius'] / total['rtn']:>11.3f} {total['lqer_hessian'] / total['rtn']:>11.3f}")
    print("LQER (hessian weighting, rank 4, A int2, B int4/64) by selection: total output error / factor bytes stored")
    for row in report["lqer_k"]:
        print(f"  {row['k']:<16} {row['tensors']:>3} tensors  error {row['error']:>9.4f}  "
              f"factor bytes {row['factor_bytes']:>8,}")


def print_codecs(rows: list[dict]) -> None:
    print(f"{'group':<8} {'codec':<8} {'layout':<11} {'symbols':>10} {'bytes':>11} {'entropy':>11} {'x entropy':>9} "
          f"{'encode s':>9} {'decode s':>9}")
    for r in rows:
        print(f"{r['group']:<8} {r['codec']:<8} {r['layout']:<11} {r['symbols']:>10,} {r['bytes']:>11,} "
              f"{round(r['entropy_bytes']):>11,} {r['ratio']:>9.5f} {r['encode_s']:>9.2f} {r['decode_s']:>9.2f}"
              f"{'' if r['exact'] else '  NOT EXACT'}")
    print("each group at its smallest layout, summed (order-0 entropy of those layouts: the same for every layout)")
    for r in sorted(best_layouts(rows), key=lambda r: r["bytes"]):
        layouts = ", ".join(f"{g} {layout}" for g, layout in r["layouts"].items())
        print(f"  {r['codec']:<8} {r['bytes']:>11,} B  {r['bytes'] / r['entropy_bytes']:.5f} x entropy  "
              f"decode {r['decode_s']:.2f}s  ({layouts})")


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m golf.bench quant", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bits", type=int, default=6, help="synthetic layers' bits")
    parser.add_argument("--smoke", type=float, default=0.0, metavar="SECONDS",
                        help="train the smoke preset this long on the sample data and measure val_bpb")
    parser.add_argument("--record", action="store_true", help="record-size artifact bytes per combination "
                        "(minutes of CPU: GPTQ of the embedding, brotli-11 of ~40M symbols once per brotli row)")
    parser.add_argument("--record-codecs", default=f"ans;ctx;{Config().codec}",
                        help="semicolon-separated symbol codecs (per-group settings allowed) of the --record rows")
    parser.add_argument("--artifact", metavar="PATH", help="only the codec table, on the quantised symbols of this "
                        "final_model.golf (e.g. a real run's), group by group")
    parser.add_argument("--vs-record", action="store_true", help="golf's serializer beside the 1.0611 record's "
                        "(lrzip per group) on the same symbols: a record-dims state (Config from the env), or the "
                        "smoke-trained state of --smoke SECONDS / the symbols of --artifact PATH")
    args = parser.parse_args(argv)
    if args.vs_record:
        return main_vs_record(args)
    if args.artifact:
        groups: dict[str, list] = {}
        group_of = artifact_groups(args.artifact)
        for name, e in read_artifact(args.artifact)[0].items():
            if isinstance(e, QuantTensor):
                groups.setdefault(group_of[name], []).append(e.q)
        print(f"codec table on the symbols of {args.artifact}")
        print_codecs(codec_table(groups))
        return 0
    if args.record:
        print("record-size model (Config() defaults), trained-like random weights, synthetic Hessians")
        print(f"{'combination':<58} {'bytes':>12} {'quant s':>8} {'encode s':>9}  LQER")
        for r in record_report(args.seed, tuple(args.record_codecs.split(";"))):
            lqer = f"{r['lqer_bytes']:,} B on {', '.join(r['lqer_tensors'])}" if r.get("lqer_tensors") else ""
            print(f"{r['combination']:<58} {r['bytes']:>12,} {r['quant_s']:>8.1f} {r['encode_s']:>9.1f}  {lqer}",
                  flush=True)
        return 0
    if args.smoke > 0:
        bpb, state, hessians, plan = smoke_model(args.smoke)
        print(f"smoke model ({args.smoke:.0f} s CPU), val_bpb (non-overlapping windows), gap to fp32 {bpb['fp32']:.4f}:")
        for label, value in bpb.items():
            if label != "fp32":
                print(f"  {label:<28} {value:.4f} (gap {value - bpb['fp32']:+.4f})")
        print("trained matrices at the run's bits (matrices int6, embedding int7), Hessians from training batches")
    else:
        state, hessians = synthetic_layers(args.seed)
        plan = {n: {"bits": args.bits, "clip_k": BENCH_CLIP_K[n], "group": n.split(".")[0]} for n in state}
        print(f"synthetic layers, int{args.bits} SDClip, {BENCH_TOKENS} correlated calibration rows, seed {args.seed}")
    report = quant_report(state, hessians, plan)
    print_layers(report, state)
    print_codecs(report["codecs"])
    return 0


def main_vs_record(args) -> int:
    try:
        module = record_serializer()
    except GolfError as e:
        print(f"bench quant --vs-record: {e}", file=sys.stderr)
        return 2
    cfg = from_env()
    if args.artifact:
        entries, _ = read_artifact(args.artifact)
        groups = artifact_groups(args.artifact)
        cfg = dataclasses.replace(cfg, num_layers=1 + max(int(n.split(".")[1]) for n in entries
                                                          if n.startswith("blocks.")))
        print_vs_record(f"the symbols of {args.artifact} (golf's codec as the Config says)", vs_record(
            entries, groups, cfg, module))
        return 0
    if args.smoke > 0:
        smoke_cfg = from_env({"PRESET": "smoke"})
        _, state, hessians, plan = smoke_model(args.smoke)
        entries = quantize_state(state, {n: {**s, "method": "gptq"} for n, s in plan.items()}, hessians)
        groups = {n: s["group"] for n, s in plan.items()}
        print_vs_record(f"smoke-trained state ({args.smoke:.0f} s CPU), GPTQ symbols of its matrices",
                        vs_record(entries, groups, smoke_cfg, module))
        return 0
    entries, groups = record_dims_entries(cfg, args.seed)
    print_vs_record(f"record-dims state (Config from the env: MLP clip {cfg.mlp_clip_k}, embedding clip "
                    f"{cfg.embed_clip_k}, LQER {cfg.lqer_select} {cfg.lqer_top_k}), trained-like Gaussian rows, RTN",
                    vs_record(entries, groups, cfg, module))
    return 0
