"""tools/preflight.py on the shipped file: every check at tiny dims, an oversized recipe, bad input; and the
loud end of a run that overran its reserve (budget_violation line, exit 1)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_train import run_train

ROOT = Path(__file__).resolve().parents[1]
TINY_ENV = {"PRESET": "smoke", "MODEL_DIM": "64", "NUM_LAYERS": "3", "TRAIN_BATCH_TOKENS": "4096"}


def preflight(*args, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("PRESET", "MODEL_DIM")}
    full.update(env)
    return subprocess.run([sys.executable, str(ROOT / "tools" / "preflight.py"), *args], env=full, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_tiny_recipe_passes_every_check_with_figures_and_limits(sample_data):
    proc = preflight("--json", **TINY_ENV, DATA_PATH=sample_data["data_path"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    checks = {c["check"]: c for c in report["checks"]}
    assert report["verdict"] == "PASS"
    for name in ("model", "memory", "size", "train", "reserve", "serialise", "eval", "eval.roundtrip", "eval.ttt"):
        assert name in checks, name
        assert checks[name]["status"] == "PASS" and checks[name]["figure"] and checks[name]["limit"]
    assert "depth_train:" in checks["model"]["detail"] and "effective_params:" in checks["model"]["detail"]
    # The code counted is the shipped file's exact bytes.
    assert f"code {(ROOT / 'train_gpt.py').stat().st_size} " in checks["size"]["detail"]
    assert checks["eval.prequant"]["limit"] == "uncounted"  # the diagnostic pass is not in the eval 600 s
    assert checks["eval.decode"]["limit"] == "timed"  # the artifact's decode is (it runs inside the eval)


def test_oversized_recipe_fails_naming_the_size():
    # Record dims at MODEL_DIM=640: ~1.55x the default's ~15.8 MB, over 16 MB with any codec. RTN, ctx (a codec the
    # default packs), no LQER and rows as they are keep it fast on a CPU.
    proc = preflight("--checks", "size", MODEL_DIM="640", GPTQ_CALIB_BATCHES="0", CODEC="ctx", LQER_TOP_K="0",
                     SYMBOL_LAYOUT="none")
    assert proc.returncode == 1, proc.stderr[-2000:]
    fail = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAIL size:")]
    assert fail and "limit:16000000" in fail[0] and "margin:-" in fail[0]
    assert "failed: size" in proc.stdout


@pytest.mark.parametrize("args, env, needle", [
    (["/nonexistent/train_gpt.py"], {}, "/nonexistent/train_gpt.py: training file not found"),
    (["--checks", "speed"], {}, "unknown check(s) speed"),
    (["--track", "fortnight"], {}, "--track: 'fortnight' names no track (choices: record, non-record, unlimited)"),
    ([], {"MODEL_DIMS": "64"}, "MODEL_DIM"),
    ([str(ROOT / "tools" / "size_check.py")], {}, "not a golf training file"),
])
def test_bad_input_is_one_line_and_exit_2(args, env, needle):
    proc = preflight(*args, **env)
    assert proc.returncode == 2
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_run_over_its_reserve_ends_with_a_violation_line_and_exit_1(tmp_path, sample_data):
    # GPTQ calibration takes far more than 1 ms: the reserve phase overruns its plan.
    proc, log_path = run_train(tmp_path, sample_data, QUANT_RESERVE_SECONDS="0.001", VAL_MAX_TOKENS="2048",
                               ITERATIONS="2", COMPILE_WARMUP_STEPS="0", TTT_ENABLED="0", GPTQ_CALIB_BATCHES="1",
                               SW_STRIDE="256")
    assert proc.returncode == 1, proc.stderr[-3000:]
    log = log_path.read_text()
    violation = [ln for ln in log.splitlines() if ln.startswith("budget_violation phase:reserve")]
    assert violation and "planned:0.0s" in violation[0] and "over:" in violation[0]
    assert (tmp_path / "final_model.golf").is_file()  # the artifact stays on disk
    assert log.splitlines()[-1].startswith("budget_violation")


def test_meta_counts_match_a_real_cpu_run():
    # FLOPs are counted on meta tensors at record dims; at tiny dims the same count on real CPU tensors must agree
    # exactly (the meta count is what a real forward computes).
    import dataclasses

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import golf.train as ns
    from tests.test_model import TINY
    from tools.preflight import train_flops_per_row

    cfg = dataclasses.replace(TINY, train_seq_len=32)
    x = torch.randint(0, cfg.vocab_size, (1, cfg.train_seq_len))

    # CPU SDPA's fused kernel has no FLOP formula: count with attention written out as matmuls on both sides.
    def math_attention(q, k, v, doc_ids=None):
        k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
        scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
        mask = torch.ones(q.shape[2], q.shape[2], dtype=torch.bool, device=q.device).triu(1)
        if doc_ids is not None:  # block-diagonal: a position sees only its own document
            mask = mask | (doc_ids[:, None, :, None] != doc_ids[:, None, None, :])
        return scores.masked_fill(mask, float("-inf")).softmax(-1) @ v

    real = ns.GPT(cfg, math_attention)
    real.set_progress(cfg.iterations, 1.0)
    with FlopCounterMode(display=False) as counter:
        real(x, x).backward()
    assert train_flops_per_row(ns, cfg, math_attention) == counter.get_total_flops() > 0


def test_track_unlimited_reports_a_four_hour_recipe_that_the_record_track_fails(monkeypatch, capsys):
    # In-process (the file loads once per call, no interpreter start): a 4-hour wallclock, and a GPTQ reserve
    # far under its predicted calibration time (a time line that FAILs against the run's own setting).
    from tools.preflight import main as preflight_main

    for k, v in dict(TINY_ENV, MAX_WALLCLOCK_SECONDS="14400", QUANT_RESERVE_SECONDS="0.0001").items():
        monkeypatch.setenv(k, v)
    assert preflight_main(["--checks", "train,reserve"]) == 1  # the record track, by default
    record = capsys.readouterr().out.splitlines()
    assert [ln for ln in record if ln.startswith("FAIL track.train:")] == [
        "FAIL track.train: MAX_WALLCLOCK_SECONDS=14400s limit:600s (record track) margin:-13800s | training + GPTQ "
        "calibration may take at most 600s on the record track (golf/budget.py TRACKS)"]
    assert any(ln.startswith("FAIL reserve:") for ln in record)
    assert preflight_main(["--checks", "train,reserve", "--track", "unlimited"]) == 0
    unlimited = capsys.readouterr().out.splitlines()
    assert "PASS track.train: MAX_WALLCLOCK_SECONDS=14400s limit:none (unlimited track) margin:- | training + GPTQ " \
           "calibration: reported, no limit on this track (golf/budget.py TRACKS)" in unlimited
    reserve = [ln for ln in unlimited if ln.startswith(("FAIL reserve", "WARN reserve"))]
    assert len(reserve) == 1 and reserve[0].startswith("WARN") and "no limit on the unlimited track" in reserve[0]
    assert unlimited[-1].startswith("preflight PASS")
    assert not any(ln.startswith("FAIL") for ln in unlimited)


def test_saved_bytes_count_rows_apart_from_weights_and_keep_less_than_autograd():
    # Activations grow by the same bytes with every row (the weights' share does not); the GPU kernels' stand-ins
    # and compile's recompute keep less than the CPU autograd graph, which saves every op's inputs.
    import dataclasses

    import torch

    import golf.train as ns
    from tests.test_model import TINY
    from tools.preflight import meta_model, saved_bytes, saved_bytes_per_row

    cfg = dataclasses.replace(TINY, train_seq_len=32)
    _, attention_fn = ns.select_attention("cpu", "sdpa")
    two, three, four = (saved_bytes(ns, cfg, attention_fn, rows) for rows in (2, 3, 4))
    assert four - three == three - two > 0
    per_row, weights = saved_bytes_per_row(ns, cfg, attention_fn)
    assert per_row == three - two and weights == 3 * two - 2 * three >= 0
    model = meta_model(ns, cfg, attention_fn, train=True).to(torch.bfloat16)
    x = torch.zeros(1, cfg.train_seq_len, dtype=torch.int64, device="meta")
    every = {}
    with torch.autograd.graph.saved_tensors_hooks(
            lambda t: every.setdefault(id(t), t.numel() * t.element_size()) and t, lambda t: t):
        model(x, x)
    assert saved_bytes(ns, cfg, attention_fn, 1) < sum(every.values())
