"""The document-packing loader (golf/data.py) and the data pieces against the record's DocumentPackingLoader."""

import dataclasses

import numpy as np
import pytest
import torch

from golf.config import GolfError
from golf.data import BOS_ID, DistributedTokenLoader, DocumentPackingLoader, document_ids, write_shard
from golf.equiv import data as equiv_data
from golf.equiv.record import load_record
from golf.recipes import RECIPES
from tests.equiv_record import altered_copy, needs_record, record_dir


@pytest.fixture(autouse=True)
def small_run(monkeypatch):
    """2 ranks x 6 steps of 4 x 1024 tokens over 3 shards of the sample corpus: shard skips and a wrap-around
    happen within seconds (the tool runs the record's real batch over 8 ranks)."""
    monkeypatch.setattr(equiv_data, "WORLD", 2)
    monkeypatch.setattr(equiv_data, "STEPS", 6)
    monkeypatch.setattr(equiv_data, "SHARDS", 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(cfg):
    """8192 tokens per step: 1024 per rank and micro-batch at 2 ranks x grad accumulation 8 // 2."""
    return dataclasses.replace(cfg, train_batch_tokens=8192, train_seq_len=1024)


def shard(path, docs):
    tokens = np.concatenate([np.array([BOS_ID] + list(d), dtype=np.uint16) for d in docs])
    write_shard(str(path), tokens)
    return str(path)


def test_document_ids_cut_every_cap_tokens_from_each_document_start():
    x = torch.tensor([[7, 7, 7, 1, 5, 5, 5, 5, 5, 1, 6]])
    # a tail cut at 2 tokens from the row start, a document of 6 cut every 2 from its BOS, a document of 2
    ids = document_ids(x, cap=2)[0].tolist()
    starts = [i for i in range(len(ids)) if i == 0 or ids[i] != ids[i - 1]]
    assert starts == [0, 2, 3, 5, 7, 9]
    assert document_ids(x, cap=0).tolist() == [[0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2]]


def test_packing_loader_skips_shard_tails_starts_at_bos_and_resumes(tmp_path):
    a = shard(tmp_path / "a_train_000000.bin", [[9] * 5, [8] * 6])  # 13 tokens
    b = shard(tmp_path / "a_train_000001.bin", [[4] * 10])  # 11 tokens
    loader = DocumentPackingLoader([a, b], rank=1, world_size=2)
    x, y, ids = loader.next_batch(8, 4, 1)  # 4 tokens per rank: spans of 5, rank 1 takes tokens 5-9
    assert x.tolist() == [[9, 1, 8, 8]] and y.tolist() == [[1, 8, 8, 8]]
    state = loader.state_dict()
    nxt = loader.next_batch(8, 4, 1)  # 10 + 10 > 13: the rest of shard a is skipped, shard b from its BOS
    assert nxt[0].tolist() == [[4, 4, 4, 4]]
    resumed = DocumentPackingLoader([a, b], rank=1, world_size=2)
    resumed.load_state_dict(state)
    assert all(torch.equal(p, q) for p, q in zip(resumed.next_batch(8, 4, 1), nxt))
    fixed = DistributedTokenLoader([a, b], 0, 1)
    fixed.next_batch(4, 4, 1)
    again = DistributedTokenLoader([a, b], 0, 1)
    again.load_state_dict(fixed.state_dict())
    assert torch.equal(again.next_batch(4, 4, 1)[0], fixed.next_batch(4, 4, 1)[0])


def test_packing_loader_rejects_a_shard_without_bos_and_a_batch_no_shard_holds(tmp_path):
    path = tmp_path / "x_train_000000.bin"
    write_shard(str(path), np.full(10, 5, dtype=np.uint16))
    with pytest.raises(GolfError, match="no BOS"):
        DocumentPackingLoader([str(path)], 0, 1)
    ok = shard(tmp_path / "y_train_000000.bin", [[3] * 5])
    with pytest.raises(GolfError, match="no shard holds"):
        DocumentPackingLoader([ok], 0, 1).next_batch(64, 8, 1)


def test_default_trains_on_packed_documents_and_prior_keeps_fixed_rows():
    assert RECIPES["pr1855"].train_loader == "doc_packing" and RECIPES["prior"].train_loader == "fixed_rows"


@needs_record
def test_data_pieces_pass_on_the_record(monkeypatch):
    rec = load_record(record_dir() / "train_gpt.py")
    monkeypatch.setattr(rec, "env", {**rec.env, "TRAIN_BATCH_TOKENS": "8192", "TRAIN_SEQ_LEN": "1024"})
    pieces = equiv_data.check(rec, small(RECIPES["pr1855"]))
    assert {p.name: p.status for p in pieces} == {"data.tokens": "PASS", "data.cu_seqlens": "PASS"}


@needs_record
def test_record_cutting_at_half_the_sequence_fails_only_cu_seqlens(tmp_path, monkeypatch):
    path = altered_copy(tmp_path, "self.max_seq_len = h.train_seq_len", "self.max_seq_len = h.train_seq_len // 2")
    rec = load_record(path, record_dir() / "train_seed42.log")
    monkeypatch.setattr(rec, "env", {**rec.env, "TRAIN_BATCH_TOKENS": "8192", "TRAIN_SEQ_LEN": "1024"})
    st = {p.name: p.status for p in equiv_data.check(rec, small(RECIPES["pr1855"]))}
    assert st == {"data.tokens": "PASS", "data.cu_seqlens": "FAIL"}


@needs_record
def test_fixed_rows_fail_the_data_pieces(monkeypatch):
    """golf's loader before issue 23: rows of train_seq_len (here 4 x 256) where the record packs one row."""
    rec = load_record(record_dir() / "train_gpt.py")
    monkeypatch.setattr(rec, "env", {**rec.env, "TRAIN_BATCH_TOKENS": "8192", "TRAIN_SEQ_LEN": "256"})
    pieces = equiv_data.check(rec, dataclasses.replace(small(RECIPES["prior"]), train_seq_len=256))
    assert [(p.name, p.status) for p in pieces] == [("data.tokens", "FAIL")]
    assert "(4, 256) vs record (1, 1024)" in pieces[0].detail
