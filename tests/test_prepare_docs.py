"""data/prepare_docs.py: a document stream -> tokenizer + shards (+ CaseOps byte sidecar) that bpb_check proves."""

import json

import numpy as np
import pytest

from data.prepare_docs import prepare_docs
from golf.config import GolfError
from golf.data import load_val_byte_sidecar, read_shard, shard_paths
from golf.tokenizer import SP_BOS_ID
from tools.bpb_check import main as bpb_check


@pytest.fixture(scope="module")
def docs_file(tmp_path_factory, sample_docs):
    path = tmp_path_factory.mktemp("docs") / "docs_selected.jsonl"
    texts = [doc[:6000] for doc in sample_docs[-40:]]  # 40 documents: 6 val, 34 train
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path, texts


def test_caseops_docs_become_shards_with_a_sidecar_that_bpb_check_proves(docs_file, tmp_path, capsys):
    path, texts = docs_file
    result = prepare_docs(str(path), str(tmp_path), vocab_size=1024, transform="caseops", val_docs=6,
                          shard_tokens=20_000)
    assert (result["docs_val"], result["docs_train"]) == (6, 34)
    assert result["dataset_dir"].endswith("fineweb10B_sp1024_lossless_caps_caseops_v1_reserved")
    val_shards = shard_paths(result["dataset_dir"], "val")
    assert len(val_shards) == result["files_val"] >= 1 and len(shard_paths(result["dataset_dir"], "train")) > 1
    val = np.concatenate([read_shard(p) for p in val_shards])
    assert int((val == SP_BOS_ID).sum()) == 6 and val[0] == SP_BOS_ID
    assert load_val_byte_sidecar(result["dataset_dir"]).numel() == len(val)
    rc = bpb_check(["--data", result["dataset_dir"], "--tokenizer", result["tokenizer_path"],
                    "--text-source", str(path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "PASS  decoded = source documents (normalised), byte for byte  0 of 6 docs differ" in out


def test_reused_plain_tokenizer_and_train_shard_limit(docs_file, tmp_path, sample_tokenizer):
    path, _ = docs_file
    result = prepare_docs(str(path), str(tmp_path), vocab_size=1024, val_docs=6, tokenizer=sample_tokenizer,
                          train_shards=2, shard_tokens=20_000)
    assert result["files_train"] == 2 and result["tokens_train"] == 40_000
    assert load_val_byte_sidecar(result["dataset_dir"]) is None  # plain data: the LUT rule
    with pytest.raises(GolfError, match="not caseops"):
        prepare_docs(str(path), str(tmp_path / "x"), vocab_size=1024, transform="caseops", val_docs=6,
                     tokenizer=sample_tokenizer)
