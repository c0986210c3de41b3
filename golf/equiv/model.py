"""Model pieces: golf's GPT against the record's GPT at the same small dims with ONE set of weights.

Every golf parameter is randomised (zero-initialised gates and projections included), then copied into the record's
model through NAME_MAP; both run in float32 on CPU (the record through its eager paths and the FA3 stand-in).
Pieces: eval logits with looping off and on, train loss and every gradient (mapped back the same way), document
isolation against the record's own `_build_cu_seqlens` (uncut documents, and documents cut every train_seq_len as
its loader cuts them), and the parameter count at the real dims (count only). The layer structure (layers, loop
segment, lanes, XSA, gates) is each side's own config, so a recipe difference shows here as a shape or value FAIL.
"""

import dataclasses

import torch

from golf.equiv.record import record_gpt, record_hparams
from golf.equiv.report import Piece, compare, verdict
from golf.recipes import DEVIATIONS

# Small dims: head_dim 32 keeps partial RoPE partial (rope_dims 16 < 32); sequences long enough for several
# documents and a cut every SEQ tokens.
HEAD_DIM, VOCAB, SEQ, ROW = 32, 256, 64, 160
# float32 on both sides, same op order up to SDPA's masked vs per-segment softmax: differences are rounding.
LOGITS_ATOL, LOGITS_RTOL = 1e-4, 1e-4
LOSS_ATOL, LOSS_RTOL = 1e-5, 1e-5
GRAD_TOL = 1e-4  # max |golf - record| / max |record| per parameter tensor


def small_dims(cfg) -> dict:
    return dict(vocab_size=VOCAB, model_dim=cfg.num_heads * HEAD_DIM, train_seq_len=SEQ)


def golf_small(cfg):
    return dataclasses.replace(cfg, **small_dims(cfg), sw_seq_len=SEQ)


def record_small(rec, cfg):
    return record_hparams(rec, **small_dims(cfg), eval_seq_len=SEQ)


def name_map(golf_model, record_model) -> list[tuple[str, str, object]]:
    """(golf parameter, record parameter, index into it or None). The record stacks the per-layer matrices in banks
    (R:1152-1156, _bank_weights R:1281-1290): qo_bank[i] q, qo_bank[n+i] out, kv_bank[i] k, kv_bank[n+i] v.
    Its two-lane weights are per unique block (R:1237-1242: post[block, branch, lane], resid[block, lane]);
    golf's per two-lane layer (take[lane, branch], keep[lane]) in the coda's last lane_layers blocks."""
    n = record_model.num_layers
    entries = [("tok_emb.weight", "tok_emb.weight", None)]
    for i in range(len(golf_model.blocks)):
        g = f"blocks.{i}."
        entries += [(g + "attn.q.weight", "qo_bank", i), (g + "attn.proj.weight", "qo_bank", n + i),
                    (g + "attn.k.weight", "kv_bank", i), (g + "attn.v.weight", "kv_bank", n + i),
                    (g + "mlp.fc.weight", "mlp_up_bank", i), (g + "mlp.proj.weight", "mlp_down_bank", i)]
        entries += [(g + name, g + name, None) for name in ("attn.q_gain", "attn_scale", "mlp_scale", "resid_mix")]
        if golf_model.blocks[i].attn.gate is not None:
            entries.append((g + "attn.gate", g + "attn.attn_gate_w", None))
    lanes = golf_model.schedule.lanes
    for j in range(len(lanes)):
        block = len(golf_model.blocks) - len(lanes) + j
        entries += [(f"schedule.lanes.{j}.take", "parallel_post_lambdas", (block, "T")),
                    (f"schedule.lanes.{j}.keep", "parallel_resid_lambdas", block)]
    for golf_name, record_name in (("schedule.skip_weights", "skip_weights"), ("schedule.skip_gates", "skip_gates"),
                                   ("smear.weight", "smear_gate.weight"), ("smear.lam", "smear_lambda")):
        entries.append((golf_name, record_name, None))
    return entries


def record_view(record_params: dict, record_name: str, index) -> torch.Tensor:
    t = record_params[record_name]
    if index is None:
        return t
    if isinstance(index, tuple):  # (block, "T"): the record's [branch, lane] is golf's [lane, branch]
        return t[index[0]].T
    return t[index]


def randomise_(model, seed: int = 0) -> None:
    """Every parameter random: matrices ~ N(0, 1/fan_in), the embedding N(0, 0.3^2), every other tensor its init
    plus N(0, 0.3^2) (so zero-initialised gates and lambdas are nonzero and the q gain stays near 5)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name == "tok_emb.weight":
                p.copy_(0.3 * noise)
            elif p.ndim == 2 and min(p.shape) > 16:
                p.copy_(noise / p.shape[1] ** 0.5)
            else:
                p.add_(0.3 * noise)


def load_shared_weights(golf_model, record_model) -> list[str]:
    """Copy golf's weights into the record's model; returns the record parameters golf has no value for."""
    params = dict(record_model.named_parameters())
    golf_params = dict(golf_model.named_parameters())
    covered = set()
    with torch.no_grad():
        for golf_name, record_name, index in name_map(golf_model, record_model):
            if golf_name not in golf_params or record_name not in params:
                raise KeyError(f"{golf_name} -> {record_name}: missing on one side")
            target = record_view(params, record_name, index)
            if target.shape != golf_params[golf_name].shape:
                raise ValueError(f"{golf_name} {tuple(golf_params[golf_name].shape)} vs record {record_name} "
                                 f"{tuple(target.shape)}")
            target.copy_(golf_params[golf_name])
            covered.add(record_name)
        unmapped = [name for name in params if name not in covered]
        g = torch.Generator().manual_seed(1)
        for name in unmapped:  # random too: if the record's forward read them, the outputs would differ
            params[name].add_(0.3 * torch.randn(params[name].shape, generator=g))
    return unmapped


def tokens(seed: int, length: int, bos_at: list[int]) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(4, VOCAB, (1, length), generator=g)
    x[0, bos_at] = 1
    return x


def softcapped(golf_model, logits):
    cap = golf_model.logit_softcap
    return cap * torch.tanh(logits / cap)


def build_pair(rec, cfg):
    golf_model = __import__("golf.model.gpt", fromlist=["GPT"]).GPT(golf_small(cfg))
    record_model = record_gpt(rec, record_small(rec, cfg))
    randomise_(golf_model)
    unmapped = load_shared_weights(golf_model, record_model)
    return golf_model, record_model, unmapped


def logits_pieces(golf_model, record_model) -> list[Piece]:
    x = tokens(0, SEQ, [0])  # one document: the record's forward without cu_seqlens attends across BOS
    pieces = []
    with torch.no_grad():
        for name, looping in (("model.logits.loop_off", False), ("model.logits.loop_on", True)):
            record_model.looping_active = looping
            record_model.eval()
            theirs = record_model.forward_logits(x)
            # golf: training mode runs one pass until loop_enable_at, evaluation the full passes.
            golf_model.train(not looping)
            golf_model.set_progress(0, 0.0)
            ours = softcapped(golf_model, golf_model.logits(x))
            pieces.append(compare(name, ours, theirs, LOGITS_ATOL, LOGITS_RTOL, detail=f"(1, {SEQ}) tokens"))
    return pieces


def train_pieces(rec, golf_model, record_model) -> list[Piece]:
    """Loss and every gradient with looping on (the record's state after enable_looping_at), on a packed row as
    its loader makes them: documents cut every SEQ tokens (its cu_seqlens, golf's document_ids with the cap)."""
    from golf.data import document_ids

    bos = [5, 30, 51]  # a document's tail before the first BOS, and one of 109 tokens (cut at 64)
    x, y = tokens(1, ROW, bos), tokens(2, ROW, [])
    cu, max_len = rec.module._build_cu_seqlens(list(bos), ROW, torch.device("cpu"), SEQ, 64)
    record_model.train()
    record_model.looping_active = True
    record_model.zero_grad(set_to_none=True)
    theirs = record_model(x, y, cu_seqlens=cu, max_seqlen=max_len)
    theirs.backward()
    golf_model.train()
    golf_model.set_progress(1, 1.0)
    golf_model.zero_grad(set_to_none=True)
    ours = golf_model(x, y, document_ids(x, cap=SEQ))
    ours.backward()
    pieces = [compare("model.train_loss", ours, theirs, LOSS_ATOL, LOSS_RTOL, detail="looping on")]
    record_params = dict(record_model.named_parameters())
    golf_params = dict(golf_model.named_parameters())
    worst, worst_name, worst_abs, count = 0.0, "", 0.0, 0
    for golf_name, record_name, index in name_map(golf_model, record_model):
        grad = record_params[record_name].grad
        ref = torch.zeros_like(record_params[record_name]) if grad is None else grad
        ref = record_view({record_name: ref}, record_name, index)
        mine = golf_params[golf_name].grad
        mine = torch.zeros_like(ref) if mine is None else mine
        diff = float((mine - ref).abs().max())
        rel = diff / max(float(ref.abs().max()), 1e-12)
        count += 1
        if rel > worst:
            worst, worst_name, worst_abs = rel, golf_name, diff
    pieces.append(verdict("model.grads", worst <= GRAD_TOL, worst_abs, worst,
                          f"{count} tensors, worst {worst_name} (max |diff| / max |record| <= {GRAD_TOL:g})"))
    return pieces


def doc_pieces(rec, golf_model, record_model) -> list[Piece]:
    """The record's varlen attention on its own cu_seqlens against golf's doc_ids on the same row: documents
    whole (max_doc_len = the row), and cut every SEQ tokens from each start as its loader cuts them."""
    from golf.data import document_ids

    bos = [0, 17, 40, 118]  # documents of 17, 23, 78 (> SEQ: cut) and 42 tokens
    x = tokens(3, ROW, bos)
    record_model.eval()
    record_model.looping_active = True
    golf_model.eval()
    pieces = []
    with torch.no_grad():
        for name, cap in (("model.doc_isolation", ROW), ("model.doc_isolation.cut", SEQ)):
            cu, max_len = rec.module._build_cu_seqlens(list(bos), ROW, torch.device("cpu"), cap, 64)
            theirs = record_model.forward_logits(x, cu_seqlens=cu, max_seqlen=max_len)
            ours = softcapped(golf_model, golf_model.logits(x, document_ids(x, cap=0 if cap == ROW else cap)))
            pieces.append(compare(name, ours, theirs, LOGITS_ATOL, LOGITS_RTOL,
                                  detail=f"(1, {ROW}) row, docs at {bos}, max_doc_len {cap}"))
    return pieces


def param_count_piece(rec, cfg) -> Piece:
    """Parameters at the real dims (no forward): golf's GPT(cfg) against the record's GPT at its header values."""
    from golf.model.gpt import GPT

    torch.manual_seed(0)
    ours = sum(p.numel() for p in GPT(cfg).parameters())
    record_model = rec.module.GPT(record_hparams(rec))
    theirs = sum(p.numel() for p in record_model.parameters())
    unread = unread_record_params(record_model)
    detail = f"golf {ours:,} vs record {theirs:,} (record's never-read two-lane weights: {unread})"
    return verdict("model.param_count", ours == theirs, abs(ours - theirs), abs(ours - theirs) / theirs, detail,
                   DEVIATIONS.get("model.param_count") if ours == theirs - unread else None)


def unread_record_params(record_model) -> int:
    """Two-lane weights of the blocks before parallel_start_layer: allocated for every block (R:1237-1242), read
    only from parallel_start_layer on (R:1359)."""
    rows = record_model.parallel_start_layer
    return rows * (record_model.parallel_post_lambdas[0].numel() + record_model.parallel_resid_lambdas[0].numel())


def check(rec, cfg) -> list[Piece]:
    try:
        golf_model, record_model, unmapped = build_pair(rec, cfg)
    except (KeyError, ValueError, RuntimeError) as e:
        return [Piece("model.weights", "FAIL", float("inf"), float("inf"), f"no shared weight map: {e}")]
    pieces = logits_pieces(golf_model, record_model)
    pieces += train_pieces(rec, golf_model, record_model)
    pieces += doc_pieces(rec, golf_model, record_model)
    pieces.append(param_count_piece(rec, cfg))
    return pieces
