import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from audit import best_of_scores, epochs_over_val, main, val_in_training  # noqa: E402

STATIC_CHECKS = (val_in_training, epochs_over_val, best_of_scores)

ILLEGAL = {
    val_in_training: """
def main():
    val_tokens = load_val_tokens(path)
    x = val_tokens[:-1].view(-1, 1024)
    loss = model(x, x)
    loss.backward()
""",
    epochs_over_val: """
def ttt(val_tokens):
    for epoch in range(3):
        for chunk in val_tokens.split(32768):
            score(chunk)
            adapt(chunk)
""",
    best_of_scores: """
def main():
    results = [eval_bpb(model, val, seed=s) for s in range(3)]
    best = min(r.val_bpb for r in results)
""",
}


@pytest.mark.parametrize("check", STATIC_CHECKS, ids=lambda c: c.__name__)
def test_static_check_catches_its_pattern(check):
    assert check(ast.parse(ILLEGAL[check]))
    assert not any(other(ast.parse(ILLEGAL[check])) for other in STATIC_CHECKS if other is not check)


def test_static_checks_pass_on_the_default_recipe():
    # The packed file holds all the code a run reaches (training, quantisation, eval, TTT) in one module.
    tree = ast.parse((ROOT / "train_gpt.py").read_text())
    assert "def score_first_ttt" in ast.unparse(tree) and "def doc_window_plan" in ast.unparse(tree)
    assert not [f for check in STATIC_CHECKS for f in check(tree)]


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
    assert "FAIL" not in proc.stdout and "8/8 PASS" in proc.stdout


LEAKY_WRAPPER = """
import sys
sys.path.insert(0, {root!r})
import golf.ttt
from tests.leaky_ttt import leaky_ttt
golf.ttt.TTT_MODES["stream"] = leaky_ttt  # golf.ttt.final_eval looks it up when called
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
