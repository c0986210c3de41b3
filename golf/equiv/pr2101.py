"""PR #2101's pieces against its own code: AWQ-lite in the quantiser, AsymLogit on the eval and TTT paths, the TTT
LoRA mask, the TTT-local learning rate and the longer eval context. Each family of pieces runs only when the loaded
record has that piece (its Hyperparameters or its GPT say so); on a record without them (e.g. the 1.0611 one) check
returns nothing.

- awq: a state of three matrices over 65,536 elements (the record's quantisation floor) with planted loud input
  groups, Hessians and activation RMS from one set of calibration rows. The record's own gptq_mixed_quantize (its
  header's AWQ, bits and clips) against golf's protect_salient_groups + quantize_state (the recipe's AWQ settings;
  the record's bits and clips, which the quant family checks). Pieces: the selection (tensor and group starts),
  activation RMS (golf's from Hessian diagonals and row counts vs the record's running sum of squares), the symbols
  of every tensor (GPTQ carries a protected column's error like any other), the protected groups' steps, and the
  dequantised base weight (before LQER, which the quant family checks).
- asym: golf's and the record's GPT at small dims with one set of weights (golf/equiv/model.py) and unequal caps
  (3 and 8: small logits bite) on both: eval losses (record forward_logits), TTT losses (record forward_ttt with a
  fresh LoRA, whose B is zero), and the training loss, which must not read the caps on either side.
- ttt: which projections get a per-document adapter (record BatchedTTTLoRA under its header's q/k/v/mlp/o flags,
  golf DocLoRA), and the per-doc LoRA learning rate (record ttt_lora_lr x ttt_local_lr_mult, P:3387).
- context: eval_seq_len and ttt_eval_seq_len against golf's one sw_seq_len, and eval logits of one document as
  long as the scaled window (train 64, eval 64 x eval/train) past the training length (a YaRN-style rescale, off in
  #2101, would show here).
"""

import dataclasses

import torch
import torch.nn.functional as F

from golf.equiv.model import (HEAD_DIM, LOSS_ATOL, LOSS_RTOL, SEQ, VOCAB,
                              load_shared_weights, randomise_, tokens)
from golf.equiv.record import record_gpt, record_hparams
from golf.equiv.report import Piece, compare, verdict
from golf.model.gpt import GPT
from golf.quant.awq import activation_rms, protect_salient_groups
from golf.quant.rtn import dequantize_rows
from golf.quant.state import quantize_state
from golf.ttt import DocLoRA, doc_lora_kind, doc_lora_losses

ASYM_CAPS = (3.0, 8.0)  # positive, negative: unequal, and small enough that most logits are capped
CALIB_ROWS = 600
# tok_emb (vocab, dim) int7, an MLP up (4 dim, dim) and an attention q (dim, dim) int6: all over 65,536 elements.
AWQ_SHAPES = {"tok_emb.weight": (512, 256), "blocks.0.mlp.fc.weight": (1024, 256),
              "blocks.0.attn.c_q.weight": (320, 256)}
AWQ_LOUD = {"tok_emb.weight": (128, 6.0), "blocks.0.mlp.fc.weight": (0, 3.0)}  # (group start, activation gain)


def has_awq(h) -> bool:
    return hasattr(h, "awq_lite_enabled")


def has_asym(rec) -> bool:
    return hasattr(rec.module.GPT, "_apply_asym_softcap")


def has_mask(h) -> bool:
    return hasattr(h, "ttt_mask")


def awq_inputs():
    """(state, Hessian sums, calibration inputs) with planted loud column groups."""
    gen = torch.Generator().manual_seed(0)
    state, xs = {}, {}
    for name, shape in AWQ_SHAPES.items():
        state[name] = torch.randn(shape, generator=gen) * 0.05
        x = torch.randn(CALIB_ROWS, shape[1], generator=gen)
        if name in AWQ_LOUD:
            start, gain = AWQ_LOUD[name]
            x[:, start:start + 64] *= gain
        xs[name] = x
    return state, {n: x.T @ x for n, x in xs.items()}, xs


def record_clip(h, name: str) -> float:
    """The record's clip sigmas for a tensor name (its gptq_mixed_quantize rule)."""
    if "tok_emb" in name:
        return h.embed_clip_sigmas
    return h.mlp_clip_sigmas if ".mlp." in name else h.attn_clip_sigmas


def awq_pieces(rec, cfg) -> list[Piece]:
    h = record_hparams(rec)
    state, hessians, xs = awq_inputs()
    rows = {n: x.shape[0] for n, x in xs.items()}
    record_rms = {n: (x.square().sum(dim=0) / x.shape[0]).sqrt() for n, x in xs.items()}  # the record's statistic
    pieces = [compare("pr2101.awq.act_rms", torch.cat(list(activation_rms(hessians, rows).values())),
                      torch.cat(list(record_rms.values())), 1e-5, 1e-5,
                      detail="golf sqrt(diag(X^T X) / rows) vs the sum of squares over rows")]
    # The record's Hessians are means over calibration batches: one batch here, so the same sums.
    result, meta = rec.module.gptq_mixed_quantize({n: w.clone() for n, w in state.items()},
                                                  {n: hh.clone() for n, hh in hessians.items()}, record_rms, h)
    plan = {n: {"bits": h.embed_bits if "tok_emb" in n else h.matrix_bits, "clip_k": record_clip(h, n),
                "method": "gptq"} for n in state}
    if cfg.awq_top_k > 0:
        plan = protect_salient_groups(state, plan, record_rms, cfg.awq_top_k, cfg.awq_bits, cfg.awq_group)
    entries = quantize_state(state, plan, hessians)
    theirs = {n: tuple(result[n + ".awqg_start"].tolist()) for n in state if n + ".awqg_start" in result}
    ours = {n: entries[n].awq.starts for n in state if entries[n].awq is not None}
    pieces.append(verdict("pr2101.awq.selection", ours == theirs, float(ours != theirs), float(ours != theirs),
                          f"protected groups golf {ours} vs record {theirs} (record top_k "
                          f"{h.awq_lite_group_top_k}, golf {cfg.awq_top_k})"))
    q_ours = torch.cat([entries[n].q.flatten().float() for n in state])
    q_theirs = torch.cat([result[n + ".q"].flatten().float() for n in state])
    pieces.append(compare("pr2101.awq.symbols", q_ours, q_theirs, 0, 0,
                          detail=f"{q_ours.numel()} symbols of {len(state)} tensors, the record's bits and clips"))
    for name in sorted(set(ours) & set(theirs)):
        pieces.append(compare(f"pr2101.awq.step.{name}", entries[name].awq.scale.float(),
                              result[name + ".awqg_s_hi"].float(), 0, 0,
                              detail=f"per-row fp16 step of the int{h.awq_lite_bits} groups"))
        w = result[name + ".q"].float() * result[name + ".scale"].float()[:, None]
        size = int(result[name + ".awqg_size"])
        for start in theirs[name]:
            hi = result[name + ".awqg_s_hi"].float()[:, None]
            w[:, start:start + size] = result[name + ".q"][:, start:start + size].float() * hi
        base = dequantize_rows(dataclasses.replace(entries[name], lqer=None))
        pieces.append(compare(f"pr2101.awq.dequant.{name}", base, w, 0, 0,
                              detail="q x step, protected groups on their own step (before LQER)"))
    return pieces


def model_pair(rec, cfg, eval_len: int, record_eval_len: int):
    """golf's and the record's GPT at small dims (golf/equiv/model.py's) with one set of weights; eval windows of
    eval_len (golf) and record_eval_len (record); both AsymLogit caps set to ASYM_CAPS where a side has them."""
    golf_cfg = dataclasses.replace(cfg, vocab_size=VOCAB, model_dim=cfg.num_heads * HEAD_DIM, train_seq_len=SEQ,
                                   sw_seq_len=eval_len)
    golf_model = GPT(golf_cfg)
    record_model = record_gpt(rec, record_hparams(rec, vocab_size=VOCAB, model_dim=cfg.num_heads * HEAD_DIM,
                                                   train_seq_len=SEQ, eval_seq_len=record_eval_len))
    randomise_(golf_model)
    load_shared_weights(golf_model, record_model)
    with torch.no_grad():
        for model in (golf_model, record_model):
            if hasattr(model, "softcap_pos"):
                model.softcap_pos.fill_(ASYM_CAPS[0])
                model.softcap_neg.fill_(ASYM_CAPS[1])
    record_model.eval()
    record_model.looping_active = True
    golf_model.eval()
    return golf_cfg, golf_model, record_model


def asym_pieces(rec, cfg, pair) -> list[Piece]:
    golf_cfg, golf_model, record_model = pair
    x, y = tokens(0, SEQ, [0]), tokens(1, SEQ, [])
    detail = f"caps {ASYM_CAPS} on both sides; golf asym_softcap={cfg.asym_softcap}"
    with torch.no_grad():
        theirs = F.cross_entropy(record_model.forward_logits(x).float().flatten(0, 1), y.flatten(), reduction="none")
        pieces = [compare("pr2101.asym.eval_losses", golf_model.token_losses(x, y).flatten(), theirs,
                          LOSS_ATOL, LOSS_RTOL, detail=detail)]
        h = record_hparams(rec, vocab_size=VOCAB, model_dim=cfg.num_heads * HEAD_DIM, train_seq_len=SEQ)
        lora = rec.module.BatchedTTTLoRA(1, record_model, 4, q_lora=h.ttt_q_lora, k_lora=h.ttt_k_lora,
                                         v_lora=h.ttt_v_lora, mlp_lora=h.ttt_mlp_lora, o_lora=h.ttt_o_lora)
        theirs_ttt = record_model.forward_ttt(x, y, lora).flatten()
        pieces.append(compare("pr2101.asym.ttt_losses", doc_lora_losses(golf_model, None, None, x, y, None).flatten(),
                              theirs_ttt, LOSS_ATOL, LOSS_RTOL, detail=f"{detail}; record forward_ttt, LoRA B = 0"))
        record_model.train()
        golf_model.train()
        golf_model.set_progress(1, 1.0)
        pieces.append(compare("pr2101.asym.train_loss", golf_model(x, y), record_model(x, y), LOSS_ATOL, LOSS_RTOL,
                              detail=f"{detail}; the training head reads logit_softcap only"))
    return pieces


def record_lora_kinds(rec, record_model, h) -> dict[str, int]:
    """golf DOC_LORA_KINDS name -> the record's adapters of that kind (its slots), under the header's flags."""
    lora = rec.module.BatchedTTTLoRA(1, record_model, 4, q_lora=h.ttt_q_lora, k_lora=h.ttt_k_lora,
                                     v_lora=h.ttt_v_lora, mlp_lora=h.ttt_mlp_lora, o_lora=h.ttt_o_lora)
    kinds = {"q": lora.q_loras, "k": lora.k_loras, "v": lora.v_loras, "proj": lora.o_loras, "mlp": lora.mlp_loras}
    return {k: len(m) for k, m in kinds.items() if m is not None}


def ttt_pieces(rec, cfg, pair) -> list[Piece]:
    golf_cfg, golf_model, record_model = pair
    h = record_hparams(rec)
    theirs = record_lora_kinds(rec, record_model, h)
    lora = DocLoRA(golf_model, golf_cfg, 1, torch.device("cpu"), key=0)
    starts = [lora.index[m] for _, m in lora.modules_] + [lora.head]  # each module's adapters, one per slot
    ours: dict[str, int] = {}
    for (name, _), first, end in zip(lora.modules_, starts, starts[1:]):
        kind = doc_lora_kind(name)
        ours[kind] = ours.get(kind, 0) + end - first
    same = ours == theirs
    pieces = [verdict("pr2101.ttt.mask", same, float(not same), float(not same),
                      f"adapters per projection golf {ours} vs record {theirs} (ttt_mask {h.ttt_mask}; "
                      f"golf TTT_DOC_LORA_OFF={cfg.ttt_doc_lora_off!r}); both adapt the tied head")]
    lr = h.ttt_lora_lr * h.ttt_local_lr_mult
    pieces.append(verdict("pr2101.ttt.local_lr", cfg.ttt_doc_lora_lr == lr, abs(cfg.ttt_doc_lora_lr - lr),
                          abs(cfg.ttt_doc_lora_lr - lr) / lr,
                          f"per-doc LoRA lr golf {cfg.ttt_doc_lora_lr!r} vs record ttt_lora_lr {h.ttt_lora_lr!r} x "
                          f"ttt_local_lr_mult {h.ttt_local_lr_mult!r} (P:3387)"))
    return pieces


def context_pieces(rec, cfg) -> list[Piece]:
    h = record_hparams(rec)
    pieces = [verdict(f"pr2101.context.{key}", cfg.sw_seq_len == getattr(h, key),
                      abs(cfg.sw_seq_len - getattr(h, key)), abs(cfg.sw_seq_len - getattr(h, key)) / getattr(h, key),
                      f"golf sw_seq_len {cfg.sw_seq_len} vs record {key} {getattr(h, key)}")
              for key in ("eval_seq_len", "ttt_eval_seq_len")]
    ours_len = round(SEQ * cfg.sw_seq_len / cfg.train_seq_len)
    theirs_len = round(SEQ * h.eval_seq_len / h.train_seq_len)
    _, golf_model, record_model = model_pair(rec, cfg, ours_len, theirs_len)
    x, y = tokens(2, ours_len, [0]), tokens(3, ours_len, [])
    with torch.no_grad():
        xr, yr = tokens(2, theirs_len, [0]), tokens(3, theirs_len, [])
        theirs = F.cross_entropy(record_model.forward_logits(xr).float().flatten(0, 1), yr.flatten(), reduction="none")
        ours = golf_model.token_losses(x, y).flatten()
    pieces.append(compare("pr2101.context.eval_losses", ours, theirs, LOSS_ATOL, LOSS_RTOL,
                          detail=f"one document of golf {ours_len} / record {theirs_len} tokens, past train_seq_len "
                                 f"{SEQ} (caps {ASYM_CAPS} where a side has AsymLogit)"))
    return pieces


def check(rec, cfg) -> list[Piece]:
    # Which pieces the record has: its Hyperparameters' fields and its GPT's methods (its code, not the log: a
    # header line without a value, e.g. #2101's "  artifact_dir:", may end golf/equiv/record.py's header early).
    h = record_hparams(rec)
    pieces = []
    if has_awq(h):
        pieces += awq_pieces(rec, cfg)
    pair = model_pair(rec, cfg, SEQ, SEQ) if has_asym(rec) or has_mask(h) else None
    if has_mask(h):  # before asym_pieces, which leaves the models in training mode
        pieces += ttt_pieces(rec, cfg, pair)
    if has_asym(rec):
        pieces += asym_pieces(rec, cfg, pair)
    if has_mask(h):
        pieces += context_pieces(rec, cfg)
    return pieces
