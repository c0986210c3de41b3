import dataclasses
import re
import time

import torch

from golf.budget import WallclockBudget
from tests.test_model import TINY


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
