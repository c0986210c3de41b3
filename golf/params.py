"""The parameter policy table: which optimiser, learning rate, weight decay, quant bits and codec group
each parameter gets. One row per kind of parameter; every parameter must match exactly one row."""

import re
from dataclasses import dataclass

from golf.config import GolfError


@dataclass(frozen=True)
class ParamRule:
    pattern: str  # regex, full match on the parameter's name in model.named_parameters()
    optim: str  # "muon" (matrices) | "adam" | "none" (no optimiser)
    lr: float
    weight_decay: float
    bits: int | None  # None: stored unquantised (fp16)
    clip_k: float | None  # SDClip: clip each row at clip_k * std(row); None: absmax
    group: str  # artifact codec group


def param_rules(cfg) -> tuple[ParamRule, ...]:
    return (
        ParamRule(r"tok_emb\.weight", "adam", cfg.embed_lr, cfg.embed_wd, cfg.embed_bits, cfg.embed_clip_k, "embed"),
        ParamRule(r"blocks\.\d+\.attn\.(q|k|v|proj)\.weight", "muon", cfg.matrix_lr, cfg.muon_wd,
                  cfg.matrix_bits, cfg.attn_clip_k, "attn"),
        ParamRule(r"blocks\.\d+\.mlp\.(fc|proj)\.weight", "muon", cfg.matrix_lr, cfg.muon_wd,
                  cfg.matrix_bits, cfg.mlp_clip_k, "mlp"),
        # Gains, mixes and gates (the record's CONTROL_TENSOR_NAME_PATTERNS, R:1887): scalar AdamW, decay scalar_wd.
        ParamRule(r"blocks\.\d+\.(resid_mix|attn_scale|mlp_scale|attn\.q_gain)|smear\.(weight|lam)",
                  "adam", cfg.scalar_lr, cfg.scalar_wd, None, None, "scalars"),
        # The attention gate (heads, gate_window): int8 per row at absmax (clip_k None), as the record (R:2195).
        ParamRule(r"blocks\.\d+\.attn\.gate", "adam", cfg.scalar_lr, cfg.scalar_wd, cfg.gate_bits or None, None,
                  "gate"),
        # Loop schedule extras (golf/model/loops.py). No decay on the injection matrix: it starts as [I | 0] and
        # decay would pull the recurrent state towards zero.
        ParamRule(r"schedule\.(inject|adapters\.\d+\.(down|up))\.weight", "muon", cfg.matrix_lr, 0.0,
                  cfg.matrix_bits, cfg.mlp_clip_k, "loop"),
        ParamRule(r"schedule\.(skip_weights|skip_gates|lanes\.\d+\.(keep|take))", "adam", cfg.scalar_lr,
                  cfg.scalar_wd, None, None, "scalars"),
        # AsymLogit's caps (golf/model/gpt.py): held by no optimiser, as in PR #2101 (its Optimizers, train_gpt.py
        # lines 1983-2045, list none).
        ParamRule(r"softcap_(pos|neg)", "none", 0.0, 0.0, None, None, "scalars"),
    )


def rule_for(name: str, rules: tuple[ParamRule, ...]) -> ParamRule:
    """The one row matching `name`; zero or several matches is a bug in the table, reported as such."""
    hits = [r for r in rules if re.fullmatch(r.pattern, name)]
    if len(hits) != 1:
        raise GolfError(f"parameter {name!r} matches {len(hits)} policy rows in golf/params.py (needs exactly 1)")
    return hits[0]


def assign_rules(named_params, rules) -> dict[str, ParamRule]:
    return {name: rule_for(name, rules) for name, _ in named_params}
