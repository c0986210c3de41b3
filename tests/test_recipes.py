"""The recipes: default is the frontier record's values (each with its source), gpt_j_x0 is golf's old default."""

import dataclasses
import os
import re
import subprocess
from pathlib import Path

import pytest

from golf.config import Config
from golf.recipes import FRONTIER_SOURCES, GPT_J_X0, PR2101_SOURCES, RECIPES, RECORD

UPSTREAM = Path(os.environ.get("GOLF_UPSTREAM", "/work/upstream"))
MIRROR = Path("/work/.mirror/openai+parameter-golf/repo")


def record_log_header() -> dict[str, str] | None:
    """`key: value` lines of the record's train_seed42.log header, from GOLF_UPSTREAM (a checkout) or the mirror."""
    path = UPSTREAM / RECORD / "train_seed42.log"
    if path.is_file():
        text = path.read_text()
    elif MIRROR.is_dir():
        out = subprocess.run(["git", "-C", str(MIRROR), "show", f"HEAD:{RECORD}/train_seed42.log"],
                             capture_output=True, text=True)
        if out.returncode:
            return None
        text = out.stdout
    else:
        return None
    header = text.split("Hyperparameters:", 1)[1].split("train_shards:", 1)[0]
    return dict(re.findall(r"^  (\w+): (.*)$", header, flags=re.M))


def test_pr1855_holds_every_frontier_value_and_the_default_only_adds_pr2101s():
    cfg = RECIPES["pr1855"]
    assert RECIPES["default"] == Config()
    for name, source in FRONTIER_SOURCES.items():
        assert getattr(cfg, name) == source.value, (name, getattr(cfg, name), source)
        assert source.log_key or source.note, name  # every value says where it comes from
        if name not in PR2101_SOURCES:
            assert getattr(Config(), name) == source.value, name


def test_frontier_values_match_the_record_log():
    header = record_log_header()
    if header is None:
        pytest.skip("no upstream checkout (set GOLF_UPSTREAM) or mirror to read the record's log from")
    checked = 0
    for name, source in FRONTIER_SOURCES.items():
        if source.log_key is None:
            continue
        logged = header[source.log_key]
        expected = source.log_value if source.log_value is not None else str(source.value)
        assert logged == expected, (name, source.log_key, logged, expected)
        checked += 1
    assert checked >= 40


def test_gpt_j_x0_is_the_old_default_and_baseline_its_shape_variant():
    old = dict(qk_gain_init=5.25, block="parallel", lane_layers=4, warmdown_frac=0.5, matrix_lr=0.04, embed_lr=0.05,
               scalar_lr=0.04, muon_momentum=0.95, muon_wd=0.09, orthogonalizer="newton_schulz", adam_beta1=0.8,
               adam_beta2=0.95)
    for name, value in old.items():
        assert getattr(GPT_J_X0, name) == value, name
    assert not (GPT_J_X0.xsa_last_n or GPT_J_X0.sparse_attn_gate or GPT_J_X0.smear_gate or GPT_J_X0.ln_scale
                or GPT_J_X0.skip_gates or GPT_J_X0.orthogonal_init or GPT_J_X0.doc_attention)
    assert GPT_J_X0.grad_clip_norm == GPT_J_X0.min_lr == GPT_J_X0.embed_wd == GPT_J_X0.scalar_wd == 0.0
    assert GPT_J_X0.muon_momentum_warmup_steps == 0 and GPT_J_X0.lane_keep_init == 1.0 and GPT_J_X0.lane_x0_residual
    baseline = RECIPES["baseline"]
    assert dataclasses.replace(baseline, block="parallel", mlp_activation="leaky_relu2", num_layers=11,
                               mlp_mult=4.0) == GPT_J_X0
