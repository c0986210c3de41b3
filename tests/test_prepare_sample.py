"""data/prepare_sample.py: builds verified sample shards + tokenizer (CaseOps with its byte sidecar by default,
plain with --plain), and skips a matching re-run."""

import json
import os

import numpy as np
import pytest

from data.prepare_sample import prepare_sample
from golf.config import GolfError
from golf.data import load_val_byte_sidecar, read_shard, shard_paths
from golf.tokenizer import SP_BOS_ID, load_tokenizer, tokenizer_transform


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    return out, prepare_sample(str(out), vocab_size=1024)


@pytest.fixture(scope="module")
def built_plain(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample_plain")
    return out, prepare_sample(str(out), vocab_size=1024, transform="plain")


def test_builds_caseops_shards_sidecar_tokenizer_and_manifest_by_default(built, built_plain):
    out, result = built
    assert result["skipped"] is False and result["text_transform"] == "caseops"
    assert (result["docs_train"], result["docs_val"]) == (222, 11)
    dataset = out / "datasets" / "sample_sp1024_caseops"
    train, val = read_shard(shard_paths(str(dataset), "train")[0]), read_shard(shard_paths(str(dataset), "val")[0])
    assert (len(train), len(val)) == (result["tokens_train"], result["tokens_val"])
    assert train[0] == SP_BOS_ID and val[0] == SP_BOS_ID
    assert int(np.sum(train == SP_BOS_ID)) == 222 and int(np.sum(val == SP_BOS_ID)) == 11
    sp = load_tokenizer(str(out / "tokenizers" / "sample_1024_bpe_caseops.model"))
    assert sp.vocab_size() == 1024 and int(val.max()) < 1024 and tokenizer_transform(sp) == "caseops"
    # the sidecar counts the original text's bytes: the same as the plain tokenizer's LUT rule on the same docs
    sidecar = load_val_byte_sidecar(str(dataset))
    assert len(sidecar) == len(val) and int(sidecar[0]) == 0 and int(sidecar[1:].sum()) == result["val_bytes"]
    assert result["val_bytes"] == built_plain[1]["val_bytes"]
    assert json.loads((dataset / "manifest.json").read_text())["tokens_val"] == len(val)


def test_plain_builds_shards_tokenizer_and_manifest(built_plain):
    out, result = built_plain
    assert result["skipped"] is False and "text_transform" not in result
    dataset = out / "datasets" / "sample_sp1024"
    val = read_shard(shard_paths(str(dataset), "val")[0])
    assert len(val) == result["tokens_val"] and int(np.sum(val == SP_BOS_ID)) == 11
    assert load_val_byte_sidecar(str(dataset)) is None
    assert tokenizer_transform(load_tokenizer(str(out / "tokenizers" / "sample_1024_bpe.model"))) == "plain"
    # ~10.7 MB of text; val is ~5% of it and its byte count is of the decoded (normalised) text
    assert 400_000 < result["val_bytes"] < 700_000


def test_rerun_skips_and_a_damaged_output_is_rebuilt(built):
    out, first = built
    again = prepare_sample(str(out), vocab_size=1024)
    assert again["skipped"] is True and again["tokens_train"] == first["tokens_train"]
    val_path = out / "datasets" / "sample_sp1024_caseops" / "sample_val_000000.bin"
    good = val_path.read_bytes()
    val_path.write_bytes(good[:-2])
    rebuilt = prepare_sample(str(out), vocab_size=1024)
    assert rebuilt["skipped"] is False
    assert val_path.read_bytes() == good  # deterministic: the same bytes come back


def test_missing_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(GolfError, match="nothing.jsonl.xz: sample corpus not found"):
        prepare_sample(str(tmp_path), vocab_size=1024, corpus=str(tmp_path / "nothing.jsonl.xz"))
    assert os.listdir(tmp_path) == []
