"""The training entry point end to end: bad input fails cleanly; a tiny CPU run round-trips its artifact."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from golf.logparse import parse_run_log

ROOT = Path(__file__).resolve().parents[1]


def run_train(tmp_path, sample_data, script=ROOT / "train_gpt.py", nproc=1, **env):
    """Run a training file with tiny smoke settings; returns (CompletedProcess, log path)."""
    full = dict(os.environ, PRESET="smoke", DATA_PATH=sample_data["data_path"],
                TOKENIZER_PATH=sample_data["tokenizer_path"], VOCAB_SIZE=str(sample_data["vocab_size"]),
                OUT_DIR=str(tmp_path), RUN_ID="t", ITERATIONS="4", MAX_WALLCLOCK_SECONDS="100000",
                QUANT_RESERVE_SECONDS="1000",  # a loaded CI machine must not turn a correctness run into an overrun
                MODEL_DIM="64", NUM_LAYERS="3", TRAIN_BATCH_TOKENS="4096", VAL_MAX_TOKENS="8192",
                PYTHONPATH=str(ROOT))
    full.update(env)
    cmd = [sys.executable, str(script)]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script)]
    proc = subprocess.run(cmd, env=full, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    return proc, tmp_path / "logs" / "t.txt"


@pytest.mark.parametrize("env, needle", [
    ({"TOKENIZER_PATH": "/nonexistent/tok.model"}, "/nonexistent/tok.model"),
    ({"MODEL_DIMS": "64"}, "MODEL_DIM"),
    ({"PRESET": "huge"}, "PRESET"),
    ({"DATA_PATH": "/nonexistent/data"}, "/nonexistent/data"),
    ({"CODEC": "embed=lz4,ctx"}, "CODEC='lz4'"),  # refused before training, not at the write after it
    ({"SYMBOL_LAYOUT": "embd=auto,none"}, "no group 'embd'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, sample_data, env, needle):
    proc, _ = run_train(tmp_path, sample_data, **env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr


def test_corrupt_train_shard_is_named(tmp_path, sample_data):
    data = tmp_path / "data"
    shutil.copytree(sample_data["data_path"], data)
    shard = next(data.glob("*_train_*.bin"))
    shard.write_bytes(shard.read_bytes()[:-7])
    proc, _ = run_train(tmp_path, sample_data, DATA_PATH=str(data))
    assert proc.returncode == 2 and shard.name in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_one_process_run_round_trips_its_artifact(tmp_path, sample_data):
    proc, log_path = run_train(tmp_path, sample_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = parse_run_log(str(log_path))
    assert [s["step"] for s in log.steps] == [1, 4]
    uniform_bpb = 10.0 / (log.get("val_bytes") / log.get("val_tokens"))  # log2(1024) bits per token
    assert log.get("final_roundtrip.val_bpb") < uniform_bpb
    assert abs(log.get("final_roundtrip.val_bpb") - log.get("prequant.val_bpb")) < 0.05
    artifact = tmp_path / "final_model.golf"
    code = ROOT / "train_gpt.py"
    assert log.get("artifact_bytes") == artifact.stat().st_size
    assert log.get("total_bytes") == artifact.stat().st_size + code.stat().st_size


@pytest.mark.slow
def test_two_process_gloo_run_matches_and_stops_together(tmp_path, sample_data):
    proc, log_path = run_train(tmp_path, sample_data, nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = parse_run_log(str(log_path))
    assert log.get("stopped.step") == 4 and log.get("final_roundtrip.val_bpb") > 0
