"""Evaluation pieces: golf's BPB and per-document TTT against the record's eval_val and eval_val_ttt_phased.

Both sides get the CaseOps sample's val (data/prepare_sample.py: real SOTU documents through a CaseOps tokenizer, with
the val byte sidecar) and ONE set of small-dim weights (golf/equiv/model.py: golf randomised, copied through its
NAME_MAP), float32 on CPU.
- eval.val_tokens / eval.val_bytes: the record's loaders (load_validation_tokens, load_validation_byte_sidecar) against
  golf.data on the sample's files: token counts (the record cuts the split to a multiple of eval_seq_len: a declared
  deviation) and the per-token original bytes, exactly.
- eval.bpb: the record's eval_val (its flat batch with cu_seqlens, R:2732-2795) against golf's eval_bpb (doc context,
  one window per document) on the first documents of that val, each cut to a few hundred tokens.
- eval.ttt.*: the record's eval_val_ttt_phased (R:3021-3316) against golf's doc TTT on a handful of such documents of
  different lengths with small chunks, batches and phases (golf's Config values for everything else; the record's
  log header for its): each document's summed loss, the token and byte totals, and val_bpb. The adapters' random A
  matrices are the record's (each set it builds, in order, is copied into golf's draw).
The record's counter files (/tmp/ttt_*_<run_id>) are redirected into a temp dir through the loaded module's `open`
and `os`; the record's file is never edited.
"""

import contextlib
import dataclasses
import os
import tempfile
import types
import warnings
from pathlib import Path

import torch

from golf.config import GolfError, smoke
from golf.data import load_val_byte_sidecar, load_val_tokens
from golf.equiv.model import load_shared_weights, randomise_
from golf.equiv.record import record_gpt, record_hparams
from golf.equiv.report import Piece, compare, verdict
from golf.evaluate import doc_spans, eval_bpb
from golf.model.gpt import GPT
from golf.recipes import DEVIATIONS
import golf.ttt

ROOT = Path(__file__).resolve().parents[2]
HEAD_DIM = 32  # model_dim = num_heads * 32, as the model pieces
BPB_DOCS, BPB_DOC_TOKENS = 4, 300  # eval.bpb: the first 4 val documents, each cut to 300 tokens
# eval.ttt: 11 documents in batches of 2: the remainder batch holds the longest (220 tokens: windows of 64 slide
# over it), then two full batches share warm adapters before phase 1 (after 4 documents; it trains on documents of
# 90 and 100 tokens too: its attention is cut every 64 from a document's start) and two more before phase 2 (after
# 8); the last batch follows it. A tie (45, 45).
TTT_DOC_TOKENS = [50, 30, 45, 45, 220, 100, 40, 25, 90, 35, 52]
# The phases' SGD lr is raised on both sides (0.01, not the recipes' 0.001) and each phase step is one row of 4
# sequences (a 90-token document in it is cut at 64): at 0.001 the phases barely move this model. On the record
# (vocab-1024 sample), max |golf - record| / max |record| of the per-document sums: 1.65e-6; against a record whose
# phases do not cut documents at eval_seq_len: 1.15e-5.
TTT = dict(batch=2, chunk=16, seq=64, phases=2, prefix=8, phase_chunk=256, phase_seqs=4, phase_lr=0.01)
# float32 both sides; TTT adds AdamW (beta1 0: the first step moves each weight by ~lr sign(grad)) and SGD steps.
# Seen on the record (vocab-1024 sample): eval.bpb 5e-9 relative; TTT: see TTT. Per-document sums are compared
# against TTT_DOC_RTOL x the largest sum (a short document's sum carries the noise of the long ones' shared phases).
BPB_ATOL, BPB_RTOL = 1e-4, 1e-5
TTT_DOC_RTOL, TTT_RTOL = 5e-6, 2e-5


def sample_paths(cfg) -> tuple[Path, Path]:
    """The CaseOps sample (the smoke preset's data), relative to the checkout."""
    small = smoke(cfg)
    return (ROOT / small.data_path).resolve(), (ROOT / small.tokenizer_path).resolve()


def check(rec, cfg) -> list[Piece]:
    data_path, tokenizer_path = sample_paths(cfg)
    if not list(data_path.glob("*_val_bytes_*.bin")):
        raise GolfError(f"{data_path}: no CaseOps sample val with its byte sidecar; run python data/prepare_sample.py")
    return check_on(rec, cfg, data_path, tokenizer_path)


def check_on(rec, cfg, data_path: Path, tokenizer_path: Path) -> list[Piece]:
    with one_thread():
        return eval_pieces(rec, cfg, data_path, tokenizer_path)


@contextlib.contextmanager
def one_thread():
    """Small tensors: extra intra-op threads only contend on a shared machine (this family on the vocab-8192 sample
    under a load of ~14 on 2 cores: 518.6 s with 2 threads, 42.1 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def eval_pieces(rec, cfg, data_path: Path, tokenizer_path: Path) -> list[Piece]:
    from golf.tokenizer import load_tokenizer

    vocab = load_tokenizer(str(tokenizer_path)).vocab_size()
    val = load_val_tokens(str(data_path))
    sidecar = load_val_byte_sidecar(str(data_path))
    pieces = loader_pieces(rec, data_path, val, sidecar, cfg.sw_seq_len)
    pieces.append(bpb_piece(rec, cfg, vocab, *first_docs(val, sidecar, [BPB_DOC_TOKENS] * BPB_DOCS)))
    pieces += ttt_pieces(rec, cfg, vocab, *first_docs(val, sidecar, TTT_DOC_TOKENS))
    return pieces


def loader_pieces(rec, data_path: Path, val: torch.Tensor, sidecar: torch.Tensor, seq_len: int) -> list[Piece]:
    tokens = rec.module.load_validation_tokens(str(data_path / "*_val_*.bin"), seq_len)
    theirs_bytes = rec.module.load_validation_byte_sidecar(str(data_path / "*_val_bytes_*.bin"), seq_len,
                                                            tokens.numel())
    n = tokens.numel()
    same = torch.equal(tokens.long(), val[:n])
    counts = verdict("eval.val_tokens", same and n == val.numel(), val.numel() - n, (val.numel() - n) / n,
                     f"record {n - 1} targets (cut to a multiple of {seq_len}), golf {val.numel() - 1}"
                     f"{'' if same else '; the tokens differ'}", DEVIATIONS.get("val_tokens") if same else None)
    byte_piece = compare("eval.val_bytes", sidecar[:n], theirs_bytes.long(), 0, 0,
                         detail=f"{n} per-token original byte counts, total {int(sidecar[1:n].sum())}")
    return [counts, byte_piece]


def first_docs(val: torch.Tensor, sidecar: torch.Tensor, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The first len(lengths) val documents, document i cut to its first lengths[i] tokens (BOS included), and their
    byte sidecar entries: a short val stream of real documents."""
    spans = doc_spans(val)
    if len(spans) < len(lengths):
        raise GolfError(f"the sample val has {len(spans)} documents; the eval pieces need {len(lengths)}")
    keep = [torch.arange(s, s + min(k, n + 1)) for (s, n), k in zip(spans, lengths)]
    idx = torch.cat(keep)
    return val[idx], sidecar[idx]


def model_pair(rec, cfg, vocab: int, seq: int, **record_fields):
    """golf's GPT and the record's at small dims (vocab of the sample tokenizer) with golf's random weights copied
    into the record's, both in evaluation state (the record's eval model loops, R:3593)."""
    small = dataclasses.replace(cfg, vocab_size=vocab, model_dim=cfg.num_heads * HEAD_DIM, train_seq_len=seq,
                                sw_seq_len=seq, sw_stride=seq, compile=False, device="cpu",
                                embed_bf16=False)  # record_gpt runs the record in fp32 (its eager CPU path)
    golf_model = GPT(small)
    h = record_hparams(rec, vocab_size=vocab, model_dim=small.model_dim, train_seq_len=seq, eval_seq_len=seq,
                       **record_fields)
    record_model = record_gpt(rec, h)
    randomise_(golf_model)
    load_shared_weights(golf_model, record_model)
    golf_model.eval()
    record_model.eval()
    record_model.looping_active = h.num_loops > 0
    return small, golf_model, h, record_model


def val_data(val: torch.Tensor, sidecar: torch.Tensor):
    """What the record's evals read of its ValidationData (R:450-473) for CaseOps data: no LUTs, the sidecar."""
    return types.SimpleNamespace(val_tokens=val, val_bytes=sidecar.to(torch.int32), caseops_enabled=True,
                                 base_bytes_lut=None, has_leading_space_lut=None, is_boundary_token_lut=None)


def bpb_piece(rec, cfg, vocab: int, val: torch.Tensor, sidecar: torch.Tensor) -> Piece:
    """One flat row of all targets for the record (eval_seq_len = the targets, so nothing is cut: its cu_seqlens
    separate the documents), one window per document for golf."""
    seq = val.numel() - 1
    small, golf_model, h, record_model = model_pair(rec, cfg, vocab, seq)
    h.val_batch_tokens = seq * h.world_size * h.grad_accum_steps  # one sequence per batch (R:2734)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # autocast("cuda") on a CPU-only torch: disabled, as wanted
        loss, bpb = rec.module.eval_val(h, torch.device("cpu"), val_data(val, sidecar), record_model)
    with torch.no_grad():
        ours = eval_bpb(golf_model, val, None, seq, seq, seq, context="doc", byte_counts=sidecar[1:])
    return compare("eval.bpb", [ours.val_loss, ours.val_bpb], [loss, bpb], BPB_ATOL, BPB_RTOL,
                   detail=f"val_loss, val_bpb over {ours.tokens} targets / {ours.bytes} bytes of {BPB_DOCS} documents")


@contextlib.contextmanager
def counters_in(module, directory: str):
    """The record's /tmp/ttt_*_<run_id> counter and flag files (R:3052-3054) go to `directory` instead: its module
    globals `open` and `os` shadow the builtin and the import while the block runs."""
    def fix(path):
        return os.path.join(directory, os.path.basename(path)) if str(path).startswith("/tmp/ttt_") else path

    real_os = module.os
    path_ns = types.SimpleNamespace(**{k: getattr(real_os.path, k) for k in dir(real_os.path) if not k.startswith("__")})
    path_ns.exists = lambda p: real_os.path.exists(fix(p))
    proxy = types.SimpleNamespace(**{k: getattr(real_os, k) for k in dir(real_os) if not k.startswith("__")})
    proxy.remove, proxy.path = (lambda p: real_os.remove(fix(p))), path_ns
    module.open = lambda path, *a, **kw: open(fix(path), *a, **kw)
    module.os = proxy
    try:
        yield
    finally:
        module.os = real_os
        del module.open


def record_ttt(rec, h, record_model, data) -> tuple[float, float, dict, list]:
    """The record's eval_val_ttt_phased: (val_loss, val_bpb, document start -> [loss sum, targets, bytes], the A
    matrices of every adapter set it built, in order)."""
    m = rec.module
    per_doc, built, batches, current = {}, [], [], []
    build_batches, claim, accumulate, lora_class = (m._build_ttt_global_batches, m._claim_next_batch,
                                                   m._accumulate_bpb, m.BatchedTTTLoRA)

    class CapturedLoRA(lora_class):  # each adapter set's random A, as drawn
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append({name: p.detach().clone() for name, p in self.named_parameters() if name.endswith("A")})

    def capture_batches(*args, **kwargs):
        batches[:] = build_batches(*args, **kwargs)
        return batches

    def capture_claim(path, queue_len):
        idx = claim(path, queue_len)
        current[:] = [start for _, (start, _) in batches[idx][1]] if idx < queue_len else []
        return idx

    def per_row(ptl, x, y, offsets, lens, pos, *rest, y_bytes=None):  # the record's own sum, once per document
        accumulate(ptl, x, y, offsets, lens, pos, *rest, y_bytes=y_bytes)
        luts = rest[:3]
        for b, start in enumerate(current):
            sums = [torch.zeros((), dtype=torch.float64) for _ in range(3)]
            accumulate(ptl[b : b + 1], x[b : b + 1], y[b : b + 1], offsets[b : b + 1], lens[b : b + 1], pos, *luts,
                       *sums, y_bytes=None if y_bytes is None else y_bytes[b : b + 1])
            total = per_doc.setdefault(start, [0.0, 0.0, 0.0])
            for i, v in enumerate((sums[0], sums[2], sums[1])):  # loss, tokens, bytes
                total[i] += float(v)

    saved = {"_build_ttt_global_batches": build_batches, "_claim_next_batch": claim, "_accumulate_bpb": accumulate,
             "BatchedTTTLoRA": lora_class, "log": m.log}
    with tempfile.TemporaryDirectory(prefix="golf-equiv-ttt-") as tmp, counters_in(m, tmp), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m._build_ttt_global_batches, m._claim_next_batch = capture_batches, capture_claim
        m._accumulate_bpb, m.BatchedTTTLoRA = per_row, CapturedLoRA
        m.log = lambda *args, **kwargs: None  # its progress lines are not ours to print
        try:
            loss, bpb = m.eval_val_ttt_phased(h, record_model, torch.device("cpu"), data, record_model.forward_ttt)
        finally:
            for name, fn in saved.items():
                setattr(m, name, fn)
    return loss, bpb, per_doc, built


def adapter_map(lora: "golf.ttt.DocLoRA", layer_order: list[int]) -> list[tuple[str, int]]:
    """Per golf adapter: the record's (A parameter name) it takes. golf's call k of block i's module is the record's
    slot of the k-th occurrence of i in its layer order; Q/K/V/O/MLP map to q/k/v/o/mlp_loras, the head to
    lm_head_lora (R:1663-1705)."""
    kinds = {"attn.q": "q_loras", "attn.k": "k_loras", "attn.v": "v_loras", "attn": "o_loras", "mlp": "mlp_loras"}
    out = [None] * len(lora.a)
    for name, module in lora.modules_:
        block, kind = int(name.split(".")[1]), kinds[name.split(".", 2)[2]]
        slots = [s for s, i in enumerate(layer_order) if i == block]
        for k, slot in enumerate(slots):
            out[lora.index[module] + k] = f"{kind}.{slot}.A"
    out[lora.head] = "lm_head_lora.A"
    return out


def ttt_pieces(rec, cfg, vocab: int, val: torch.Tensor, sidecar: torch.Tensor) -> list[Piece]:
    t = TTT
    small, golf_model, h, record_model = model_pair(
        rec, cfg, vocab, t["seq"], ttt_batch_size=t["batch"], ttt_chunk_size=t["chunk"], ttt_eval_seq_len=t["seq"],
        phased_ttt_num_phases=t["phases"], phased_ttt_prefix_docs=t["prefix"], global_ttt_chunk_tokens=t["phase_chunk"],
        global_ttt_batch_seqs=t["phase_seqs"], global_ttt_lr=t["phase_lr"], run_id="equiv")
    small = dataclasses.replace(small, ttt_doc_batch=t["batch"], ttt_doc_chunk_tokens=t["chunk"], ttt_phases=t["phases"],
                                ttt_phase_prefix_docs=t["prefix"], ttt_phase_chunk_tokens=t["phase_chunk"],
                                ttt_phase_batch_seqs=t["phase_seqs"], ttt_phase_lr=t["phase_lr"])
    layer_order = record_model.encoder_indices + record_model.decoder_indices if record_model.looping_active \
        else list(range(len(record_model.blocks)))
    loss, bpb, per_doc, built = record_ttt(rec, h, record_model, val_data(val, sidecar))

    drawn = []
    draw = golf.ttt.DocLoRA.draw_a

    def record_draw(lora, key):  # golf's adapter sets take the record's A matrices, set for set, in order
        draw(lora, key)
        drawn.append(key)
        if len(drawn) <= len(built):
            source = built[len(drawn) - 1]
            with torch.no_grad():
                for a, name in zip(lora.a, adapter_map(lora, layer_order)):
                    if name in source and source[name].shape == a.shape:
                        a.copy_(source[name])

    losses = torch.zeros(val.numel() - 1)
    golf.ttt.DocLoRA.draw_a = record_draw
    try:
        ours = golf.ttt.doc_ttt(golf_model, val, None, small, byte_counts=sidecar[1:], target_losses=losses)
    finally:
        golf.ttt.DocLoRA.draw_a = draw
    spans = doc_spans(val)
    golf_docs = [[float(losses[s : s + n].double().sum()), n, int(sidecar[s + 1 : s + n + 1].sum())] for s, n in spans]
    record_docs = [per_doc.get(s, [0.0, 0.0, 0.0]) for s, _ in spans]
    detail = (f"{len(spans)} documents, batches of {t['batch']}, chunks of {t['chunk']} in {t['seq']}, {t['phases']} "
              f"phases at lr {t['phase_lr']}")
    return [
        verdict("eval.ttt.adapter_sets", len(drawn) == len(built), abs(len(drawn) - len(built)), 0.0,
                f"golf drew {len(drawn)} adapter sets, the record built {len(built)} (per phase, short batches)"),
        compare("eval.ttt.doc_counts", [d[1:] for d in golf_docs], [d[1:] for d in record_docs], 0, 0,
                detail=f"targets and bytes per document; {detail}"),
        compare("eval.ttt.doc_losses", [d[0] for d in golf_docs], [d[0] for d in record_docs],
                TTT_DOC_RTOL * max(abs(d[0]) for d in record_docs), 0,
                detail=f"summed loss per document; {detail}"),
        compare("eval.ttt.bpb", [ours.val_loss, ours.val_bpb], [loss, bpb], 0, TTT_RTOL,
                detail=f"val_loss, val_bpb over {ours.tokens} targets"),
    ]
