"""golf/equiv/pr2101.py: PR #2101's pieces PASS against its own code with recipe pr2101, and a copy of #2101 with one
piece altered FAILs that piece. Skips when the upstream folders are absent."""

import shutil
from pathlib import Path

import pytest

from golf.equiv import pr2101
from golf.equiv.record import load_record
from golf.recipes import PR2101, RECIPES, RECORD

UPSTREAM = Path("/work/shared/upstream")
FOLDER = UPSTREAM / Path(PR2101).name
RECORD_FOLDER = UPSTREAM / Path(RECORD).name
CFG = RECIPES["pr2101"]


def needs(folder: Path):
    if not (folder / "train_gpt.py").is_file():
        pytest.skip(f"no upstream folder at {folder}")


def altered(tmp_path: Path, old: str, new: str):
    """#2101's train_gpt.py with one edit (old must occur exactly once), beside its seed-42 log."""
    needs(FOLDER)
    source = (FOLDER / "train_gpt.py").read_text()
    assert source.count(old) == 1, old
    (tmp_path / "train_gpt.py").write_text(source.replace(old, new))
    shutil.copyfile(FOLDER / "train_seed42.log", tmp_path / "train_seed42.log")
    return load_record(tmp_path / "train_gpt.py")


def statuses(pieces) -> dict[str, str]:
    return {p.name: p.status for p in pieces}


def test_a_record_without_the_pieces_gets_none():
    needs(RECORD_FOLDER)
    assert pr2101.check(load_record(RECORD_FOLDER / "train_gpt.py"), CFG) == []


@pytest.mark.slow
def test_every_piece_passes_with_the_recipe_and_pr1855_lacks_them():
    needs(FOLDER)
    rec = load_record(FOLDER / "train_gpt.py")
    got = statuses(pr2101.check(rec, CFG))
    assert len(got) >= 13 and set(got.values()) == {"PASS"}, got
    default = statuses(pr2101.check(rec, RECIPES["pr1855"]))
    for name in ("pr2101.awq.selection", "pr2101.asym.eval_losses", "pr2101.asym.ttt_losses", "pr2101.ttt.mask",
                 "pr2101.ttt.local_lr", "pr2101.context.eval_seq_len", "pr2101.context.eval_losses"):
        assert default[name] == "FAIL", name
    assert default["pr2101.asym.train_loss"] == "PASS"  # the caps never reach the training loss


def test_awq_selecting_the_least_salient_group_fails(tmp_path):
    rec = altered(tmp_path, "awq_cands.sort(key=lambda x: -x[0])", "awq_cands.sort(key=lambda x: x[0])")
    got = statuses(pr2101.awq_pieces(rec, CFG))
    assert got["pr2101.awq.selection"] == "FAIL" and got["pr2101.awq.act_rms"] == "PASS"


def test_awq_groups_on_the_base_step_fail(tmp_path):
    rec = altered(tmp_path, "s_hi = (clip_sigmas * row_std / protect_clip_range)",
                  "s_hi = (clip_sigmas * row_std / clip_range)")
    got = statuses(pr2101.awq_pieces(rec, CFG))
    assert got["pr2101.awq.selection"] == "PASS"
    assert got["pr2101.awq.step.tok_emb.weight"] == got["pr2101.awq.symbols"] == "FAIL"


def test_asym_caps_swapped_fail_eval_and_ttt(tmp_path):
    rec = altered(tmp_path, "torch.where(logits > 0, sp * torch.tanh(logits / sp), sn * torch.tanh(logits / sn))",
                  "torch.where(logits > 0, sn * torch.tanh(logits / sn), sp * torch.tanh(logits / sp))")
    got = statuses(pr2101.asym_pieces(rec, CFG, pr2101.model_pair(rec, CFG, pr2101.SEQ, pr2101.SEQ)))
    assert got == {"pr2101.asym.eval_losses": "FAIL", "pr2101.asym.ttt_losses": "FAIL",
                   "pr2101.asym.train_loss": "PASS"}


def test_v_lora_despite_the_mask_fails(tmp_path):
    rec = altered(tmp_path, "            if v_lora\n", "            if True\n")
    got = statuses(pr2101.ttt_pieces(rec, CFG, pr2101.model_pair(rec, CFG, pr2101.SEQ, pr2101.SEQ)))
    assert got["pr2101.ttt.mask"] == "FAIL" and got["pr2101.ttt.local_lr"] == "PASS"


def test_a_rescaled_long_context_fails(tmp_path):
    rec = altered(tmp_path, "if self.yarn and seq_len > self.train_seq_len:", "if seq_len > self.train_seq_len:")
    got = statuses(pr2101.context_pieces(rec, CFG))
    assert got["pr2101.context.eval_losses"] == "FAIL" and got["pr2101.context.eval_seq_len"] == "PASS"
