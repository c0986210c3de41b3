import pytest
from hypothesis import given
from hypothesis import strategies as st

from golf.evaluate import window_plan


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
