import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from audit import main  # noqa: E402


def test_missing_file_is_bad_input(tmp_path, capsys):
    assert main([str(tmp_path / "nope.py")]) == 2
    assert "nope.py: training file not found" in capsys.readouterr().err


def audit_run(train_file: Path, work: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "audit.py"), str(train_file), "--quick",
                           "--keep", str(work)], capture_output=True, text=True, cwd=ROOT)


# Both runs need golf.train, which imports the artifact and quant modules (branch quant).
needs_train = pytest.mark.skipif(not (ROOT / "golf" / "artifact.py").exists(),
                                 reason="golf.train needs golf/artifact.py (not merged yet)")


@pytest.mark.slow
@needs_train
def test_audit_passes_on_the_default_recipe(tmp_path):
    proc = audit_run(ROOT / "train_gpt.py", tmp_path / "audit")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout and re.search(r"audit: (\d+)/\1 PASS", proc.stdout), proc.stdout
    assert "PASS  bpb_check: decoded = source documents (normalised), byte for byte" in proc.stdout


LEAKY_WRAPPER = """
import sys
sys.path.insert(0, {root!r})
import golf.ttt
from tests.leaky_ttt import LEAKY
golf.ttt.TTT_MODES["doc"] = LEAKY["update_first"]  # the default TTT_MODE; golf.ttt.final_eval looks it up when called
from golf.train import run
run(__file__)
"""


@pytest.mark.slow
@needs_train
def test_audit_catches_a_ttt_that_learns_before_scoring(tmp_path):
    wrapper = tmp_path / "leaky_train_gpt.py"
    wrapper.write_text(LEAKY_WRAPPER.format(root=str(ROOT)))
    proc = audit_run(wrapper, tmp_path / "audit")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL  perturbation" in proc.stdout
    assert "PASS  coverage" in proc.stdout  # it still scores every target once: only the order is wrong
