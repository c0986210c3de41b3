"""The run-log parser on our own log (written by golf.train's logger) and on upstream's formats."""

import dataclasses
import json
import math

import pytest
import torch

from golf.config import Config
from golf.dist import DistEnv
from golf.logparse import config_differences, parse_run_log
from golf.train import RunLog, log_provenance

# Source that looks like results: the parser must skip it by its logged byte count.
DECOY_SOURCE = '''"""A packed recipe (\u2581 and \u00e9 make bytes != characters)."""
def report(log, step, loss):
    log(f"step:{step}/20 train_loss:{loss:.4f} train_time:0ms step_avg:0.00ms")
# step:7/20 train_loss:0.1234 train_time:70ms step_avg:10.00ms
# final_roundtrip val_loss:0.1 val_bpb:0.0001
========================================================================================
'''


def write_our_log(tmp_path, results: list[str], **cfg_fields):
    cfg = dataclasses.replace(Config(), out_dir=str(tmp_path), run_id="ablation_a", **cfg_fields)
    code = tmp_path / "train_gpt.py"
    code.write_text(DECOY_SOURCE, encoding="utf-8")
    log = RunLog(cfg, DistEnv(0, 1, 0, torch.device("cpu")))
    log_provenance(log, cfg, str(code), [])
    for line in results:
        log(line, console=False)
    return log.path


OUR_RESULTS = [
    "attention_backend:sdpa",
    "model_params:1771536",
    "budget_plan: train:35.0s quant_reserve:5.0s total:40.0s compile_warmup_steps:2 (untimed)",
    "step:1/400 train_loss:9.0124 train_time:31308ms step_avg:31308.18ms",
    "step:25/400 train_loss:6.5021 train_time:50120ms step_avg:2004.80ms",
    "step:25/400 val_loss:6.4100 val_bpb:1.9911 train_time:50200ms step_avg:2008.00ms",
    "stopped step:25 train_time:50120ms planned:35000ms",
    "prequant val_loss:6.30000000 val_bpb:1.95000000",
    "val_tokens:107930 val_bytes:517457",
    "eval_time:21.5s budget:600s",
    "final_roundtrip val_loss:6.32000000 val_bpb:1.96000000",
    "final_ttt val_loss:6.20000000 val_bpb:1.93000000",
    "artifact_bytes:786519 code_bytes:285 total_bytes:786804",
]


def test_our_log_reads_results_on_both_sides_of_the_source(tmp_path):
    s = parse_run_log(write_our_log(tmp_path, OUR_RESULTS))
    assert s.run_id == "ablation_a" and s.config_fields["model_dim"] == 512 and s.unread == []
    assert [(r["step"], r["train_loss"]) for r in s.steps] == [(1, 9.0124), (25, 6.5021)]  # not the decoy's step 7
    assert s.steps[1]["step_avg_ms"] == 2004.80 and s.steps[1]["train_time_ms"] == 50120
    assert s.vals == [dict(step=25, val_loss=6.41, val_bpb=1.9911, train_time_ms=50200)]
    assert s.final_roundtrip() == (6.32, 1.96) and s.roundtrip_bpb() == 1.96  # not the decoy's 0.0001
    assert s.prequant_bpb() == 1.95 and s.ttt_bpb() == 1.93
    assert s.train_seconds() == pytest.approx(50.12) and s.eval_seconds() == 21.5
    assert s.get("total_bytes") == 786804 and s.get("stopped.step") == 25
    assert s.get("data_fingerprint") is None  # a hash like 9877e8df.. is not the number 9877e8


@pytest.mark.parametrize("code_line", [True, False])
def test_source_with_an_end_banner_is_skipped_with_or_without_its_byte_count(tmp_path, code_line):
    lines = ["code:train_gpt.py sha256:0123abcd bytes:%d" % len(DECOY_SOURCE.encode()), "recipe:default git:0123abc",
             "versions: python:3.11.7 torch:2.13.0 cuda:12.8",
             "=" * 40 + " source " + "=" * 40 + "\n" + DECOY_SOURCE, "=" * 40 + " end source " + "=" * 40]
    path = tmp_path / "seed3.txt"
    path.write_text("\n".join((lines if code_line else lines[1:]) + OUR_RESULTS) + "\n", encoding="utf-8")
    s = parse_run_log(str(path))
    assert [r["step"] for r in s.steps] == [1, 25] and s.final_roundtrip() == (6.32, 1.96) and s.unread == []
    assert s.recipe == "default" and s.meta["git"] == "0123abc" and s.meta["torch"] == "2.13.0"
    assert s.meta.get("sha256") == ("0123abcd" if code_line else None)


def test_malformed_result_lines_are_reported_not_dropped(tmp_path):
    bad = ["step:50/400 train_loss:", "final_roundtrip val_loss:6.3 val_bpb:1.9.6", "step:75/400 val_loss:6.1"]
    s = parse_run_log(write_our_log(tmp_path, OUR_RESULTS[:4] + bad))
    assert s.unread == bad
    assert [r["step"] for r in s.steps] == [1] and s.roundtrip_bpb() is None


def test_nan_loss_is_a_value(tmp_path):
    s = parse_run_log(write_our_log(tmp_path, ["step:3/400 train_loss:nan train_time:9ms step_avg:3.00ms"]))
    assert len(s.steps) == 1 and math.isnan(s.steps[0]["train_loss"]) and s.unread == []


def test_config_differences_name_only_fields_that_differ(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    a = parse_run_log(write_our_log(tmp_path / "a", [], seed=1))
    b = parse_run_log(write_our_log(tmp_path / "b", [], seed=2, matrix_bits=5))
    assert config_differences([a, b]) == ["matrix_bits", "seed"]
    assert config_differences([a, a]) == []
    b.config_fields["a_newer_field"] = 1  # logged by a newer build only: after the fields both runs have
    assert config_differences([a, b]) == ["matrix_bits", "seed", "a_newer_field"]


# Upstream's logs/<run_id>.txt: its source first, a '=' line, versions + nvidia-smi, a '=' line, the run.
UPSTREAM_LOG = '''import os
log0(f"step:{step}/{args.iterations} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f}")
# final_int8_zlib_roundtrip_exact val_loss:0.1 val_bpb:0.2
====================================================================================================
Running Python 3.12.3 (main, Feb  4 2025, 14:48:35) [GCC 13.3.0]
Running PyTorch 2.9.1+cu128
| NVIDIA-SMI 570.124.06             Driver Version: 570.124.06     CUDA Version: 12.8     |
|=========================================+========================+======================|
====================================================================================================
val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=./data/tokenizers/fineweb_1024_bpe.model
model_params:17059912
world_size:8 grad_accum_steps:1
train_batch_tokens:524288 train_seq_len:1024 iterations:20000 warmup_steps:20 max_wallclock_seconds:600.000
warmup_step:20/20
step:0/20000 val_loss:6.9370 val_bpb:4.0978 train_time:0ms step_avg:0.01ms
step:1/20000 train_loss:6.9408 train_time:24ms step_avg:23.99ms
step:13750/20000 train_loss:1.9910 train_time:598726ms step_avg:43.54ms
step:13780/20000 val_loss:2.0606 val_bpb:1.2172 train_time:600038ms step_avg:43.54ms
stopping_early: wallclock_cap train_time:600038ms step:13780/20000
peak memory allocated: 10184 MiB reserved: 10200 MiB
Serialized model: 67224983 bytes
Code size: 47642 bytes
Total submission size: 67272625 bytes
Serialized model int8+zlib: 15815847 bytes (payload:17178912 raw_torch:17224025 payload_ratio:3.91x)
Total submission size int8+zlib: 15863489 bytes
final_int8_zlib_roundtrip val_loss:2.0727 val_bpb:1.2244 eval_time:1401ms
final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570
'''


def test_upstream_log_skips_its_source_and_reads_the_run(tmp_path):
    path = tmp_path / "baseline_seed1337.txt"
    path.write_text(UPSTREAM_LOG)
    s = parse_run_log(str(path))
    assert s.unread == [] and s.run_id == "baseline_seed1337"
    assert [(r["step"], r["train_loss"], r["step_avg_ms"]) for r in s.steps] == [(1, 6.9408, 23.99),
                                                                               (13750, 1.9910, 43.54)]
    assert [(r["step"], r["val_bpb"]) for r in s.vals] == [(0, 4.0978), (13780, 1.2172)]
    assert s.roundtrip_bpb() == 1.22436570  # the _exact line, not the 4-digit one, nor the source's 0.2
    assert s.prequant_bpb() == 1.2172 and s.ttt_bpb() is None
    assert (s.get("artifact_bytes"), s.get("code_bytes"), s.get("total_bytes")) == (15815847, 47642, 15863489)
    assert s.train_seconds() == pytest.approx(600.038) and s.seconds("final_int8_zlib_roundtrip.eval_time") == 1.401
    assert s.final_roundtrip() == (2.07269931, 1.22436570) and s.eval_seconds() == 1.401


def test_upstream_console_log_without_source(tmp_path):
    path = tmp_path / "train.log"
    lines = UPSTREAM_LOG.split("=" * 100 + "\n")[-1].splitlines()
    lines.insert(3, "step:3350/20000 adityasasidhar/parameter-golftrain_loss:2.2214 train_time:145628ms")
    path.write_text("W0318 14:37:59.159000 871689 site-packages/torch/distributed/run.py:852] ****\n"
                    + "\n".join(lines) + "\n")
    s = parse_run_log(str(path))
    assert len(s.steps) == 2 and len(s.vals) == 2 and s.roundtrip_bpb() == 1.22436570
    assert s.unread == [lines[3]]


# ---- a log with no artifact score: its pre-quantisation val, labelled; how training ended

PREQUANT_ONLY = [ln for ln in OUR_RESULTS if not ln.startswith(("final_", "eval_time"))]


def test_a_pre_quantisation_claim_is_labelled_by_the_parser_compare_and_plot(tmp_path, capsys):
    from tools.compare import main as compare_main
    from tools.plot import results_cells

    s = parse_run_log(write_our_log(tmp_path, PREQUANT_ONLY))
    capsys.readouterr()  # the logger's console lines
    assert s.claimed() is None  # never an artifact score ...
    assert s.reported_claim()["label"] == "no artifact score: the claimed 1.95 is the pre-quantisation val"
    assert s.reported_claim()["val_bpb"] == 1.95 and s.training_end() == "stopped at step 25"
    assert compare_main([s.path, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["claimed_bpb"], row["claimed_label"]) == (1.95, "no artifact score: the claimed 1.95 is the "
                                                                "pre-quantisation val")
    assert compare_main([s.path]) == 0
    assert "| claimed by | no artifact score: the claimed 1.95 is the pre-quantisation val |" in capsys.readouterr().out
    cells, notes = results_cells([s])
    assert cells[0][6] == "1.9500*" and notes == ["* ablation_a: no artifact score: the claimed 1.95 is the "
                                                  "pre-quantisation val"]
    full = parse_run_log(write_our_log(tmp_path, OUR_RESULTS))  # a finished run claims its TTT score, unstarred
    assert full.reported_claim()["label"] == "final_ttt" and results_cells([full]) == ([[
        "ablation_a", "25", "2004.8", "1.9500", "1.9600", "1.9300", "1.9300", "786,804"]], [])
    with open(full.path, "a") as f:  # the size fallback's line marks the run's bytes in the plot's table
        f.write("size_fallback artifact_bytes:16001000 code_bytes:500 limit:16000000 awq_top_k:1 "
                "rewritten_artifact_bytes:15921000 (without AWQ-lite's groups)\n")
    cells, notes = results_cells([parse_run_log(full.path)])
    assert cells[0][7] == "786,804+" and notes == ["+ ablation_a: size_fallback rewrote the artifact without "
                                                   "AWQ-lite's groups"]


def test_upstream_periodic_val_is_the_pre_quantisation_claim_and_the_cap_its_end(tmp_path):
    path = tmp_path / "train.log"
    path.write_text(UPSTREAM_LOG.split("Serialized model: ")[0])  # ends after its wallclock stop and memory line
    s = parse_run_log(str(path))
    assert s.claimed() is None and s.training_end() == "wallclock stop at step 13780"
    assert s.reported_claim()["label"] == "no artifact score: the claimed 1.2172 is the pre-quantisation val"
    path.write_text(UPSTREAM_LOG.split("step:13750/20000")[0])  # cut off at step 1 of 20000
    s = parse_run_log(str(path))
    assert s.training_end() is None and s.step_cap == 20000
    path.write_text("step:500/500 train_loss:2.0 train_time:9000ms\nstep:500/500 val_loss:2.1 val_bpb:1.3\n")
    assert parse_run_log(str(path)).training_end() == "last step 500/500"  # its iteration cap, no stop line
    path.write_text("step:1/500 train_loss:9.0 train_time:9ms\n")
    assert parse_run_log(str(path)).reported_claim() is None  # no score of any kind
