"""tools/bpb_check.py: passes on plain and CaseOps sample data, fails on a tampered sidecar or a lost BOS."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from data.prepare_sample import prepare_sample
from golf.caseops import TITLE
from golf.data import read_shard, sidecar_path, write_shard
from golf.tokenizer import SP_BOS_ID, load_tokenizer
from tools.bpb_check import main


@pytest.fixture(scope="module")
def caseops_data(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("caseops_data")
    manifest = prepare_sample(out_dir=str(out), vocab_size=1024, transform="caseops")
    return {"data_path": str(out / "datasets" / "sample_sp1024_caseops"),
            "tokenizer_path": str(out / "tokenizers" / "sample_1024_bpe_caseops.model"), "manifest": manifest}


def run(capsys, data, tokenizer, *extra):
    rc = main(["--data", data, "--tokenizer", tokenizer, *extra])
    return rc, capsys.readouterr()


def lines(out: str, status: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(status)]


@pytest.mark.parametrize("kind", ["plain", "caseops"])
def test_passes_on_sample_data(kind, sample_data, caseops_data, capsys):
    data = sample_data if kind == "plain" else caseops_data
    rc, out = run(capsys, data["data_path"], data["tokenizer_path"], "--text-source", "sample")
    assert rc == 0, out.out
    assert not lines(out.out, "FAIL")
    rule = "sidecar" if kind == "caseops" else "LUT rule"
    assert any(f"{rule} = decoded bytes, per document" in line for line in lines(out.out, "PASS"))
    assert any("decoded = source documents" in line for line in lines(out.out, "PASS"))


def test_caseops_counts_the_same_bytes_as_plain(sample_data, caseops_data):
    plain = json.loads((Path(sample_data["data_path"]) / "manifest.json").read_text())
    assert caseops_data["manifest"]["val_bytes"] == plain["val_bytes"]
    assert caseops_data["manifest"]["tokens_val"] != plain["tokens_val"]


def copy_data(src: str, dst) -> str:
    shutil.copytree(src, dst)
    return str(dst)


def test_fails_on_a_sidecar_with_one_byte_changed(caseops_data, tmp_path, capsys):
    data = copy_data(caseops_data["data_path"], tmp_path / "d")
    side = sidecar_path(str(tmp_path / "d" / "sample_val_000000.bin"))
    counts = read_shard(side).copy()
    counts[1234] += 1
    write_shard(side, counts)
    rc, out = run(capsys, data, caseops_data["tokenizer_path"])
    assert rc == 1
    failed = lines(out.out, "FAIL")
    assert any("per document" in line and "1 of 11 docs differ" in line for line in failed), out.out
    assert any("total" in line for line in failed)


@pytest.mark.parametrize("kind", ["plain", "caseops"])
def test_fails_on_a_stream_missing_a_bos(kind, sample_data, caseops_data, tmp_path, capsys):
    src = sample_data if kind == "plain" else caseops_data
    data = copy_data(src["data_path"], tmp_path / "d")
    val_path = str(tmp_path / "d" / "sample_val_000000.bin")
    tokens = read_shard(val_path)
    third_doc = int(np.flatnonzero(tokens == SP_BOS_ID)[2])
    write_shard(val_path, np.delete(tokens, third_doc))  # documents 1 and 2 run together
    if kind == "caseops":
        write_shard(sidecar_path(val_path), np.delete(read_shard(sidecar_path(val_path)), third_doc))
    rc, out = run(capsys, data, src["tokenizer_path"], "--text-source", "sample")
    assert rc == 1
    assert any("document count" in line and "10 in the val stream" in line for line in lines(out.out, "FAIL"))
    # ... and a stream whose first BOS is gone: token 0 is never a target, its bytes (if any) are lost
    write_shard(val_path, tokens[1:])
    if kind == "caseops":
        write_shard(sidecar_path(val_path), read_shard(src["data_path"] + "/sample_val_bytes_000000.bin")[1:])
    rc, out = run(capsys, data, src["tokenizer_path"])
    assert rc == 1 and any("stream starts with BOS" in line for line in lines(out.out, "FAIL"))
    if kind == "plain":  # its token 0 is a word; CaseOps's is a 0-byte TITLE operator
        assert any("1 of 11 docs differ" in line for line in lines(out.out, "FAIL"))


def test_bad_input_is_one_line_and_exit_2(caseops_data, tmp_path, capsys):
    data = copy_data(caseops_data["data_path"], tmp_path / "d")
    (tmp_path / "d" / "sample_val_bytes_000000.bin").unlink()
    rc, out = run(capsys, data, caseops_data["tokenizer_path"])
    assert rc == 2 and "no val byte sidecar" in out.err and len(out.err.strip().splitlines()) == 1
    rc, out = run(capsys, data, str(tmp_path / "missing.model"))
    assert rc == 2 and "tokenizer model not found" in out.err


def test_fails_on_a_misplaced_operator(caseops_data, tmp_path, capsys):
    data = copy_data(caseops_data["data_path"], tmp_path / "d")
    val_path = str(tmp_path / "d" / "sample_val_000000.bin")
    tokens = read_shard(val_path).copy()
    sp = load_tokenizer(caseops_data["tokenizer_path"])
    comma = int(np.flatnonzero(tokens == sp.piece_to_id(","))[5])
    tokens[comma] = tokens[comma - 1] = sp.piece_to_id(TITLE)  # TITLE TITLE: no text means this
    write_shard(val_path, tokens)
    rc, out = run(capsys, data, caseops_data["tokenizer_path"])
    assert rc == 1
    assert any("CaseOps operators decode" in line and "1 docs do not" in line for line in lines(out.out, "FAIL"))
