import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from golf.data import SHARD_READS
from golf.evaluate import eval_bpb, eval_phase_started, score_windows, split_plan, window_plan
from golf.tokenizer import build_byte_luts, decoded_byte_count, load_tokenizer, val_target_bytes
from tests.tiny_eval import TINY_EVAL, tiny_model, val_stream


@given(n=st.integers(1, 3000), seq_len=st.integers(1, 300), stride_frac=st.floats(0.01, 1.0))
def test_every_target_scored_exactly_once_with_most_context(n, seq_len, stride_frac):
    stride = max(1, int(seq_len * stride_frac))
    counts = [0] * n
    context = [None] * n
    for start, length, first in window_plan(n, seq_len, stride):
        assert 0 < length <= seq_len and start + length <= n
        for pos in range(first, length):
            counts[start + pos] += 1
            context[start + pos] = pos  # tokens before the target inside the window
    assert counts == [1] * n
    # Each target sees min(its position, seq_len - stride) earlier tokens at least.
    assert all(context[j] >= min(j, seq_len - stride) for j in range(n))


def test_bad_stride():
    with pytest.raises(ValueError):
        window_plan(10, 4, 5)


@given(n=st.integers(1, 2000), seq_len=st.integers(1, 100), stride_frac=st.floats(0.01, 1.0),
       cuts=st.lists(st.integers(1, 1999), max_size=20))
def test_split_plan_keeps_each_targets_window_and_respects_chunks(n, seq_len, stride_frac, cuts):
    plan = window_plan(n, seq_len, max(1, int(seq_len * stride_frac)))
    bounds = sorted({0, n} | {c for c in cuts if c < n})
    window_of = {}  # target -> window start in the unsplit plan
    for start, length, first in plan:
        for pos in range(first, length):
            window_of[start + pos] = start
    seen = {}
    for (lo, hi), windows in zip(zip(bounds, bounds[1:]), split_plan(plan, bounds)):
        for start, length, first in windows:
            for pos in range(first, length):
                assert lo <= start + pos < hi and start + pos not in seen
                seen[start + pos] = start
    assert seen == window_of  # every target once, with the same window (hence the same context)


@pytest.fixture(scope="module")
def sp(sample_tokenizer):
    return load_tokenizer(sample_tokenizer)


@pytest.fixture(scope="module")
def val(sp, sample_docs):
    return val_stream(sp, sample_docs[:4])  # 4 documents, ~590 tokens


def test_eval_bpb_scores_every_target_once_and_counts_decoded_bytes(sp, val):
    luts = build_byte_luts(sp, TINY_EVAL.vocab_size)
    losses = torch.zeros(val.numel() - 1)
    r = eval_bpb(tiny_model(), val, val_target_bytes(val, luts), 32, 8, 256, target_losses=losses)
    assert r.tokens == val.numel() - 1
    assert r.bytes == decoded_byte_count(sp, val.tolist())  # the stream starts with BOS: nothing unscored
    assert (losses > 0).all()
    assert abs(losses.double().sum().item() / r.tokens - r.val_loss) < 1e-9
    # Scoring each window alone (batch of 1) gives the same per-target losses: padding and batching do not leak.
    alone = torch.zeros_like(losses)
    eval_bpb(tiny_model(), val, val_target_bytes(val, luts), 32, 8, 32, target_losses=alone)
    assert torch.allclose(alone, losses, atol=1e-5)


def test_ranks_split_windows_and_their_sums_add_up(sp, val):
    luts = build_byte_luts(sp, TINY_EVAL.vocab_size)
    model = tiny_model()
    plan = window_plan(val.numel() - 1, 32, 8)
    device = torch.device("cpu")
    target_bytes = val_target_bytes(val, luts)
    whole = score_windows(model, val, plan, 32, 256, target_bytes, device)
    per_rank = sum(score_windows(model, val, plan[r::3], 32, 256, target_bytes, device) for r in range(3))
    assert per_rank[1:].tolist() == whole[1:].tolist()
    assert abs(per_rank[0].item() - whole[0].item()) < 1e-6 * whole[0].item()


def test_eval_phase_line_counts_val_reads(tmp_path):
    before = list(SHARD_READS)
    try:
        SHARD_READS[:] = ["/d/sample_train_000000.bin"]
        assert "val_reads:0" in eval_phase_started()
        SHARD_READS.append("/d/sample_val_000000.bin")
        line = eval_phase_started()
        assert "shard_reads:2 val_reads:1" in line and "sample_val_000000.bin" in line
    finally:
        SHARD_READS[:] = before
