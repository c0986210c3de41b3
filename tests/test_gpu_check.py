"""tools/gpu_check.py: the CPU dry run runs every part's code path; parts fail alone and are reported."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu_check.py"


def gpu_check(*args, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=900)


@pytest.mark.slow
def test_dry_run_passes_every_part_and_writes_figures(tmp_path):
    proc = gpu_check("--dry-run", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    from tools.gpu_check import PARTS

    assert list(report["parts"]) == list(PARTS)
    assert all(r["ok"] for r in report["parts"].values())
    parts = {name: r["figures"] for name, r in report["parts"].items()}
    assert parts["step"]["ms"] > 0 and parts["step"]["projected_steps_8xh100"] > 0
    assert parts["reserve"]["artifact_bytes"] > 0 and parts["reserve"]["calibration_s"] > 0
    assert parts["eval"]["projected_eval_s_8xh100"] > 0
    assert 1.0 < float(parts["torchrun"]["roundtrip_bpb"]) < 20 and parts["torchrun"]["artifact_written"]
    assert all(k["max_abs_err"] < 1e-3 for k in parts["kernels"].values())
    assert parts["versions"]["fa3_available"] is False  # no CUDA here
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    assert len(summary) == 1 + len(PARTS) and all(line.startswith("PASS") for line in summary[1:])


def test_a_failing_part_is_reported_and_the_next_one_still_runs(tmp_path):
    # pytest rejects the unknown option, so kernel_tests fails; versions must still run and pass.
    proc = gpu_check("--dry-run", "--out", str(tmp_path), "--parts", "kernel_tests,versions",
                     env={"PYTEST_ADDOPTS": "--no-such-option"})
    assert proc.returncode == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["parts"]["kernel_tests"]["ok"] is False and "pytest exited" in report["parts"]["kernel_tests"]["error"]
    assert report["parts"]["versions"]["ok"] is True
    assert report["passed"] is False


def test_a_spent_budget_skips_the_rest_and_says_so(tmp_path):
    proc = gpu_check("--dry-run", "--out", str(tmp_path), "--parts", "step,eval", "--budget", "1")
    assert proc.returncode == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert all("budget is spent" in r["error"] for r in report["parts"].values())
    assert "FAIL step" in (tmp_path / "summary.txt").read_text()


def test_unknown_part_is_one_line_and_exit_2(tmp_path):
    proc = gpu_check("--dry-run", "--out", str(tmp_path), "--parts", "versions,warp_drive")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["gpu_check: --parts: unknown part warp_drive (choices: "
                                                "versions, step, reserve, eval, torchrun, attention, kernels, kernel_tests)"]
