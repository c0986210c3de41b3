"""Every generation of upstream log line shapes, in synthetic logs written from the shapes (numbers made up),
and the claimed-score order of golf/logparse.py's module doc."""

import json

import pytest

from golf.logparse import PREQUANT, ROUNDTRIP, SLIDING, TTT, eval_kind, parse_run_log
from tools.compare import main as compare_main

SEP = "=" * 100


def write(tmp_path, name: str, lines: list[str]):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return parse_run_log(str(path))


# Mid-March sliding-window records: stride before val_loss, _exact twins, a stride sweep (the last one counts).
def test_sliding_window_generation(tmp_path):
    s = write(tmp_path, "train_seed7.log", [
        "step:9000/20000 val_loss:2.0100 val_bpb:1.1900 train_time:599950ms step_avg:66.66ms",
        "stopping_early: wallclock_cap train_time:600020ms step:9001/20000",
        "Serialized model int6+zstd-22: 15300000 bytes", "Code size: 56000 bytes",
        "Total submission size int6+zstd-22: 15356000 bytes",
        "final_int6_roundtrip val_loss:2.0990 val_bpb:1.2430 eval_time:1500ms",
        "final_int6_roundtrip_exact val_loss:2.09901234 val_bpb:1.24301234",
        "final_sliding_window_eval stride:256 val_loss:2.0400 val_bpb:1.2080 eval_time:18000ms",
        "final_sliding_window_eval_exact stride:256 val_loss:2.04001234 val_bpb:1.20801234",
        "final_int6_roundtrip val_loss:2.0200 val_bpb:1.1960 eval_time:1500ms",
        "final_sliding_window_eval stride:64 val_loss:1.9630 val_bpb:1.1630 eval_time:72000ms",
        "final_sliding_window_eval_exact stride:64 val_loss:1.96301234 val_bpb:1.16301234"])
    assert s.claimed() == dict(label="final_sliding_window_eval_exact", val_loss=1.96301234, val_bpb=1.16301234,
                               eval_ms=None, kind=SLIDING)
    assert s.roundtrip_bpb() == 1.24301234  # the _exact round trip beats the later rounded one
    assert s.get("final_sliding_window_eval.stride") == 64 and s.unread == []
    assert (s.get("artifact_bytes"), s.get("code_bytes"), s.get("total_bytes")) == (15300000, 56000, 15356000)
    assert s.final_step() == 9001 and s.train_seconds() == pytest.approx(600.02)
    assert s.eval_seconds() == pytest.approx(1.5 + 18 + 1.5 + 72)  # both strides ran; no pre-quant eval logged


# Late-March: a DIAGNOSTIC post-EMA line, the sliding score re-logged under the old round-trip name,
# a summary block with spaced values, then a legal TTT with its '=' progress line.
def test_legal_ttt_generation(tmp_path):
    s = write(tmp_path, "train_seed2025.log", [
        "DIAGNOSTIC post_ema val_loss:1.9200 val_bpb:1.1380 eval_time:2000ms",
        "final_int6_roundtrip val_loss:1.9350 val_bpb:1.1460 eval_time:6000ms",
        "final_int6_roundtrip_exact val_loss:1.93501234 val_bpb:1.14601234",
        "final_int6_sliding_window val_loss:1.8950 val_bpb:1.1220 stride:64 eval_time:74000ms",
        "final_int6_sliding_window_exact val_loss:1.89501234 val_bpb:1.12201234",
        "final_int8_zlib_roundtrip_exact val_loss:1.89501234 val_bpb:1.12201234",
        "val_bpb:          1.12201234", "artifact_bytes:   15550000",
        "ttt_sliding:done val_loss=1.889000 val_bpb=1.119000 elapsed=409.8s",
        "legal_ttt val_loss:1.8890 val_bpb:1.1190 eval_time:410000ms",
        "legal_ttt_exact val_loss:1.88901234 val_bpb:1.11901234"])
    assert s.claimed_label() == "legal_ttt_exact" and s.claimed_score() == (1.88901234, 1.11901234)
    assert s.prequant_bpb() == 1.1380 and s.sliding_bpb() == 1.12201234 and s.ttt_bpb() == 1.11901234
    assert s.roundtrip_bpb() == 1.14601234  # not the re-log of the sliding score under a round-trip name
    assert s.get("artifact_bytes") == 15550000 and s.unread == []
    assert s.eval_seconds() == pytest.approx(6 + 74 + 410)  # not the diagnostic post-EMA eval


# Early April: 'pre-quantization post-ema', 'quantized', 'quantized_sliding_window', raw code size.
def test_april_quantized_generation(tmp_path):
    s = write(tmp_path, "train_seed1.log", [
        "step:4988/20000 val_loss:2.8000 val_bpb:1.0840 train_time:588100ms step_avg:117.90ms",
        "stopping_early: wallclock_cap train_time:588138ms step:4988/20000",
        "pre-quantization post-ema val_loss:2.81500000 val_bpb:1.08990000 eval_time:6003ms",
        "Serialized model: 135000000 bytes", "Code size: 15516 bytes", "Total submission size: 135015516 bytes",
        "Serialized model quantized+brotli: 15972031 bytes", "Total submission size quantized+brotli: 15987547 bytes",
        "quantized val_loss:2.84700000 val_bpb:1.10230000 eval_time:7531ms",
        "quantized_sliding_window val_loss:2.80400000 val_bpb:1.08550000 eval_time:83990ms"])
    assert s.claimed_label() == "quantized_sliding_window" and s.claimed_score() == (2.804, 1.0855)
    assert s.prequant_bpb() == 1.0899 and s.roundtrip_bpb() == 1.1023
    assert (s.get("raw_model_bytes"), s.get("artifact_bytes"), s.get("total_bytes")) == (135000000, 15972031, 15987547)
    assert s.get("raw_total_bytes") == 135015516 and s.size_lines["code_bytes"].startswith("Code size: ")


PHASED = [
    "W0426 19:59:28.614000 762659 torch/distributed/run.py:803] *****************************************",
    "Hyperparameters:", "  adam_eps: 1e-08", "  artifact_dir: ", "  seed: 42", "  ttt_enabled: True",
    "train_shards: 80", "val_bpb:byte_sidecar:enabled", "model_params:35945671", "warmup_step: 1/20", "loop_warmup_step: 20/20",
    "1/20000 train_loss: 9.0087 train_time: 0.0m tok/s: 1234567",
    "4000/20000 train_loss: 2.4321 train_time: 8.1m tok/s: 7654321 looping:True",
    "4000/20000 val_loss: 2.4000 val_bpb: 1.0960",
    "layer_loop:enabled step:2178 frac:0.350 encoder:[0, 1, 2] decoder:[3, 4]",
    "4945/20000 val_loss: 2.3539 val_bpb: 1.0756",
    "stopping_early: wallclock_cap train_time: 599592ms step: 4945/20000",
    "peak memory allocated: 41717 MiB reserved: 47140 MiB",
    "diagnostic pre-quantization post-ema val_loss:2.32848665 val_bpb:1.06395844 eval_time:6718ms",
    "Serialized model: 135417533 bytes", "Code size (uncompressed): 157868 bytes", "Code size (compressed): 31999 bytes",
    "Serialized model quantized+pergroup: 15865260 bytes", "Total submission size quantized+pergroup: 15897259 bytes",
    "diagnostic quantized val_loss:2.34727563 val_bpb:1.07254371 eval_time:49995ms",
    "ttp: b782/782 bl:2.1403 bb:1.0135 rl:2.1403 rb:1.0135 dl:30339-97114 gd:0",
    "tttg: c1/131 lr:0.001000 t:0.3s",
    "quantized_ttt_phased val_loss:2.31944212 val_bpb:1.05989454 eval_time:508785ms",
    "total_eval_time:508.8s"]


# Late April phased TTT: spaced values, minutes, bare N/M step lines, prose sizes, total_eval_time, torchrun noise.
def test_phased_ttt_generation(tmp_path):
    s = write(tmp_path, "train_seed42.log", PHASED)
    assert s.claimed() == dict(label="quantized_ttt_phased", val_loss=2.31944212, val_bpb=1.05989454,
                               eval_ms=pytest.approx(508785), kind=TTT)
    assert s.prequant_bpb() == 1.06395844 and s.roundtrip_bpb() == 1.07254371  # 'diagnostic quantized'
    assert [(r["step"], r["train_loss"], r["train_time_ms"]) for r in s.steps] == [(1, 9.0087, 0.0),
                                                                                  (4000, 2.4321, 8.1 * 60000)]
    assert [(r["step"], r["val_bpb"]) for r in s.vals] == [(4000, 1.0960), (4945, 1.0756)]
    assert s.final_step() == 4945 and s.train_seconds() == pytest.approx(599.592)
    assert s.step_avg_ms() == pytest.approx(599592 / 4945) and s.eval_seconds() == pytest.approx(508.8)
    assert (s.get("artifact_bytes"), s.get("code_bytes"), s.get("code_raw_bytes"), s.get("total_bytes")) == (
        15865260, 31999, 157868, 15897259)
    assert s.seed() == 42 and s.unread == [] and s.get("py") is None  # the torchrun line is not read


def test_epoch_stamped_lines(tmp_path):
    lines = [f"17761{i:05d}.{i:03d} {line}" for i, line in enumerate(PHASED[11:])]
    s = write(tmp_path, "train0.txt", lines)
    assert s.claimed_label() == "quantized_ttt_phased" and s.claimed_score()[1] == 1.05989454
    assert [r["step"] for r in s.vals] == [4000, 4945] and s.get("total_bytes") == 15897259


# The ternary records: loss/t/avg step lines, a budget line, T-scaled sliding eval with a parenthesis.
def test_ternary_generation(tmp_path):
    s = write(tmp_path, "ternary_log_7.txt", [
        "--- Hyperparameters ---", "activation_type=relu2 adam_eps=1e-08 run_id=tern seed=7 warmup_steps=5",
        "params:73685840 L:10 d:768 h:8 kv:4 ws:8 ga:1 s:7", "warmup:5/5",
        "step:6000/10000 loss:3.1000 t:551000ms avg:91.83ms",
        "stopping_early: wallclock_cap train_time:599652ms step:6530/10000",
        "artifact:15.92MB ternary:64880640(14239486B) fp:2513744(2537376B) code:70853",
        "budget:15993853/16000000 (15.99/16.00MB) FITS",
        "final_ternary_roundtrip val_loss:3.0570 val_bpb:1.1837",
        "temp_scaling optimal_T:0.90 eval_time:146ms",
        "final_sliding val_loss:2.9869 val_bpb:1.1565 (stride=16, T=0.90) eval_time:429311ms"])
    assert s.steps == [dict(step=6000, train_loss=3.1, train_time_ms=551000.0, step_avg_ms=91.83)]
    assert s.claimed_label() == "final_sliding" and s.claimed_score() == (2.9869, 1.1565)
    assert s.roundtrip_bpb() == 1.1837 and s.get("total_bytes") == 15993853 and s.seed() == 7
    assert s.unread == []


@pytest.mark.parametrize("label, kind", [
    ("prequant", PREQUANT), ("pre-quantization post-ema", PREQUANT), ("DIAGNOSTIC post_ema", PREQUANT),
    ("diagnostic pre-quantization post-ema", PREQUANT), ("final_roundtrip", ROUNDTRIP),
    ("final_int8_zlib_roundtrip_exact", ROUNDTRIP), ("quantized", ROUNDTRIP), ("diagnostic quantized", ROUNDTRIP),
    ("final_ternary_roundtrip", ROUNDTRIP), ("final_sliding", SLIDING), ("quantized_sliding_window", SLIDING),
    ("final_int6_sliding_window_exact", SLIDING), ("final_ttt", TTT), ("legal_ttt_exact", TTT),
    ("final_int8_ttt_lora", TTT), ("quantized_ttt_phased", TTT)])
def test_eval_kinds(label, kind):
    assert eval_kind(label) == kind


@pytest.mark.parametrize("lines, label", [
    # TTT > sliding > round trip, whatever the order of the lines and even when TTT scored worse
    (["final_int6_ttt val_loss:3.07 val_bpb:1.336", "final_int6_sliding_window val_loss:2.50 val_bpb:1.089"],
     "final_int6_ttt"),
    (["quantized_sliding_window val_loss:2.8 val_bpb:1.08", "quantized val_loss:2.9 val_bpb:1.10"],
     "quantized_sliding_window"),
    # quantised over diagnostic within a kind; pre-quant never claimed
    (["quantized val_loss:2.9 val_bpb:1.10", "diagnostic quantized val_loss:2.8 val_bpb:1.09"], "quantized"),
    (["prequant val_loss:2.7 val_bpb:1.05", "final_roundtrip val_loss:2.8 val_bpb:1.09"], "final_roundtrip"),
    # _exact over rounded, then the later line
    (["legal_ttt_exact val_loss:1.88901234 val_bpb:1.11901234", "legal_ttt val_loss:1.8890 val_bpb:1.1190"],
     "legal_ttt_exact"),
    (["ttt val_loss:2.7 val_bpb:1.07", "final_ttt val_loss:2.7 val_bpb:1.07"], "final_ttt")])
def test_claim_order(tmp_path, lines, label):
    assert write(tmp_path, "a.log", ["step:1/2 train_loss:9.0 train_time:1ms step_avg:1.00ms"] + lines).claimed_label() == label


def test_no_claim_without_a_score_of_the_artifact(tmp_path):
    s = write(tmp_path, "a.log", PHASED[:19])  # stopped after the pre-quant diagnostic
    assert s.claimed() is None and s.claimed_score() is None and s.prequant_bpb() == 1.06395844


def test_compare_json_fields(tmp_path, capsys):
    write(tmp_path, "train_seed42.log", PHASED)
    write(tmp_path, "baseline.txt", ["step:100/20000 train_loss:2.5000 train_time:60000ms step_avg:600.00ms",
                                     "final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570"])
    assert compare_main(["--json", str(tmp_path / "train_seed42.log"), str(tmp_path / "baseline.txt")]) == 0
    first, second = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {k: first[k] for k in ("claimed_bpb", "claimed_label", "prequant_bpb", "roundtrip_bpb", "steps",
                                  "artifact_bytes", "code_bytes", "total_bytes")} == {
        "claimed_bpb": 1.05989454, "claimed_label": "quantized_ttt_phased", "prequant_bpb": 1.06395844,
        "roundtrip_bpb": 1.07254371, "steps": 4945, "artifact_bytes": 15865260, "code_bytes": 31999,
        "total_bytes": 15897259}
    assert first["train_s"] == pytest.approx(599.592) and first["eval_s"] == pytest.approx(508.8)
    assert first["step_avg_ms"] == pytest.approx(121.252, abs=1e-3)
    assert second["claimed_label"] == "final_int8_zlib_roundtrip_exact" and second["steps"] == 100
    assert (second["eval_s"], second["artifact_bytes"], second["total_bytes"]) == (None, None, None)
    assert compare_main([str(tmp_path / "train_seed42.log")]) == 0  # the table shows the same numbers
    table = capsys.readouterr().out
    assert "| claimed BPB | 1.05989 |" in table and "| claimed by | quantized_ttt_phased |" in table
    assert "| steps | 4,945 |" in table and "| total bytes | 15,897,259 |" in table


def test_a_round_trip_equal_to_prequant_stays_a_round_trip(tmp_path):
    s = write(tmp_path, "ours.txt", ["step:4/4 train_loss:5.8 train_time:10ms step_avg:2.50ms",
                                     "prequant val_loss:6.37350635 val_bpb:3.04431924",
                                     "final_roundtrip val_loss:6.37350635 val_bpb:3.04431924"])
    assert s.final_roundtrip() == (6.37350635, 3.04431924) and s.claimed_label() == "final_roundtrip"
