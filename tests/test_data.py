"""Token shards: round trip, header/length verification, atomic writes, the rank-sharded loader."""

import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from golf.config import GolfError
from golf.data import (
    SHARD_HEADER_BYTES,
    SHARD_READS,
    DistributedTokenLoader,
    TokenStream,
    data_fingerprint,
    load_val_tokens,
    read_shard,
    shard_paths,
    shard_token_count,
    write_shard,
)


def make_shards(directory, split, sizes, start=0):
    """Shards of consecutive token ids (start, start+1, ...) so every position is recognisable."""
    paths = []
    for i, size in enumerate(sizes):
        path = str(directory / f"test_{split}_{i:06d}.bin")
        write_shard(path, np.arange(start, start + size) % 65536)
        start += size
        paths.append(path)
    return paths


@settings(max_examples=50, deadline=None)
@given(arrays(np.uint16, st.integers(0, 2000)))
def test_shard_round_trip(tmp_path_factory, tokens):
    path = str(tmp_path_factory.mktemp("shards") / "x_train_000000.bin")
    write_shard(path, tokens)
    back = read_shard(path)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, tokens)
    assert os.path.getsize(path) == SHARD_HEADER_BYTES + 2 * len(tokens)
    assert SHARD_READS[-1] == os.path.abspath(path)


def corrupt(path, header_word=None, value=None, new_size=None):
    data = bytearray(open(path, "rb").read())
    if header_word is not None:
        data[4 * header_word : 4 * header_word + 4] = np.array([value], dtype="<i4").tobytes()
    if new_size is not None:
        data = data[:new_size] + b"\0" * max(0, new_size - len(data))
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        (dict(header_word=0, value=12345), "wrong magic 12345"),
        (dict(header_word=1, value=2), "unsupported shard version 2"),
        (dict(new_size=SHARD_HEADER_BYTES + 2 * 99), "truncated shard, header says 100 tokens = 1224 bytes but the file has 1222"),
        (dict(new_size=SHARD_HEADER_BYTES + 2 * 101), "too long shard.*1224 bytes but the file has 1226"),
        (dict(new_size=100), "truncated shard, 100 bytes is shorter than the 1024-byte header"),
        (dict(header_word=2, value=-5), "too long"),
    ],
)
def test_damaged_shards_are_rejected_naming_the_file(tmp_path, damage, message):
    path = str(tmp_path / "bad_val_000000.bin")
    write_shard(path, np.arange(100))
    corrupt(path, **damage)
    reads_before = len(SHARD_READS)
    for check in (read_shard, shard_token_count):
        with pytest.raises(GolfError, match=message) as err:
            check(path)
        assert str(err.value).startswith(path)
    assert len(SHARD_READS) == reads_before  # a rejected shard was never read


def test_missing_shard_says_how_to_make_data(tmp_path):
    with pytest.raises(GolfError, match="not found.*prepare_sample.py"):
        read_shard(str(tmp_path / "nope.bin"))


@pytest.mark.parametrize("tokens", [np.array([0, 65536]), np.array([-1, 3]), np.zeros((2, 2), dtype=np.int64)])
def test_failed_write_leaves_the_existing_shard_untouched(tmp_path, tokens):
    path = str(tmp_path / "keep_train_000000.bin")
    write_shard(path, np.arange(10))
    before = open(path, "rb").read()
    with pytest.raises(GolfError, match="keep_train_000000.bin"):
        write_shard(path, tokens)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["keep_train_000000.bin"]  # no temp file left behind


def test_shard_paths_sorted_per_split_and_clear_error(tmp_path):
    make_shards(tmp_path, "train", [5, 5, 5])
    make_shards(tmp_path, "val", [5])
    (tmp_path / "notes.txt").write_text("not a shard")
    train = shard_paths(str(tmp_path), "train")
    assert [os.path.basename(p) for p in train] == [f"test_train_{i:06d}.bin" for i in range(3)]
    assert [os.path.basename(p) for p in shard_paths(str(tmp_path), "val")] == ["test_val_000000.bin"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GolfError, match=r"empty: no shards matching \*_train_\*\.bin; run .*prepare_sample"):
        shard_paths(str(empty), "train")
    with pytest.raises(GolfError, match="unknown split"):
        shard_paths(str(tmp_path), "test")


def test_stream_crosses_shards_and_wraps_to_the_first(tmp_path):
    paths = make_shards(tmp_path, "train", [7, 0, 5])
    stream = TokenStream(paths)
    assert stream.take(4).tolist() == [0, 1, 2, 3]
    assert stream.take(6).tolist() == [4, 5, 6, 7, 8, 9]  # skips the empty middle shard
    assert stream.take(5).tolist() == [10, 11, 0, 1, 2]  # wraps around
    assert stream.take(0).tolist() == []
    assert stream.take(25).tolist() == list(range(3, 12)) + list(range(12)) + [0, 1, 2, 3]


def test_stream_of_empty_shards_is_an_error_not_a_hang(tmp_path):
    stream = TokenStream(make_shards(tmp_path, "train", [0, 0]))
    with pytest.raises(GolfError, match="all 2 shards are empty"):
        stream.take(1)


def test_loader_ranks_take_disjoint_consecutive_spans(tmp_path):
    paths = make_shards(tmp_path, "train", [300, 300])
    global_tokens, seq_len = 64, 8
    loaders = [DistributedTokenLoader(paths, rank, 4) for rank in range(4)]
    for step in range(3):
        spans = []
        for rank, loader in enumerate(loaders):
            x, y = loader.next_batch(global_tokens, seq_len, 1)
            assert x.dtype == torch.int64 and x.shape == (2, 8) and y.shape == (2, 8)
            torch.testing.assert_close(x.flatten()[1:], y.flatten()[:-1])  # y is x shifted by one
            spans.append(torch.cat([x.flatten(), y.flatten()[-1:]]))
        chunk_start = step * 4 * 17  # each call takes world_size * (local_tokens + 1) tokens
        assert torch.cat(spans).tolist() == list(range(chunk_start, chunk_start + 4 * 17))


def test_loader_global_batch_independent_of_world_and_accum_split(tmp_path):
    paths = make_shards(tmp_path, "train", [1000])
    global_tokens, seq_len = 96, 8

    def global_batches(world_size, accum, steps=3):
        """Per optimiser step, all micro-batches of all ranks in stream order (accum step, then rank)."""
        loaders = [DistributedTokenLoader(paths, rank, world_size) for rank in range(world_size)]
        batches = []
        for _ in range(steps):
            micro = [loader.next_batch(global_tokens, seq_len, accum) for _ in range(accum) for loader in loaders]
            batches.append((torch.cat([x for x, _ in micro]), torch.cat([y for _, y in micro])))
        return batches

    reference = global_batches(1, 4)
    assert reference[0][0].shape == (12, 8)
    for world, accum in [(2, 2), (4, 1)]:
        for (x1, y1), (x2, y2) in zip(reference, global_batches(world, accum)):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(reference[0][0], reference[1][0])


def test_loader_rejects_batches_that_do_not_split_into_sequences(tmp_path):
    paths = make_shards(tmp_path, "train", [100])
    with pytest.raises(GolfError, match="TRAIN_BATCH_TOKENS=100.*TRAIN_SEQ_LEN=16"):
        DistributedTokenLoader(paths, 0, 2).next_batch(100, 16, 1)
    with pytest.raises(GolfError, match="rank 2 is outside world size 2"):
        DistributedTokenLoader(paths, 2, 2)


def test_load_val_tokens_concatenates_and_truncates(tmp_path):
    make_shards(tmp_path, "val", [5, 6], start=100)
    make_shards(tmp_path, "train", [50])
    full = load_val_tokens(str(tmp_path))
    assert full.dtype == torch.int64 and full.tolist() == list(range(100, 111))
    reads_before = len(SHARD_READS)
    assert load_val_tokens(str(tmp_path), max_tokens=3).tolist() == [100, 101, 102]
    assert len(SHARD_READS) == reads_before + 1  # the second val shard was not needed
    assert all("_val_" in path for path in SHARD_READS[reads_before:])


def test_fingerprint_changes_with_one_byte_and_with_a_name(tmp_path):
    paths = make_shards(tmp_path, "train", [50, 50])
    first = data_fingerprint(paths)
    assert len(first) == 16 and int(first, 16) >= 0
    assert data_fingerprint(paths) == first
    assert data_fingerprint(paths[::-1]) != first
    data = bytearray(open(paths[1], "rb").read())
    data[-1] ^= 1
    open(paths[1], "wb").write(bytes(data))
    assert data_fingerprint(paths) != first
    data[-1] ^= 1
    open(paths[1], "wb").write(bytes(data))
    assert data_fingerprint(paths) == first
    renamed = str(tmp_path / "other_train_000001.bin")
    os.rename(paths[1], renamed)
    assert data_fingerprint([paths[0], renamed]) != first
