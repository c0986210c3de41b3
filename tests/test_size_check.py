import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from golf.artifact import encode_artifact, write_artifact
from golf.quant.rtn import quantize_rtn
from tools.size_check import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def shipped(tmp_path):
    g = torch.Generator().manual_seed(0)
    entries = {"w": quantize_rtn(torch.randn(64, 64, generator=g), 6, 12.0), "b": torch.randn(64, generator=g).half()}
    artifact = tmp_path / "final_model.golf"
    write_artifact(artifact, encode_artifact(entries, {"w": "mlp", "b": "scalars"}, {"run": "t"}))
    code = tmp_path / "train_gpt.py"
    code.write_text("print('hello')\n" * 40)
    return artifact, code


def test_json_numbers_are_the_file_sizes(shipped, capsys):
    artifact, code = shipped
    assert main([str(artifact), "--code", str(code), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["artifact_bytes"] == os.path.getsize(artifact) and out["code_bytes"] == os.path.getsize(code)
    assert out["total_bytes"] == os.path.getsize(artifact) + os.path.getsize(code)
    assert out["limit"] == 16_000_000 and out["headroom_bytes"] == 16_000_000 - out["total_bytes"]
    assert sum(g["compressed_bytes"] for g in out["groups"]) == out["artifact_bytes"]
    assert [g["group"] for g in out["groups"]] == ["mlp", "scalars", "(header+checksum)"]


def test_exit_1_over_the_limit_and_0_at_it(shipped, capsys):
    artifact, code = shipped
    total = os.path.getsize(artifact) + os.path.getsize(code)
    assert main([str(artifact), "--code", str(code), "--limit", str(total)]) == 0
    assert main([str(artifact), "--code", str(code), "--limit", str(total - 1)]) == 1
    assert "OVER LIMIT" in capsys.readouterr().out


def test_exit_2_on_corrupt_artifact_or_missing_code(shipped, tmp_path, capsys):
    artifact, code = shipped
    corrupt = tmp_path / "corrupt.golf"
    blob = bytearray(artifact.read_bytes())
    blob[len(blob) // 2] ^= 1
    corrupt.write_bytes(bytes(blob))
    assert main([str(corrupt), "--code", str(code)]) == 2
    err = capsys.readouterr().err
    assert "corrupt.golf: checksum mismatch" in err and err.count("\n") == 1
    assert main([str(artifact), "--code", str(tmp_path / "nope.py")]) == 2
    assert "nope.py: cannot read" in capsys.readouterr().err
    assert main([str(tmp_path / "absent.golf")]) == 2


def test_script_runs_from_anywhere_without_traceback(shipped, tmp_path):
    artifact, code = shipped
    (tmp_path / "junk.golf").write_bytes(b"GOLF\x01")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "size_check.py"), "junk.golf"],
                          cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 2
    assert proc.stderr.strip() == "size_check: junk.golf: truncated (5 bytes; an artifact has at least 44)"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "size_check.py"), str(artifact), "--code", str(code)],
                          cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0 and "headroom" in proc.stdout


def test_table_shows_each_groups_parts_and_they_sum_to_the_group(shipped, capsys):
    artifact, code = shipped
    assert main([str(artifact), "--json"]) == 0
    groups = {g["group"]: g for g in json.loads(capsys.readouterr().out)["groups"]}
    assert set(groups["mlp"]["parts"]) == {"q", "scale"} and set(groups["scalars"]["parts"]) == {"data"}
    for g in ("mlp", "scalars"):
        assert sum(groups[g]["parts"].values()) == groups[g]["compressed_bytes"]
    assert main([str(artifact)]) == 0
    lines = capsys.readouterr().out.splitlines()
    q_line = next(line for line in lines if line.strip().startswith("mlp/q"))
    assert q_line.split()[1] == f"{groups['mlp']['parts']['q']:,}"
    # Each part names its codec; the context coder also says what its encoder chose (plain, or its grid).
    assert groups["mlp"]["codecs"]["scale"] == "brotli" and q_line.endswith(groups["mlp"]["codecs"]["q"])
    assert groups["mlp"]["codecs"]["q"] in ("ctx plain",) or groups["mlp"]["codecs"]["q"].startswith("ctx contexts ")
