"""golf/equiv/pr2101.py: PR #2101's pieces PASS against its own code with recipe pr2101, and a copy of #2101 with one
piece altered FAILs that piece. Skips when the upstream folders are absent."""

import shutil
from pathlib import Path

import pytest

from golf.equiv import pr2101
from golf.equiv.record import load_record
from golf.recipes import PR2101, RECIPES, RECORD
from golf.size_predict import record_dir

# The folder holding both records (the 1.0611 record's, found as golf.size_predict.record_dir finds it).
UPSTREAM = record_dir().parent if record_dir() is not None else Path("/nonexistent")
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


def test_another_local_lr_mult_or_qk_gain_in_its_log_fails_those_pieces(tmp_path):
    # TTT_LOCAL_LR_MULT and QK_GAIN_INIT reach #2101's run through its env, which its log header records (#2117
    # found 0.85 worse): a run with other values fails the piece that holds each, and nothing else.
    from golf.equiv import config as equiv_config

    needs(FOLDER)
    text = (FOLDER / "train_seed42.log").read_text()
    for line, changed in (("  ttt_local_lr_mult: 0.75\n", "  ttt_local_lr_mult: 0.85\n"),
                          ("  qk_gain_init: 5.25\n", "  qk_gain_init: 5.0\n")):
        assert text.count(line) == 1, line
        text = text.replace(line, changed)
    (tmp_path / "train_seed42.log").write_text(text)
    rec = load_record(FOLDER / "train_gpt.py", tmp_path / "train_seed42.log")
    pair = pr2101.model_pair(rec, CFG, pr2101.SEQ, pr2101.SEQ)
    got = statuses(pr2101.ttt_pieces(rec, CFG, pair))
    assert got == {"pr2101.ttt.mask": "PASS", "pr2101.ttt.local_lr": "FAIL"}
    config = statuses(equiv_config.check(rec, CFG))
    assert config["config.qk_gain_init"] == config["config.ttt_lora_lr"] == "FAIL"
    assert statuses(equiv_config.check(load_record(FOLDER / "train_gpt.py"), CFG))["config.qk_gain_init"] == "PASS"
