"""The config pieces: every key of the record's log header against golf's recipe; tools/equiv.py --json."""

import json
import subprocess
import sys

import pytest

from golf.equiv import config as equiv_config
from golf.equiv.record import load_record
from golf.equiv.report import deviation_rows
from golf.recipes import DEVIATIONS, RECIPES
from tests.equiv_record import ROOT, needs_record, record_dir

# The header keys of the model, data and training-shape areas (issue 23, equiv-model): equal to the record.
MODEL_DATA_KEYS = ("vocab_size", "model_dim", "num_heads", "num_kv_heads", "mlp_mult", "num_layers", "rope_dims",
                   "rope_base", "rope_yarn", "qk_gain_init", "logit_softcap", "loop_start", "loop_end", "num_loops",
                   "enable_looping_at", "parallel_start_layer", "parallel_final_lane", "skip_gates_enabled",
                   "xsa_last_n", "sparse_attn_gate_enabled", "sparse_attn_gate_init_std", "gate_window",
                   "sparse_attn_gate_scale", "smear_gate_enabled", "ln_scale", "tie_embeddings",
                   "tied_embed_init_std", "attn_out_gate_enabled", "gated_attn_enabled", "train_seq_len",
                   "train_batch_tokens", "grad_accum_steps", "iterations", "warmup_steps")


@pytest.fixture(scope="module")
def record():
    return load_record(record_dir() / "train_gpt.py")


def by_key(pieces):
    return {p.name.removeprefix("config."): p for p in pieces}


@needs_record
def test_every_header_key_has_one_entry_and_a_golf_field_or_a_reason(record):
    pieces = by_key(equiv_config.check(record, RECIPES["pr1855"]))
    assert set(pieces) == set(record.hparams) and len(record.hparams) > 100
    assert [k for k, p in pieces.items() if "no golf field" in p.detail] == []
    assert {k for k, p in pieces.items() if p.status == "n/a"} >= {"rank", "world_size", "logfile", "data_dir",
                                                                    "seed", "run_id"}
    assert all(pieces[k].status == "PASS" for k in MODEL_DATA_KEYS), \
        [(k, pieces[k].detail) for k in MODEL_DATA_KEYS if pieces[k].status != "PASS"]
    for key, piece in pieces.items():
        if piece.status == "DEVIATION":
            assert key in DEVIATIONS and DEVIATIONS[key].reason in piece.reason


@needs_record
def test_an_altered_header_value_fails_that_key_only(record, tmp_path):
    text = (record_dir() / "train_seed42.log").read_text()
    for line, altered in (("  qk_gain_init: 5.0\n", "  qk_gain_init: 5.25\n"),
                          ("  num_loops: 2\n", "  num_loops: 3\n")):
        assert text.count(line) == 1
        text = text.replace(line, altered)
    log = tmp_path / "train_seed42.log"
    log.write_text(text)
    before = {k: p.status for k, p in by_key(equiv_config.check(record, RECIPES["pr1855"])).items()}
    after = {k: p.status for k, p in by_key(equiv_config.check(load_record(record.path, log), RECIPES["pr1855"])).items()}
    assert {k for k in before if before[k] != after[k]} == {"qk_gain_init", "num_loops"}
    assert after["qk_gain_init"] == after["num_loops"] == "FAIL"


@needs_record
def test_an_undeclared_difference_fails_and_a_declared_one_is_a_deviation(record, monkeypatch):
    assert by_key(equiv_config.check(record, RECIPES["pr1855"]))["compressor"].status == "DEVIATION"
    monkeypatch.setattr(equiv_config, "DEVIATIONS", {k: d for k, d in DEVIATIONS.items() if k != "compressor"})
    assert by_key(equiv_config.check(record, RECIPES["pr1855"]))["compressor"].status == "FAIL"


@needs_record
def test_tool_json_lists_pieces_and_config_and_exits_by_their_statuses():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "equiv.py"), str(record_dir() / "train_gpt.py"),
                          "--recipe", "pr1855", "--pieces", "config", "--json"], capture_output=True, text=True,
                         timeout=300)
    result = json.loads(out.stdout)
    assert result["pieces"] == [] and len(result["config"]) > 100
    assert all(set(e) >= {"name", "status", "max_abs", "max_rel", "reason"} for e in result["config"])
    failed = any(e["status"] == "FAIL" for e in result["config"])
    assert out.returncode == (1 if failed else 0)


def test_readme_deviation_table_is_the_deviations_table():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Deviations from the record", 1)[1].split("\n## ", 1)[0]
    listed = [line for line in table.splitlines() if line.startswith("| `")]
    expected = deviation_rows(DEVIATIONS)
    assert listed == expected, "README rows should be:\n" + "\n".join(expected)
    assert all(d.kind in ("lossless", "legality", "neutral") for d in DEVIATIONS.values())


@needs_record
def test_the_default_on_the_1_0611_record_differs_and_the_tool_names_its_recipe():
    # The default is PR #2101's stack; the 1.0611 record's is pr1855, and the tool says so when the default differs.
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "equiv.py"), str(record_dir() / "train_gpt.py"),
                          "--pieces", "config"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("hint: recipe pr1855 leaves 0 config FAIL(s)")
