import dataclasses
import re
import time

import torch

from golf.budget import WallclockBudget, size_violation_line
from golf.ttt import eval_passes
from tests.test_model import TINY
from tools.smoke import budget_summary


def test_plan_names_every_phase_and_both_budgets():
    budget = WallclockBudget(dataclasses.replace(TINY, max_wallclock_seconds=600.0, quant_reserve_seconds=15.0,
                                                 eval_max_seconds=600.0), torch.device("cpu"))
    line = budget.plan_line()
    for part in ("warmup:", "untimed", "train:585.0s", "reserve:15.0s", "of 600.0s", "eval:600.0s"):
        assert part in line, part
    assert budget.train_seconds == 585.0


def test_tick_stops_when_training_time_is_used_and_report_has_planned_vs_actual():
    budget = WallclockBudget(dataclasses.replace(TINY, max_wallclock_seconds=0.25, quant_reserve_seconds=0.05),
                             torch.device("cpu"))
    budget.start("train")
    steps = 0
    while not budget.tick():
        time.sleep(0.02)
        steps += 1
        assert steps < 100
    budget.stop("train")
    # Stops before a step would cross the 0.2 s plan: within one ~0.02 s step of it, never past it.
    assert 0.15 <= budget.train_elapsed < 0.2 and steps >= 5
    assert 0.75 < budget.progress(steps, 10_000) < 1.0
    assert budget.progress(0, 10) == budget.progress(steps, 10_000) and WallclockBudget(TINY, torch.device("cpu")).progress(5, 10) == 0.5
    lines = budget.report_lines()
    assert re.fullmatch(r"budget_actual phase:train planned:0\.2s actual:0\.[12]s", lines[0])
    assert re.fullmatch(r"budget_total train\+reserve:0\.[12]s/0\.2s eval:0\.0s/600\.0s", lines[-1])


def test_violation_lines_name_each_broken_limit():
    budget = WallclockBudget(dataclasses.replace(TINY, max_wallclock_seconds=120.0, quant_reserve_seconds=5.0,
                                                 eval_max_seconds=600.0), torch.device("cpu"))
    budget.actual = {"train": 113.1, "reserve": 7.6, "serialise": 30.0, "eval": 40.0}
    lines = budget.violation_lines()
    assert lines == ["budget_violation phase:reserve actual:7.6s planned:5.0s over:2.6s",
                     "budget_violation train+reserve:120.7s limit:120.0s over:0.7s"]
    budget.actual = {"train": 100.0, "reserve": 4.0, "serialise": 500.0, "diagnostic": 900.0, "eval": 40.0}
    assert budget.violation_lines() == []  # serialise and the diagnostic are counted in neither budget
    assert size_violation_line(15_990_000, 10_000, 16_000_000) is None
    assert size_violation_line(15_990_000, 10_001, 16_000_000).startswith("size_violation total_bytes:16000001 ")


def test_smoke_summary_cannot_say_ok_after_an_overrun():
    # The smoke run of issue 12: reserve 7.6 s of 5.0 s planned, 120.7 s of 120 s in total.
    log = ("budget_actual phase:warmup planned:untimed actual:3.0s\n"
           "budget_actual phase:train planned:115.0s actual:113.1s\n"
           "budget_actual phase:reserve planned:5.0s actual:7.6s\n"
           "budget_total train+reserve:120.7s/120.0s eval:41.0s/600.0s\n")
    lines, overrun = budget_summary(log)
    assert overrun
    assert "phase reserve: 7.6s of planned 5.0s OVER" in lines and "train+reserve: 120.7s of 120s OVER" in lines
    assert not [ln for ln in lines if "reserve" in ln and ln.endswith("OK")]
    fine = log.replace("actual:7.6s", "actual:4.6s").replace("120.7s/120.0s", "117.7s/120.0s")
    assert budget_summary(fine) == (["phase warmup: 3.0s (untimed)", "phase train: 113.1s of planned 115.0s OK",
                                     "phase reserve: 4.6s of planned 5.0s OK", "train+reserve: 117.7s of 120s OK",
                                     "eval: 41.0s of 600s OK"], False)
    assert budget_summary(fine + "budget_violation eval:601.0s limit:600.0s over:1.0s\n")[1]
    assert budget_summary("no budget lines")[1]


def test_eval_passes_declare_the_diagnostic_uncounted_and_ttt_steps():
    cfg = dataclasses.replace(TINY, sw_seq_len=64, sw_stride=32, ttt_enabled=True, ttt_mode="stream",
                              ttt_chunk_tokens=256, ttt_steps=2, eval_context="sliding")
    passes = eval_passes(cfg, [1000], 1)
    assert [(p.name, p.timed) for p in passes] == [("prequant", False), ("roundtrip", True), ("ttt", True)]
    assert passes[2].steps == 2 * 3  # 4 chunks, no update after the last
    assert [p.name for p in eval_passes(dataclasses.replace(cfg, ttt_enabled=False), [1000], 1)] == ["prequant",
                                                                                                   "roundtrip"]
