"""Config pieces: every key of the record's log header against golf's recipe.

Each key is one entry: the record's printed value, the golf field(s) that hold it and golf's value printed the
record's way, then PASS (equal), DEVIATION (unequal and declared in golf/recipes.py DEVIATIONS under the key),
FAIL (unequal, undeclared; or no golf field holds it), or n/a (the launch, paths, logging: not the recipe).
Golf values come from HEADER_FIELDS (explicit: knobs shaped differently, or fixed in golf's code) and otherwise
from golf/recipes.py FRONTIER_SOURCES (field -> log key, where the log prints the field's value as is).
"""

import math

from golf.equiv.report import Piece
from golf.recipes import DEVIATIONS, FRONTIER_SOURCES

NA = "n/a"
# Keys that describe the launch, file locations or logging: they do not change what is trained or scored.
NOT_RECIPE = {
    "artifact_dir": "output path", "data_dir": "data path (caseops_enabled says which data)",
    "datasets_dir": "data path", "tokenizer_path": "tokenizer path (caseops_enabled says which tokenizer)",
    "train_files": "data path", "val_files": "data path", "val_bytes_files": "data path",
    "logfile": "log path", "model_path": "output path", "quantized_model_path": "output path",
    "run_id": "run name", "seed": "chosen per run (the record's three runs: 42, 0, 1234)",
    "distributed": "torchrun launch", "rank": "torchrun launch", "local_rank": "torchrun launch",
    "world_size": "torchrun launch", "is_main_process": "torchrun launch",
    "train_log_every": "logging cadence", "val_loss_every": "logging cadence",
    "ttt_eval_batches": "debugging filter, empty: every batch (R:3048)",
    "ttt_mask": "#2101's preset of ttt_q_lora / ttt_v_lora, which are compared",
    "embed_lr": "read only for an untied head (R:1928); tie_embeddings: True uses tied_embed_lr",
    "rope_train_seq_len": "read only with rope_yarn (R:912)",
    "attn_out_gate_src": "read only with attn_out_gate_enabled",
    "gated_attn_init_std": "read only with gated_attn_enabled",
    "eval_stride": "never read by the record's code",
    "matrix_clip_sigmas": "clip of a GPTQ matrix neither embedding, MLP nor attention (R:2251-2258): the record has "
                          "none",
    "fused_ce_enabled": "kernel choice: the same softcapped CE (R:1411-1425); golf/kernels/softcap_ce.py has its own "
                        "fused kernel and the model pieces compare the eager path",
}


def lora_off(cfg) -> set[str]:
    return {k.strip() for k in cfg.ttt_doc_lora_off.split(",") if k.strip()}


def doc_ttt(cfg, value):
    """A per-document / phased TTT value counts only when golf's TTT runs that mode."""
    return value if cfg.ttt_enabled and cfg.ttt_mode == "doc" else None


# header key -> (golf field(s) as the reader should look them up, golf's value printed as the record's knob).
HEADER_FIELDS = {
    # ---- model (golf/model/*)
    "num_loops": ("train_loops - 1", lambda c: c.train_loops - 1),  # golf counts passes, the record extra passes
    "parallel_start_layer": ("num_layers - lane_layers", lambda c: c.num_layers - c.lane_layers),
    "parallel_final_lane": ("(fixed: golf/model/loops.py mean of the lanes)", lambda c: "mean"),
    "skip_gates_enabled": ("unet_skips and skip_gates", lambda c: c.unet_skips and c.skip_gates),
    "tie_embeddings": ("(fixed: golf's head is the embedding)", lambda c: True),
    "tied_embed_init_std": ("(fixed: golf/model/gpt.py N(0, 0.005))", lambda c: 0.005),
    "sparse_attn_gate_init_std": ("(fixed: zero init)", lambda c: 0.0),
    "attn_out_gate_enabled": ("(golf has no AttnOutGate)", lambda c: False),
    "gated_attn_enabled": ("(golf has no dense gated attention)", lambda c: False),
    "rope_yarn": ("(golf has no YaRN)", lambda c: False),
    "muon_row_normalize": ("matrix_optimizer == muoneq_r", lambda c: c.matrix_optimizer == "muoneq_r"),
    # ---- training loop, data
    "grad_accum_steps": ("grad_accum_steps (0: 8 // world_size, 1 on the record's 8 GPUs)",
                         lambda c: c.grad_accum_steps or 8 // 8),
    "max_wallclock_seconds": ("max_wallclock_seconds", lambda c: c.max_wallclock_seconds),
    "caseops_enabled": ("data_path holds CaseOps data", lambda c: "caseops" in c.data_path),
    "tied_embed_lr": ("embed_lr", lambda c: c.embed_lr),
    # ---- quantisation and artifact
    "matrix_bits": ("matrix_bits", lambda c: c.matrix_bits),
    "embed_bits": ("embed_bits", lambda c: c.embed_bits),
    "attn_clip_sigmas": ("attn_clip_k", lambda c: c.attn_clip_k),
    "mlp_clip_sigmas": ("mlp_clip_k", lambda c: c.mlp_clip_k),
    "embed_clip_sigmas": ("embed_clip_k", lambda c: c.embed_clip_k),
    "gptq_calibration_batches": ("gptq_calib_batches", lambda c: c.gptq_calib_batches),
    "gptq_reserve_seconds": ("quant_reserve_seconds", lambda c: c.quant_reserve_seconds),
    "gated_attn_quant_gate": ("gate_bits == 8 (attention gate int8 per row)", lambda c: c.gate_bits == 8),
    "compressor": ("codec", lambda c: c.codec),
    "lqer_enabled": ("lqer_top_k > 0", lambda c: c.lqer_top_k > 0),
    "lqer_rank": ("lqer_rank", lambda c: c.lqer_rank),
    "lqer_top_k": ("lqer_top_k (lqer_select=weight_error)",
                   lambda c: c.lqer_top_k if c.lqer_select == "weight_error" else None),
    "lqer_factor_bits": ("lqer_b_bits", lambda c: c.lqer_b_bits),
    "lqer_asym_enabled": ("lqer_a_bits 2 / lqer_b_bits 4", lambda c: (c.lqer_a_bits, c.lqer_b_bits) == (2, 4)),
    "lqer_asym_group": ("lqer_group", lambda c: c.lqer_group),
    # ---- evaluation and TTT
    "eval_seq_len": ("sw_seq_len", lambda c: c.sw_seq_len),
    "val_batch_tokens": ("val_batch_tokens", lambda c: c.val_batch_tokens),
    "val_doc_fraction": ("(fixed: every val document)", lambda c: 1.0),
    "ttt_enabled": ("ttt_enabled", lambda c: c.ttt_enabled),
    "ttt_optimizer": ("(ttt_mode=doc: AdamW)", lambda c: doc_ttt(c, "adam")),
    "ttt_lora_rank": ("ttt_doc_lora_rank (ttt_mode=doc)", lambda c: doc_ttt(c, c.ttt_doc_lora_rank)),
    "ttt_beta1": ("ttt_doc_beta1 (ttt_mode=doc)", lambda c: doc_ttt(c, c.ttt_doc_beta1)),
    "ttt_beta2": ("ttt_doc_beta2 (ttt_mode=doc)", lambda c: doc_ttt(c, c.ttt_doc_beta2)),
    "ttt_weight_decay": ("ttt_doc_weight_decay (ttt_mode=doc)", lambda c: doc_ttt(c, c.ttt_doc_weight_decay)),
    "ttt_chunk_size": ("ttt_doc_chunk_tokens (ttt_mode=doc)", lambda c: doc_ttt(c, c.ttt_doc_chunk_tokens)),
    "ttt_batch_size": ("ttt_doc_batch (ttt_mode=doc)", lambda c: doc_ttt(c, c.ttt_doc_batch)),
    "ttt_eval_seq_len": ("sw_seq_len (ttt_mode=doc)", lambda c: doc_ttt(c, c.sw_seq_len)),
    "ttt_grad_steps": ("(ttt_mode=doc: one step per chunk)", lambda c: doc_ttt(c, 1)),
    "ttt_q_lora": ("'q' not in ttt_doc_lora_off (ttt_mode=doc)", lambda c: doc_ttt(c, "q" not in lora_off(c))),
    "ttt_k_lora": ("'k' not in ttt_doc_lora_off (ttt_mode=doc)", lambda c: doc_ttt(c, "k" not in lora_off(c))),
    "ttt_v_lora": ("'v' not in ttt_doc_lora_off (ttt_mode=doc)", lambda c: doc_ttt(c, "v" not in lora_off(c))),
    "ttt_o_lora": ("'proj' not in ttt_doc_lora_off (ttt_mode=doc)", lambda c: doc_ttt(c, "proj" not in lora_off(c))),
    "ttt_mlp_lora": ("'mlp' not in ttt_doc_lora_off (ttt_mode=doc)", lambda c: doc_ttt(c, "mlp" not in lora_off(c))),
    # ---- PR #2101's keys (golf/quant/awq.py; its LQER knobs at the values golf's rule reproduces)
    "awq_lite_enabled": ("awq_top_k > 0", lambda c: c.awq_top_k > 0),
    "awq_lite_bits": ("awq_bits", lambda c: c.awq_bits),
    "awq_lite_group_size": ("awq_group", lambda c: c.awq_group),
    "awq_lite_group_top_k": ("awq_top_k", lambda c: c.awq_top_k),
    "lqer_gain_select": ("(fixed: lqer_select ranks, no gain selection)", lambda c: False),
    "lqer_scope": ("(fixed: every quantised matrix is a candidate)", lambda c: "all"),
    "phased_ttt_num_phases": ("ttt_phases (ttt_mode=doc)", lambda c: doc_ttt(c, c.ttt_phases)),
    "phased_ttt_prefix_docs": ("ttt_phase_prefix_docs (ttt_mode=doc)", lambda c: doc_ttt(c, c.ttt_phase_prefix_docs)),
    "global_ttt_lr": ("ttt_phase_lr (ttt_mode=doc)", lambda c: doc_ttt(c, c.ttt_phase_lr)),
    "global_ttt_momentum": ("ttt_phase_momentum (ttt_mode=doc)", lambda c: doc_ttt(c, c.ttt_phase_momentum)),
    "global_ttt_chunk_tokens": ("ttt_phase_chunk_tokens (ttt_mode=doc)",
                                lambda c: doc_ttt(c, c.ttt_phase_chunk_tokens)),
    "global_ttt_batch_seqs": ("ttt_phase_batch_seqs (ttt_mode=doc)", lambda c: doc_ttt(c, c.ttt_phase_batch_seqs)),
    "global_ttt_grad_clip": ("ttt_phase_grad_clip (ttt_mode=doc)", lambda c: doc_ttt(c, c.ttt_phase_grad_clip)),
    "global_ttt_epochs": ("(fixed: one pass, the legal maximum)", lambda c: doc_ttt(c, 1)),
    "global_ttt_warmup_chunks": ("(fixed: no phase warm-up)", lambda c: doc_ttt(c, 0)),
    "global_ttt_warmup_start_lr": ("(fixed: no phase warm-up)", lambda c: doc_ttt(c, 0.0)),
    "global_ttt_respect_doc_boundaries": ("(fixed: phases train on whole documents)", lambda c: doc_ttt(c, True)),
}


def frontier_fields() -> dict:
    """log key -> (field, getter) from FRONTIER_SOURCES (the first field naming the key; knobs shaped differently
    from the record's are in HEADER_FIELDS, which takes precedence)."""
    found = {}
    for field, source in FRONTIER_SOURCES.items():
        if source.log_key and source.log_key not in found:
            found[source.log_key] = (field, lambda c, f=field: getattr(c, f))
    return found


def same(printed: str, value) -> bool:
    """The record's printed value equals golf's: numbers by value (1e-08 == 1e-8, 4 == 4.0), the rest as printed."""
    if value is None:
        return False
    if isinstance(value, bool) or printed in ("True", "False"):
        return printed == str(value)
    if isinstance(value, (int, float)):
        try:
            return math.isclose(float(printed), float(value), rel_tol=0.0, abs_tol=0.0)
        except ValueError:
            return False
    return printed == str(value)


def key_piece(key: str, printed: str, cfg, fields: dict) -> Piece:
    name = f"config.{key}"
    if key in NOT_RECIPE:
        return Piece(name, NA, 0.0, 0.0, f"record {printed!r}: {NOT_RECIPE[key]}")
    if key not in fields:
        deviation = DEVIATIONS.get(key)
        return deviation_or_fail(name, f"record {printed!r}, no golf field holds it", deviation)
    field, getter = fields[key]
    value = getter(cfg)
    shown = "unused by golf's recipe" if value is None else repr(value)
    detail = f"record {printed!r}, golf {field} = {shown}"
    if same(printed, value):
        return Piece(name, "PASS", 0.0, 0.0, detail)
    return deviation_or_fail(name, detail, DEVIATIONS.get(key), printed, value)


def deviation_or_fail(name, detail, deviation, printed=None, value=None) -> Piece:
    max_abs = max_rel = float("inf")
    try:
        max_abs = abs(float(value) - float(printed))
        max_rel = max_abs / abs(float(printed)) if float(printed) else float("inf")
    except (TypeError, ValueError):
        pass
    if deviation is None:
        return Piece(name, "FAIL", max_abs, max_rel, detail)
    return Piece(name, "DEVIATION", max_abs, max_rel, detail,
                 f"{deviation.kind}: record {deviation.record}, golf {deviation.golf}: {deviation.reason}")


def header_fields(header: dict) -> dict:
    """Golf values read beside another key of the same header: #2101 multiplies its per-document LoRA lr by
    ttt_local_lr_mult (P:3387); golf holds the product in ttt_doc_lora_lr."""
    mult = float(header.get("ttt_local_lr_mult", "1"))
    fields = {"ttt_lora_lr": (f"ttt_doc_lora_lr / ttt_local_lr_mult {mult:g} (ttt_mode=doc)",
                              lambda c: doc_ttt(c, c.ttt_doc_lora_lr / mult))}
    if "ttt_local_lr_mult" in header:
        fields["ttt_local_lr_mult"] = ("(folded into ttt_doc_lora_lr: see config.ttt_lora_lr)", lambda c: mult)
    return fields


def check(rec, cfg) -> list[Piece]:
    fields = {**frontier_fields(), **HEADER_FIELDS, **header_fields(rec.hparams)}
    return [key_piece(key, printed, cfg, fields) for key, printed in sorted(rec.hparams.items())]
