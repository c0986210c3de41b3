"""The equiv harness (golf/equiv/record.py, report.py, tools/equiv.py) and the model pieces against the record."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from golf.config import GolfError
from golf.equiv import model as equiv_model
from golf.equiv.record import flash_attn_varlen_func, load_record, read_header
from golf.equiv.report import compare
from golf.recipes import DEVIATIONS, RECIPES, Deviation
from tests.equiv_record import ROOT, altered_copy, needs_record, record_dir, one_thread  # noqa: F401 (autouse: one intra-op thread)

RECORD_ROPE = "x_rope = torch.cat((x1 * cos + x2 * sin, x1 * -sin + x2 * cos), dim=-1)"



@pytest.fixture(scope="module")
def record():
    return load_record(record_dir() / "train_gpt.py")


def statuses(pieces):
    return {p.name: p.status for p in pieces}


def test_varlen_stand_in_equals_attention_per_segment():
    """The FA3 stand-in against its obvious twin: each cu_seqlens segment attended alone, causal, GQA."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(20, h, 8, generator=g) for h in (4, 2, 2))
    cu = torch.tensor([0, 6, 7, 15, 20, 20, 20], dtype=torch.int32)  # padded like the record's buckets
    out = flash_attn_varlen_func(q, k, v, cu, cu, 8, 8, causal=True)
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        if a == b:
            continue
        qs, ks, vs = (t[a:b].transpose(0, 1) for t in (q, k, v))
        ref = F.scaled_dot_product_attention(qs, ks.repeat_interleave(2, 0), vs.repeat_interleave(2, 0),
                                             is_causal=True).transpose(0, 1)
        torch.testing.assert_close(out[a:b], ref)


def test_compare_declares_pass_fail_and_deviation():
    dev = Deviation(record="1", golf="2", kind="neutral", reason="why")
    assert compare("x", torch.ones(3), torch.ones(3), 0, 0).status == "PASS"
    off = compare("x", torch.tensor([1.0, 2.5]), torch.tensor([1.0, 2.0]), 0.1, 0.1)
    assert (off.status, off.max_abs, off.max_rel) == ("FAIL", 0.5, 0.25)
    declared = compare("x", torch.tensor([1.0, 2.5]), torch.tensor([1.0, 2.0]), 0.1, 0.1, dev)
    assert declared.status == "DEVIATION" and "why" in declared.reason
    assert compare("x", torch.ones(2), torch.ones(3), 1, 1).status == "FAIL"  # shapes


@needs_record
def test_load_record_sets_the_header_env_and_restores_the_process(record):
    before = (dict(os.environ), torch.compile, "flash_attn_interface" in sys.modules)
    rec = load_record(record_dir() / "train_gpt.py")
    assert (dict(os.environ), torch.compile, "flash_attn_interface" in sys.modules) == before
    h = rec.module.Hyperparameters()
    runtime = {"distributed", "rank", "world_size", "local_rank", "is_main_process", "grad_accum_steps"}
    differ = {k for k, v in rec.hparams.items() if str(getattr(h, k)) != v}
    assert differ <= runtime, differ  # every recipe value of the header reproduced through the env
    assert rec.hparams["qk_gain_init"] == "5.0" and rec.module.BOS_ID == 1


@needs_record
def test_bad_input_is_one_error_line_and_exit_2(tmp_path):
    rec_dir = record_dir()
    with pytest.raises(GolfError, match="cannot read"):
        load_record(tmp_path / "missing.py")
    (tmp_path / "notes.log").write_text("no header here\n")
    with pytest.raises(GolfError, match="no 'Hyperparameters:' header"):
        read_header(tmp_path / "notes.log")
    (tmp_path / "other.py").write_text("def main():\n    pass\n")
    with pytest.raises(GolfError, match="not a record's train_gpt.py"):
        load_record(tmp_path / "other.py", rec_dir / "train_seed42.log")
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "equiv.py"), str(rec_dir / "train_gpt.py"),
                          "--log", str(tmp_path / "notes.log")], capture_output=True, text=True)
    assert out.returncode == 2 and out.stdout == "" and len(out.stderr.strip().splitlines()) == 1
    assert "notes.log" in out.stderr


@needs_record
def test_model_pieces_pass_on_the_record(record):
    pieces = equiv_model.check(record, RECIPES["pr1855"])
    assert [p.name for p in pieces if p.status not in ("PASS", "DEVIATION")] == []
    st = statuses(pieces)
    assert st["model.param_count"] == "DEVIATION" and "model.param_count" in DEVIATIONS
    assert all(st[n] == "PASS" for n in ("model.logits.loop_off", "model.logits.loop_on", "model.train_loss",
                                         "model.grads", "model.doc_isolation", "model.doc_isolation.cut"))


@needs_record
def test_record_rotating_by_plus_theta_fails_the_model_pieces(tmp_path):
    """golf's RoPE before issue 23: the record altered to rotate like it fails the logits, loss and grads."""
    path = altered_copy(tmp_path, RECORD_ROPE,
                        "x_rope = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)")
    st = statuses(equiv_model.check(load_record(path, record_dir() / "train_seed42.log"), RECIPES["pr1855"]))
    assert st["model.logits.loop_off"] == st["model.logits.loop_on"] == st["model.train_loss"] == "FAIL"
    assert st["model.grads"] == st["model.doc_isolation"] == "FAIL"
    assert st["model.param_count"] == "DEVIATION"  # the count does not see the rotation


@needs_record
def test_record_without_bos_fix_fails_only_doc_pieces(tmp_path):
    """The smear gate reading across BOS (the record's bug before its fix) shows where documents meet."""
    # _forward_hidden's smear (the training and eval path; forward_ttt's copy ends in "else list(range(")
    old = ("x[:, 1:] + g * x[:, :-1] * not_bos], dim=1)\n        x = F.rms_norm(x, (x.size(-1),))\n"
           "        x0 = x\n        skips = []\n        enc_iter = (\n            self.encoder_indices\n"
           "            if self.looping_active\n            else range(")
    path = altered_copy(tmp_path, old, old.replace("* not_bos", "* 1.0"))
    st = statuses(equiv_model.check(load_record(path, record_dir() / "train_seed42.log"), RECIPES["pr1855"]))
    assert st["model.logits.loop_off"] == st["model.logits.loop_on"] == "PASS"  # one document: BOS only at 0
    assert st["model.doc_isolation"] == st["model.train_loss"] == "FAIL"


def test_golf_rope_rotates_by_minus_theta():
    """(a, b) -> (a cos + b sin, b cos - a sin): the record's apply_rotary_emb direction (R:929-938)."""
    from golf.model.attention import apply_partial_rope, rope_tables

    cos, sin = rope_tables(3, 2, 10000.0)  # angle of position t: t radians
    x = torch.tensor([1.0, 0.0, 5.0]).expand(1, 1, 3, 3)  # (B, H, T, D): a=1, b=0, one pass-through dim
    y = apply_partial_rope(x, cos, sin)[0, 0]
    t = torch.arange(3.0)
    torch.testing.assert_close(y, torch.stack((t.cos(), -t.sin(), torch.full((3,), 5.0)), dim=1))


@pytest.mark.slow
@needs_record
def test_tool_runs_my_families_and_prints_one_line_per_piece():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "equiv.py"), str(record_dir() / "train_gpt.py"),
                          "--recipe", "pr1855", "--pieces", "model", "data"], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert all(line.split()[0] in ("PASS", "DEVIATION") for line in lines[:-1]) and lines[-1].startswith("OK:")
    assert any(line.split()[1] == "data.cu_seqlens" for line in lines)
