"""golf/equiv/optim.py against the 1.0611 record, and against copies of it altered one piece at a time."""

import shutil

import pytest
import torch

from golf.equiv.record import load_record
from golf.recipes import RECIPES
from tests.equiv_record import altered_copy, needs_record, record_dir, one_thread  # noqa: F401 (autouse: one intra-op thread)

pytestmark = needs_record



@pytest.fixture(scope="module")
def rec():
    return load_record(record_dir() / "train_gpt.py")


def altered(tmp_path, old: str, new: str):
    """A copy of the record with `old` replaced once by `new`, its log beside it, loaded."""
    path = altered_copy(tmp_path, old, new)
    shutil.copyfile(record_dir() / "train_seed42.log", tmp_path / "train_seed42.log")
    return load_record(path)


def status(pieces, name):
    return next(p for p in pieces if p.name == name).status


def test_schedules_momentum_and_ema_equal_the_records(rec):
    from golf.equiv.optim import ema_piece, momentum_piece, schedule_pieces

    pieces = schedule_pieces(rec, RECIPES["pr1855"])
    assert status(pieces, "optim.lr_schedule.progress") == "PASS"
    wallclock = next(p for p in pieces if p.name == "optim.lr_schedule.wallclock")
    # 592 s against the record's 599.5 s, the declared legality deviation; with its reserve golf's clock is equal
    assert wallclock.status == "DEVIATION" and "legality" in wallclock.reason
    assert float(wallclock.detail.split("max diff ")[1].split()[0]) < 1e-12
    assert momentum_piece(rec, RECIPES["pr1855"]).status == "PASS"
    assert ema_piece(rec, RECIPES["pr1855"]).status == "PASS"


def test_an_altered_lr_floor_and_momentum_ramp_fail(rec, tmp_path):
    from golf.equiv.optim import momentum_piece, schedule_pieces

    floor = altered(tmp_path, "return max((1.0 - frac) / h.warmdown_frac, h.min_lr)",
                    "return max((1.0 - frac) / h.warmdown_frac, h.min_lr * 0.5)")
    assert status(schedule_pieces(floor, RECIPES["pr1855"]), "optim.lr_schedule.progress") == "FAIL"
    ramp = altered(tmp_path, ") * h.muon_momentum_warmup_start + frac * h.muon_momentum",
                   ") * h.muon_momentum_warmup_start * 0.99 + frac * h.muon_momentum")
    assert momentum_piece(ramp, RECIPES["pr1855"]).status == "FAIL"


def test_an_altered_ema_fails(tmp_path):
    from golf.equiv.optim import ema_piece

    ema = altered(tmp_path, "ema_t.mul_(ema_decay).add_(t.detach(), alpha=1.0 - ema_decay)",
                  "ema_t.lerp_(t.detach().float(), 1.0 - ema_decay)")
    assert ema_piece(ema, RECIPES["pr1855"]).status == "FAIL"  # same math, another rounding: bit-exact is asked


@pytest.mark.slow
def test_steps_equal_the_records_and_the_prior_and_an_altered_eps_differ(rec, tmp_path):
    from golf.equiv.optim import step_pieces

    pieces = step_pieces(rec, RECIPES["pr1855"])
    assert [p.status for p in pieces] == ["PASS"] * 3, [p.line() for p in pieces]
    prior = {p.name: p.status for p in step_pieces(rec, RECIPES["prior"])}
    assert prior["optim.muon"] == "FAIL" and prior["optim.adam.embed"] == "FAIL"  # fp32 Muon / embedding, RMS eps
    eps = altered(tmp_path, "rn = update.float().norm(dim=-1, keepdim=True).clamp_min(1e-07)",
                  "rn = update.float().norm(dim=-1, keepdim=True) + 1e-05")
    assert status(step_pieces(eps, RECIPES["pr1855"]), "optim.muon") == "FAIL"


@pytest.mark.slow
def test_ranks_clip_then_average_and_keep_momentum_like_the_record(rec, tmp_path):
    from golf.equiv.optim_ranks import rank_pieces

    assert [p.status for p in rank_pieces(rec, RECIPES["pr1855"])] == ["PASS", "PASS"]
    assert [p.status for p in rank_pieces(rec, RECIPES["prior"])] == ["FAIL", "FAIL"]
    clip = altered(tmp_path, "torch.nn.utils.clip_grad_norm_(_clip_params, h.grad_clip_norm)",
                   "torch.nn.utils.clip_grad_norm_(_clip_params, h.grad_clip_norm * 2)")
    assert status(rank_pieces(clip, RECIPES["pr1855"]), "optim.clip_average") == "FAIL"
