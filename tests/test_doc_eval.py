"""Doc-isolated scoring, per-document batched LoRA TTT, phased global SGD, the eval plan and the budget guard."""

import dataclasses
import time

import pytest
import torch

from golf.evaluate import doc_spans, doc_window_plan, eval_bpb, target_byte_counts
from golf.tokenizer import SP_BOS_ID, decoded_byte_count
from golf.ttt import (DocLoRA, doc_batch_work, doc_lora_losses, doc_schedule, doc_ttt, eval_passes, eval_plan_lines,
                      phase_steps, ttt_global_phase)
import torch.multiprocessing as mp

from tests.test_ttt import luts, sp  # noqa: F401  (shared module fixtures)
from tests.tiny_eval import TINY_DOC, TINY_EVAL, doc_ttt_rank_worker, doc_val_stream, tiny_model

DOC = TINY_DOC


@pytest.fixture(scope="module")
def val(sp, sample_docs):
    # 6 documents of different lengths (~70-140 tokens): 3 batches of 2, several chunks each.
    return doc_val_stream(sp, sample_docs[:6])


def run_doc_ttt(val, luts, cfg=DOC, **kw):
    losses = torch.zeros(val.numel() - 1)
    order = torch.zeros(val.numel() - 1, dtype=torch.int64)
    result = doc_ttt(tiny_model(), val, luts, cfg, target_losses=losses, score_order=order, **kw)
    return result, losses, order


def test_doc_spans_cover_every_target_once_and_start_at_bos(val):
    spans = doc_spans(val)
    assert len(spans) == 6 and spans[0][0] == 0
    assert sum(n for _, n in spans) == val.numel() - 1
    for (s, n), (s2, _) in zip(spans, spans[1:]):
        assert s + n == s2 and val[s] == SP_BOS_ID  # the last target of a document predicts the next BOS
    assert doc_spans(val[3:])[0][0] == 0  # a stream not starting at BOS: its head is a document too


def test_doc_windows_never_cross_a_document_start(val):
    plan = doc_window_plan(val, 32, 8)
    starts = [s for s, _ in doc_spans(val)]
    for start, length, first in plan:
        assert not any(start < b < start + length for b in starts)  # no earlier document in the window's input
    covered = sorted(j for start, length, first in plan for j in range(start + first, start + length))
    assert covered == list(range(val.numel() - 1))


def test_doc_eval_counts_decoded_bytes_and_is_isolated_from_the_previous_document(sp, val, luts):
    spans = doc_spans(val)
    losses = torch.zeros(val.numel() - 1)
    r = eval_bpb(tiny_model(), val, luts, 32, 8, 256, target_losses=losses, context="doc")
    assert (r.tokens, r.bytes) == (val.numel() - 1, decoded_byte_count(sp, val.tolist()))
    changed = val.clone()
    s1, n1 = spans[1]
    changed[s1 + 1 : s1 + n1] = torch.randint(4, 1000, (n1 - 1,), generator=torch.Generator().manual_seed(3))
    other = torch.zeros_like(losses)
    eval_bpb(tiny_model(), changed, luts, 32, 8, 256, target_losses=other, context="doc")
    s2 = spans[2][0]
    assert torch.allclose(losses[s2:], other[s2:], atol=1e-5)  # documents after the changed one: same scores
    # Without doc-masked attention (DOC_ATTENTION=0), a sliding window's context reaches into the previous document.
    crossing = dataclasses.replace(TINY_EVAL, doc_attention=False)
    sliding = torch.zeros_like(losses)
    eval_bpb(tiny_model(crossing), changed, luts, 32, 8, 256, target_losses=sliding)
    reference = torch.zeros_like(losses)
    eval_bpb(tiny_model(crossing), val, luts, 32, 8, 256, target_losses=reference)
    assert not torch.allclose(reference[s2 : s2 + 8], sliding[s2 : s2 + 8], atol=1e-5)  # sliding crosses documents


def test_byte_counts_are_the_one_source_of_bytes(val, luts):
    base = eval_bpb(tiny_model(), val, luts, 32, 8, 256, context="doc")
    doubled = eval_bpb(tiny_model(), val, luts, 32, 8, 256, context="doc",
                       byte_counts=2 * target_byte_counts(val, luts))
    assert doubled.bytes == 2 * base.bytes and doubled.val_bpb == pytest.approx(base.val_bpb / 2)
    ttt_doubled, _, _ = run_doc_ttt(val, luts, byte_counts=2 * target_byte_counts(val, luts))
    assert ttt_doubled.bytes == 2 * base.bytes


def test_doc_ttt_scores_every_target_once_with_decoded_bytes(sp, val, luts):
    result, losses, order = run_doc_ttt(val, luts)
    assert (result.tokens, result.bytes) == (val.numel() - 1, decoded_byte_count(sp, val.tolist()))
    assert (losses > 0).all()
    assert result.val_loss == pytest.approx(losses.double().mean().item(), rel=1e-6)


def test_doc_ttt_without_adapting_is_doc_eval_with_the_doc_chunk_windows(val, luts):
    # lr 0 and no phases: each target is scored by the base model in its chunk's window (at most 32 back, in-doc).
    cfg = dataclasses.replace(DOC, ttt_doc_lora_lr=0.0, ttt_phases=0)
    _, losses, _ = run_doc_ttt(val, luts, cfg)
    model = tiny_model().eval()  # the loop schedule's evaluation depth, as TTT scores
    for s, n in doc_spans(val)[:2]:
        for lo in range(0, n, 16):
            hi = min(lo + 16, n)
            ws = max(0, hi - 32)
            x, y = val[s + ws : s + hi][None], val[s + ws + 1 : s + hi + 1][None]
            expect = model.token_losses(x, y)[0, lo - ws :]
            assert torch.allclose(losses[s + lo : s + hi], expect, atol=1e-5)


def test_doc_ttt_adapts_and_changes_scores(val, luts):
    _, frozen, _ = run_doc_ttt(val, luts, dataclasses.replace(DOC, ttt_doc_lora_lr=0.0, ttt_phases=0))
    _, lora_only, _ = run_doc_ttt(val, luts, dataclasses.replace(DOC, ttt_phases=0))
    first = [s for s, _ in doc_spans(val)]
    # A document's first chunk is scored by fresh adapters (B = 0): exactly the base model.
    for s in first:
        assert torch.allclose(lora_only[s : s + 16], frozen[s : s + 16], atol=1e-6)
    assert not torch.allclose(lora_only, frozen, atol=1e-4)  # later chunks see adapted weights


def test_per_doc_adapters_reset_and_rows_are_independent(val, luts):
    # A document's scores do not depend on its batch mate: change document 0 (batched with document 1's slot
    # partner by length order), and every other document keeps its scores when no phase couples them.
    cfg = dataclasses.replace(DOC, ttt_phases=0, ttt_doc_warm_start_a=False)
    _, a, _ = run_doc_ttt(val, luts, cfg)
    spans = doc_spans(val)
    changed = val.clone()
    s, n = spans[0]
    changed[s + 1 : s + n] = torch.randint(4, 1000, (n - 1,), generator=torch.Generator().manual_seed(5))
    _, b, _ = run_doc_ttt(changed, luts, cfg)
    assert torch.allclose(a[spans[1][0] :], b[spans[1][0] :], atol=1e-5)


def test_schedule_is_the_records_batches_order_and_phase_documents(val):
    lengths = [n for _, n in doc_spans(val)]
    assert lengths == sorted(lengths)  # doc_val_stream: growing documents
    sched = doc_schedule(lengths, DOC, 1)
    # batches cut from the shortest up, scored longest batch first; phases at 2 and 4 documents scored
    assert sched.batches == [[0, 1], [2, 3], [4, 5]]
    assert [seg[0] for seg in sched.segments] == [[2], [1], [0]]
    # a phase trains on the first `boundary` scored documents by batch index, then row
    assert sched.phase_docs == [[4, 5], [2, 3, 4, 5]]
    odd = doc_schedule(lengths[:5], dataclasses.replace(DOC, ttt_phases=1, ttt_phase_prefix_docs=3), 1)
    assert odd.batches == [[0, 1], [2, 3], [4]] and [seg[0] for seg in odd.segments] == [[2, 1], [0]]
    assert odd.phase_docs == [[2, 3, 4]]  # 1 then 3 documents scored: the boundary (3) is crossed after batch 1
    # on 2 ranks the other rank finishes the batch it holds before the phase (the record's pause flag)
    two = doc_schedule(lengths, dataclasses.replace(DOC, ttt_phases=1, ttt_phase_prefix_docs=1), 2)
    assert [seg for seg in two.segments] == [[[2], [1]], [[0], []]] and two.phase_docs == [[2]]


def test_phases_train_only_on_documents_already_scored(val, luts):
    spans = doc_spans(val)
    sched = doc_schedule([n for _, n in spans], DOC, 1)
    for i, docs in enumerate(sched.phase_docs):  # a phase's documents are all in the segments before it
        assert set(docs) <= {d for seg in sched.segments[: i + 1] for b in seg[0] for d in sched.batches[b]}
    _, losses, order = run_doc_ttt(val, luts)
    _, no_phase, _ = run_doc_ttt(val, luts, dataclasses.replace(DOC, ttt_phases=0))
    for d in sched.batches[sched.segments[0][0][0]]:  # scored before any phase: identical with or without phases
        s, n = spans[d]
        assert torch.allclose(losses[s : s + n], no_phase[s : s + n], atol=1e-6)
    s, n = spans[sched.batches[sched.segments[1][0][0]][0]]
    assert not torch.allclose(losses[s : s + n], no_phase[s : s + n], atol=1e-5)
    # the scoring order puts every target of a phase's documents before every target scored after that phase
    for i, docs in enumerate(sched.phase_docs):
        later_docs = [d for seg in sched.segments[i + 1 :] for b in seg[0] for d in sched.batches[b]]
        trained = torch.cat([torch.arange(spans[d][0], sum(spans[d])) for d in docs])
        later = torch.cat([torch.arange(spans[d][0], sum(spans[d])) for d in later_docs])
        assert order[trained].max() < order[later].min()


def test_batches_are_balanced_over_ranks():
    lengths = [1000, 900, 500, 400, 300, 200, 100, 50]
    cfg = dataclasses.replace(DOC, ttt_doc_batch=1, ttt_phases=0)
    sched = doc_schedule(lengths, cfg, 2)
    docs_of = [sorted(d for b in mine for d in sched.batches[b]) for mine in sched.segments[0]]
    assert docs_of == [[0, 3, 4, 7], [1, 2, 5, 6]]
    assert sorted(d for _, _, b in sched.batches_of(0) + sched.batches_of(1) for d in sched.batches[b]) == list(range(8))


def test_phase_steps_follow_the_record_schedule():
    cfg = dataclasses.replace(DOC, ttt_phase_chunk_tokens=64, ttt_phase_batch_seqs=1, sw_seq_len=32)
    steps = phase_steps(64 * 3 + 10, cfg, world_size=1)  # 4 chunks: the last (lr 0) skipped
    assert [per_rank for _, per_rank in steps] == [[(0, 1)], [(32, 1)], [(64, 1)], [(96, 1)], [(128, 1)], [(160, 1)]]
    assert steps[0][0] == cfg.ttt_phase_lr and steps[-1][0] < steps[0][0]
    # two ranks: contiguous halves of each chunk's sequences, one step per chunk
    assert [per_rank for _, per_rank in phase_steps(64 * 3 + 10, cfg, world_size=2)] == [
        [(0, 1), (32, 1)], [(64, 1), (96, 1)], [(128, 1), (160, 1)]]


def test_global_phase_changes_weights_and_leaves_no_grads(val):
    model = tiny_model()
    before = [p.clone() for p in model.parameters()]
    steps = ttt_global_phase(model, val[:200], DOC, 0, 1, torch.device("cpu"), None)
    assert steps > 0 and any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())


def test_lora_has_an_adapter_per_virtual_slot_and_starts_at_the_base_model(val):
    model = tiny_model()
    lora = DocLoRA(model, DOC, 2, torch.device("cpu"), key=0)
    # 3 blocks, block 1 looped twice: 4 slots x (q, k, v, o, mlp) + the head
    assert len(lora.a) == 4 * 5 + 1
    x = val[:64].view(2, 32)
    assert torch.allclose(doc_lora_losses(model, lora, torch.arange(2), x, x, None), model.token_losses(x, x))
    lora.remove()


def test_budget_guard_stops_adapting_and_keeps_scoring(sp, val, luts):
    lines = []
    result, losses, _ = run_doc_ttt(val, luts, deadline=time.perf_counter() - 1, log=lines.append)
    assert (result.tokens, result.bytes) == (val.numel() - 1, decoded_byte_count(sp, val.tolist()))
    assert any(line.startswith("ttt_guard: rank 0 stopped adapting after 1/3 batches") for line in lines)
    assert not any(line.startswith("ttt_phase") for line in lines)  # and no phase ran after it


def test_timing_and_slot_counting_never_feed_val_tokens(val):
    # Warm-up-like forwards (rate timing, adapter slot discovery) run before TTT: they must see random tokens only.
    model = tiny_model()
    seen = []
    model.tok_emb.register_forward_pre_hook(lambda m, args: seen.append(args[0].flatten().tolist()))
    eval_plan_lines(model, val, DOC, 1, torch.device("cpu"), None)
    DocLoRA(model, DOC, 2, torch.device("cpu"), key=0).remove()
    grams = {tuple(val[i : i + 6].tolist()) for i in range(val.numel() - 6)}
    assert seen and not any(tuple(row[i : i + 6]) in grams for row in seen for i in range(len(row) - 6))


def test_eval_plan_declares_passes_and_its_work_matches_the_run(val):
    spans = doc_spans(val)
    lengths = [n for _, n in spans]
    passes = eval_passes(DOC, lengths, 1)
    assert [p.name for p in passes] == ["prequant", "roundtrip", "ttt"]
    assert [p.claimed for p in passes] == [False, False, True]
    ttt = passes[-1]
    sched = doc_schedule(lengths, DOC, 1)
    work = [doc_batch_work([lengths[d] for d in sched.batches[b]], DOC, True) for _, _, b in sched.batches_of(0)]
    assert (ttt.score_tokens, ttt.adapt_tokens) == (sum(f for f, _ in work), sum(b for _, b in work))
    assert ttt.phase_tokens > 0 and ttt.targets == val.numel() - 1
    no_phase = dataclasses.replace(DOC, ttt_phases=0)  # one segment of 3 batches: two ranks share it
    assert eval_passes(no_phase, lengths, 2)[-1].adapt_tokens < eval_passes(no_phase, lengths, 1)[-1].adapt_tokens
    lines = eval_plan_lines(tiny_model(), val, DOC, 1, torch.device("cpu"), None)
    assert lines[-1].startswith("eval_plan eval_phase_est:") and "budget:600s" in lines[-1]
    assert sum(line.startswith("eval_plan pass:") for line in lines) == 3


# ---------------------------------------------------------------- legality: the audit's verdict on leaky variants
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from audit import order_is_causal, perturbation_verdict  # noqa: E402
from tests.leaky_ttt import LEAKY  # noqa: E402


def perturbation_of(fn, val, luts, t, cfg=DOC):
    runs = []
    for tokens in (val, perturbed_at(val, t)):
        losses = torch.zeros(tokens.numel() - 1)
        order = torch.zeros(tokens.numel() - 1, dtype=torch.int64)
        fn(tiny_model(), tokens, luts, cfg, target_losses=losses, score_order=order)
        runs.append((losses.numpy(), order.numpy()))
    (a, order), (b, order_b) = runs
    assert (order == order_b).all()  # the order depends on document lengths only
    ok, _ = order_is_causal(order, val.numpy())
    assert ok
    return perturbation_verdict(a, b, t, order)


def perturbed_at(val, t):
    changed = val.clone()
    changed[t] = 5 if val[t] != 5 else 6
    return changed


def token_in(val, doc_rank: int, offset: int) -> int:
    """A token `offset` targets into the document scored doc_rank-th, past its first chunk."""
    spans = doc_spans(val)
    sched = doc_schedule([n for _, n in spans], DOC, 1)
    d = [d for _, _, b in sched.batches_of(0) for d in sched.batches[b]][doc_rank]
    return spans[d][0] + offset


@pytest.mark.parametrize("doc_rank", [0, 3])
def test_audit_verdict_passes_the_default_doc_ttt(val, luts, doc_rank):
    ok, why = perturbation_of(doc_ttt, val, luts, token_in(val, doc_rank, 41))
    assert ok, why


@pytest.mark.parametrize("name,doc_rank", [("update_first", 0), ("rescore_best", 0), ("phase_ahead", 3)])
def test_audit_verdict_fails_each_leaky_variant(val, luts, name, doc_rank):
    # doc_rank 3 is scored in segment 2; the leaky phase after segment 1 trained on it before it was scored.
    ok, why = perturbation_of(LEAKY[name], val, luts, token_in(val, doc_rank, 41))
    assert not ok and "changed though scored before" in why, why


def test_a_declared_order_that_goes_back_inside_a_document_is_rejected(val):
    order = torch.zeros(val.numel() - 1, dtype=torch.int64).numpy()
    order[5] = 1  # target 6 declared scored before target 5 of the same document
    assert not order_is_causal(order, val.numpy())[0]


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path, sample_tokenizer, sample_docs, val, luts):
    # Without warm start a batch's result does not depend on its rank. No phases: as the record's, a phase step's
    # attention pieces follow each rank's own run of sequences, so phases depend on the rank count.
    out = tmp_path / "rank0.pt"
    mp.spawn(doc_ttt_rank_worker, args=(2, str(tmp_path / "init"), sample_tokenizer, sample_docs[:6], str(out)),
             nprocs=2)
    two = torch.load(out)
    one, losses, _ = run_doc_ttt(val, luts, dataclasses.replace(DOC, ttt_doc_warm_start_a=False, ttt_phases=0))
    assert (two["result"]["tokens"], two["result"]["bytes"]) == (one.tokens, one.bytes)
    assert torch.allclose(two["losses"], losses, atol=1e-4)
