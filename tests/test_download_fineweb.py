"""data/download_fineweb.py against a local mirror laid out like the hub repo (never the network)."""

import json
import os
import shutil
import subprocess
import sys

import huggingface_hub
import numpy as np
import pytest

from data.download_fineweb import download_fineweb, hub_fetcher
from golf.config import GolfError
from golf.data import read_shard, write_shard

DATASET = "datasets/fineweb10B_sp1024"  # under the repo's "datasets" root


@pytest.fixture
def mirror(tmp_path, sample_tokenizer):
    """A repo tree for sp1024: manifest, 2 val shards, 3 train shards, tokenizer .model/.vocab."""
    root = tmp_path / "mirror" / "datasets"
    (root / DATASET).mkdir(parents=True)
    (root / "tokenizers").mkdir()
    for i in range(2):
        write_shard(str(root / DATASET / f"fineweb_val_{i:06d}.bin"), np.arange(100) + i)
    for i in range(3):
        write_shard(str(root / DATASET / f"fineweb_train_{i:06d}.bin"), np.arange(200) + 10 * i)
    shutil.copyfile(sample_tokenizer, root / "tokenizers" / "fineweb_1024_bpe.model")
    (root / "tokenizers" / "fineweb_1024_bpe.vocab").write_text("<pad>\t0\n")
    manifest = {
        "datasets": [
            {"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024", "stats": {"files_train": 3, "files_val": 2}}
        ],
        "tokenizers": [
            {
                "name": "sp_bpe_1024",
                "model_path": "tokenizers/fineweb_1024_bpe.model",
                "vocab_path": "tokenizers/fineweb_1024_bpe.vocab",
            }
        ],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path / "mirror"


def local_files(directory):
    return sorted(os.path.relpath(os.path.join(d, f), directory) for d, _, files in os.walk(directory) for f in files)


def test_download_from_mirror_gives_verified_files_and_a_rerun_skips(tmp_path, mirror):
    out = tmp_path / "data"
    result = download_fineweb("sp1024", 2, str(out), mirror=str(mirror))
    assert local_files(out) == [
        "datasets/fineweb10B_sp1024/fineweb_train_000000.bin",
        "datasets/fineweb10B_sp1024/fineweb_train_000001.bin",
        "datasets/fineweb10B_sp1024/fineweb_val_000000.bin",
        "datasets/fineweb10B_sp1024/fineweb_val_000001.bin",
        "datasets/fineweb10B_sp1024/manifest.json",
        "tokenizers/fineweb_1024_bpe.model",
        "tokenizers/fineweb_1024_bpe.vocab",
    ]
    assert len(result["fetched"]) == 7 and result["skipped"] == []
    assert read_shard(str(out / DATASET / "fineweb_train_000001.bin")).tolist() == list(range(10, 210))
    again = download_fineweb("sp1024", 2, str(out), mirror=str(mirror))
    assert again["fetched"] == [] and len(again["skipped"]) == 7


def test_without_manifest_one_val_shard_and_default_tokenizer_names(tmp_path, mirror):
    os.unlink(mirror / "datasets" / "manifest.json")
    out = tmp_path / "data"
    download_fineweb("sp1024", 1, str(out), mirror=str(mirror))
    assert "datasets/fineweb10B_sp1024/fineweb_val_000001.bin" not in local_files(out)
    assert "tokenizers/fineweb_1024_bpe.model" in local_files(out)


@pytest.mark.parametrize("size", [0, 1024 + 2 * 50])
def test_empty_or_truncated_file_in_the_mirror_is_rejected(tmp_path, mirror, size):
    bad = mirror / "datasets" / DATASET / "fineweb_train_000001.bin"
    data = bad.read_bytes()
    bad.write_bytes(data[:size])
    out = tmp_path / "data"
    with pytest.raises(GolfError, match="fineweb_train_000001.bin: rejected, nothing kept") as err:
        download_fineweb("sp1024", 2, str(out), mirror=str(mirror))
    assert ("empty file" if size == 0 else "truncated shard") in str(err.value)
    files = local_files(out)
    assert "datasets/fineweb10B_sp1024/fineweb_train_000000.bin" in files
    assert not any("train_000001" in f for f in files)  # neither the file nor its .part


def test_a_failed_fetch_leaves_nothing_behind_and_a_bad_local_file_is_replaced(tmp_path, mirror, monkeypatch):
    out = tmp_path / "data"
    target = out / DATASET / "fineweb_val_000000.bin"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"\0" * 2000)  # a damaged earlier download
    real_copy = shutil.copyfile

    def copy_then_fail(src, dst):
        if src.endswith("fineweb_val_000000.bin"):
            open(dst, "wb").write(b"partial")
            raise ConnectionError("connection reset")
        return real_copy(src, dst)

    monkeypatch.setattr(shutil, "copyfile", copy_then_fail)
    with pytest.raises(ConnectionError):
        download_fineweb("sp1024", 0, str(out), mirror=str(mirror))
    assert not (out / DATASET / "fineweb_val_000000.bin.part").exists()
    assert target.read_bytes() == b"\0" * 2000  # the old file was not replaced by the failed fetch
    monkeypatch.setattr(shutil, "copyfile", real_copy)
    result = download_fineweb("sp1024", 0, str(out), mirror=str(mirror))
    assert str(target) in result["fetched"]
    assert read_shard(str(target)).tolist() == list(range(100))


def test_missing_file_and_too_many_shards_are_clear_errors(tmp_path, mirror):
    with pytest.raises(GolfError, match="has 3 train shards, asked for 4"):
        download_fineweb("sp1024", 4, str(tmp_path / "a"), mirror=str(mirror))
    os.unlink(mirror / "datasets" / "tokenizers" / "fineweb_1024_bpe.model")
    with pytest.raises(GolfError, match="has no tokenizers/fineweb_1024_bpe.model"):
        download_fineweb("sp1024", 1, str(tmp_path / "b"), mirror=str(mirror))
    with pytest.raises(GolfError, match="expected sp<vocab>"):
        download_fineweb("byte260", 1, str(tmp_path / "c"), mirror=str(mirror))


def test_wrong_vocab_tokenizer_is_rejected(tmp_path, mirror):
    # the sp1024 tree served as sp2048: the tokenizer has 1024 pieces, not 2048
    shutil.copytree(mirror / "datasets" / DATASET, mirror / "datasets" / "datasets" / "fineweb10B_sp2048")
    os.unlink(mirror / "datasets" / "manifest.json")
    tokenizers = mirror / "datasets" / "tokenizers"
    shutil.copyfile(tokenizers / "fineweb_1024_bpe.model", tokenizers / "fineweb_2048_bpe.model")
    with pytest.raises(GolfError, match="tokenizer has 1024 pieces, expected 2048"):
        download_fineweb("sp2048", 1, str(tmp_path / "data"), mirror=str(mirror))


def test_hub_fetch_asks_the_dataset_repo_for_the_repo_path(tmp_path, monkeypatch):
    blob = tmp_path / "blob"
    blob.write_bytes(b"shard bytes")
    calls = []

    def fake_download(**kwargs):
        calls.append(kwargs)
        return str(blob)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    hub_fetcher("kevclark/parameter-golf")("datasets/datasets/x.bin", str(tmp_path / "x.bin"))
    assert calls == [dict(repo_id="kevclark/parameter-golf", filename="datasets/datasets/x.bin", repo_type="dataset")]
    assert (tmp_path / "x.bin").read_bytes() == b"shard bytes"


def test_command_line_reports_errors_in_one_line(tmp_path, mirror):
    script = os.path.join(os.path.dirname(__file__), "..", "data", "download_fineweb.py")
    args = [sys.executable, script, "--variant", "sp1024", "--mirror", str(mirror), "--local-dir", str(tmp_path / "d")]
    ok = subprocess.run(args + ["--train-shards", "1"], capture_output=True, text=True)
    assert ok.returncode == 0 and "fetched 6 files" in ok.stdout
    bad = subprocess.run(args + ["--train-shards", "9"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "error: " in bad.stderr and "asked for 9" in bad.stderr


def test_with_docs_fetches_the_raw_document_stream(tmp_path, mirror):
    docs = mirror / "datasets" / "docs_selected.jsonl"
    docs.write_text("".join(json.dumps({"text": f"document {i}"}) + "\n" for i in range(3)))
    (mirror / "datasets" / "docs_selected.source_manifest.json").write_text(json.dumps({"docs_val": 1}))
    out = tmp_path / "data"
    result = download_fineweb("sp1024", 0, str(out), mirror=str(mirror), with_docs=True)
    assert (out / "docs_selected.jsonl").read_bytes() == docs.read_bytes()
    assert str(out / "docs_selected.source_manifest.json") in result["fetched"]
    docs.write_text(json.dumps({"text": "cut"}) + "\n" + '{"text": "trunc')  # an interrupted upload
    os.unlink(out / "docs_selected.jsonl")
    with pytest.raises(GolfError, match="last line is incomplete"):
        download_fineweb("sp1024", 0, str(out), mirror=str(mirror), with_docs=True)
    assert not (out / "docs_selected.jsonl").exists()


CASEOPS = "sp1024_lossless_caps_caseops_v1_reserved"  # the record's variant name at the test tokenizer's vocab


@pytest.fixture
def caseops_mirror(tmp_path, sample_tokenizer):
    """A repo tree like romeerp/parameter-golf-caseops-v1's: val shards with byte sidecars, train shards, tokenizer."""
    root = tmp_path / "caseops_mirror" / "datasets"
    dataset = root / "datasets" / f"fineweb10B_{CASEOPS}"
    dataset.mkdir(parents=True)
    (root / "tokenizers").mkdir()
    for i in range(2):
        write_shard(str(dataset / f"fineweb_val_{i:06d}.bin"), np.arange(100) + i)
        write_shard(str(dataset / f"fineweb_val_bytes_{i:06d}.bin"), np.full(100, 3 + i))
    write_shard(str(dataset / "fineweb_train_000000.bin"), np.arange(200))
    shutil.copyfile(sample_tokenizer, root / "tokenizers" / f"fineweb_1024_bpe_{CASEOPS[7:]}.model")
    (root / "tokenizers" / f"fineweb_1024_bpe_{CASEOPS[7:]}.vocab").write_text("<pad>\t0\n")
    manifest = {
        "datasets": [{"name": f"fineweb10B_{CASEOPS}", "tokenizer_name": "caseops", "stats": {"files_train": 1, "files_val": 2},
                      "val_bytes_glob": f"datasets/fineweb10B_{CASEOPS}/fineweb_val_bytes_*.bin"}],
        "tokenizers": [{"name": "caseops", "model_path": f"tokenizers/fineweb_1024_bpe_{CASEOPS[7:]}.model"}],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path / "caseops_mirror"


def test_caseops_is_the_default_variant_from_its_authors_repo():
    from data.download_fineweb import CASEOPS_VARIANT, fineweb_repo_id

    assert CASEOPS_VARIANT == "sp8192_lossless_caps_caseops_v1_reserved"
    assert download_fineweb.__defaults__[0] == CASEOPS_VARIANT
    assert fineweb_repo_id(CASEOPS_VARIANT) == "romeerp/parameter-golf-caseops-v1"


@pytest.mark.parametrize("with_manifest", [True, False])
def test_caseops_variant_fetches_the_val_byte_sidecars(tmp_path, caseops_mirror, with_manifest):
    if not with_manifest:
        os.unlink(caseops_mirror / "datasets" / "manifest.json")
    out = tmp_path / "data"
    download_fineweb(CASEOPS, 1, str(out), mirror=str(caseops_mirror))
    dataset = out / "datasets" / f"fineweb10B_{CASEOPS}"
    val_shards = 2 if with_manifest else 1  # without a manifest: one val shard is assumed
    for i in range(val_shards):
        assert read_shard(str(dataset / f"fineweb_val_bytes_{i:06d}.bin")).tolist() == [3 + i] * 100
    assert not (dataset / f"fineweb_val_bytes_{val_shards:06d}.bin").exists()
    assert (out / "tokenizers" / f"fineweb_1024_bpe_{CASEOPS[7:]}.model").exists()
    from golf.data import load_val_byte_sidecar

    assert load_val_byte_sidecar(str(dataset)).tolist() == sum(([3 + i] * 100 for i in range(val_shards)), [])
