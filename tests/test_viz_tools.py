"""tools/sample.py, plot.py and compare.py on a tiny in-process artifact and hand-written logs:
what they print or draw, and one line + exit 2 on bad input."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy
import pytest
import torch

from golf.artifact import encode_artifact, read_artifact, write_artifact
from golf.config import Config
from golf.model.gpt import GPT
from golf.params import assign_rules, param_rules
from golf.quant.state import dequantize_state
from golf.train import load_artifact_model, quantize_and_write
from tools.compare import main as compare_main
from tools.plot import main as plot_main
from tools.sample import main as sample_main

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tiny_config(**fields) -> Config:
    tiny = dict(vocab_size=1024, model_dim=32, num_heads=2, num_kv_heads=1, num_layers=2, loop_start=1, loop_end=1,
                lane_layers=0, rope_dims=8, sw_seq_len=32, device="cpu")
    return dataclasses.replace(Config(), **(tiny | fields))


def write_tiny_artifact(path: Path, cfg: Config) -> Path:
    torch.manual_seed(0)
    model = GPT(cfg)
    rules = assign_rules(model.named_parameters(), param_rules(cfg))
    quantize_and_write(cfg, model, rules, {}, str(path))  # exactly as a run writes it (RTN: no Hessians)
    return path


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return write_tiny_artifact(tmp_path_factory.mktemp("art") / "final_model.golf", tiny_config())


def write_log(path: Path, cfg: Config, results: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    head = ["code:train_gpt.py sha256:0123456789abcdef bytes:0",
            "config:" + json.dumps(dataclasses.asdict(cfg), sort_keys=True)]
    path.write_text("\n".join(head + results) + "\n")
    return path


def run_results(bits: int, ttt: bool = False) -> list[str]:
    lines = [f"step:{s}/300 train_loss:{8 - s / 60:.4f} train_time:{s * 100}ms step_avg:{100 + 5 * bits:.2f}ms"
             for s in (1, 100, 200, 300)]
    lines += ["step:300/300 val_loss:3.1000 val_bpb:1.5000 train_time:30000ms step_avg:100.00ms",
              "stopped step:300 train_time:30000ms planned:30000ms",
              "prequant val_loss:3.0 val_bpb:1.40000000", "eval_time:12.5s budget:600s",
              f"final_roundtrip val_loss:3.1 val_bpb:{1.4 + 0.01 * (7 - bits):.8f}"]
    if ttt:
        lines.append("final_ttt val_loss:3.0 val_bpb:1.38000000")
    return lines + [f"artifact_bytes:{bits * 1000} code_bytes:500 total_bytes:{bits * 1000 + 500}"]


@pytest.fixture
def two_logs(tmp_path) -> list[str]:
    a = write_log(tmp_path / "int6" / "logs" / "int6.txt", tiny_config(run_id="int6"), run_results(6, ttt=True)
                  + ["step:301/300 train_loss:"])
    b = write_log(tmp_path / "int5" / "logs" / "int5.txt", tiny_config(run_id="int5", matrix_bits=5), run_results(5))
    return [str(a), str(b)]


def one_error_line(capsys, needle: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


# ---------------------------------------------------------------- sample

def test_load_artifact_model_holds_the_dequantised_weights_in_eval_mode(artifact):
    model = load_artifact_model(str(artifact), tiny_config(), None, torch.device("cpu"))
    entries, _ = read_artifact(str(artifact))
    expected = dequantize_state(entries, model.state_dict())
    assert not model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())


def test_sample_prints_the_prompt_and_a_seeded_continuation(artifact, sample_tokenizer, capsys):
    argv = [str(artifact), "--tokenizer", sample_tokenizer, "--prompt", "The nation", "--tokens", "12"]
    outs = []
    for seed in ("1", "1", "2"):
        assert sample_main(argv + ["--seed", seed]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0].startswith("The nation") and len(outs[0].strip()) > len("The nation")
    assert outs[0] == outs[1] and outs[0] != outs[2]


@pytest.mark.parametrize("case, needle", [
    ("missing artifact", "nope.golf"), ("corrupt artifact", "checksum"), ("missing tokenizer", "nope.model"),
    ("vocab mismatch", "vocab 1024 != the artifact's vocab_size 1100"), ("bad top-p", "--top-p"),
])
def test_sample_bad_input_is_one_line_exit_2(artifact, sample_tokenizer, tmp_path, capsys, case, needle):
    art, tok, extra = str(artifact), sample_tokenizer, []
    if case == "missing artifact":
        art = str(tmp_path / "nope.golf")
    elif case == "corrupt artifact":
        blob = bytearray(artifact.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        (tmp_path / "bad.golf").write_bytes(bytes(blob))
        art = str(tmp_path / "bad.golf")
    elif case == "missing tokenizer":
        tok = str(tmp_path / "nope.model")
    elif case == "vocab mismatch":
        art = str(write_tiny_artifact(tmp_path / "v1100.golf", tiny_config(vocab_size=1100)))
    else:
        extra = ["--top-p", "0"]
    assert sample_main([art, "--tokenizer", tok, "--tokens", "2"] + extra) == 2
    one_error_line(capsys, needle)


def test_sample_ignores_config_fields_it_does_not_know(artifact, sample_tokenizer, tmp_path, capsys):
    entries, meta = read_artifact(str(artifact))
    meta["config"]["a_future_knob"] = 3  # a field from a newer build
    path = tmp_path / "future.golf"
    write_artifact(path, encode_artifact(entries, {name: "all" for name in entries}, meta))
    assert sample_main([str(path), "--tokenizer", sample_tokenizer, "--tokens", "2"]) == 0
    assert "a_future_knob" in capsys.readouterr().err


def test_sample_names_an_artifact_older_than_the_model_code(artifact, sample_tokenizer, tmp_path, capsys):
    entries, meta = read_artifact(str(artifact))
    for name in ("loop_start", "loop_end"):  # written before these fields existed: the defaults do not fit 2 layers
        del meta["config"][name]
    path = tmp_path / "old.golf"
    write_artifact(path, encode_artifact(entries, {name: "all" for name in entries}, meta))
    assert sample_main([str(path), "--tokenizer", sample_tokenizer, "--tokens", "2"]) == 2
    one_error_line(capsys, "old.golf: cannot rebuild its model here")


# ---------------------------------------------------------------- plot

def test_plot_writes_a_readable_png_and_names_unread_lines(two_logs, artifact, tmp_path, capsys):
    out = tmp_path / "report.png"
    assert plot_main(two_logs + ["-o", str(out), "--artifact", str(artifact), "--code", str(ROOT / "train_gpt.py")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "int6.txt: 1 result-like line(s) not read" in err[0] and "step:301/300" in err[0]
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(str(out))
    assert pixels.shape[0] >= 800 and pixels.shape[1] >= 1000
    assert float(numpy.std(pixels[..., :3])) > 0.05  # drawn on, not a blank canvas
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("case, needle", [
    ("missing log", "nope.txt"), ("not a log", "no run lines"), ("corrupt artifact", "checksum"),
    ("missing folder", "does not exist"), ("code without artifact", "--code"),
])
def test_plot_bad_input_is_one_line_exit_2_and_keeps_the_old_png(two_logs, artifact, tmp_path, capsys, case, needle):
    out = tmp_path / "report.png"
    out.write_bytes(b"old")
    argv = two_logs + ["-o", str(out)]
    if case == "missing log":
        argv = [str(tmp_path / "nope.txt"), "-o", str(out)]
    elif case == "not a log":
        (tmp_path / "notes.txt").write_text("hello\nworld\n")
        argv = [str(tmp_path / "notes.txt"), "-o", str(out)]
    elif case == "corrupt artifact":
        blob = artifact.read_bytes()
        (tmp_path / "bad.golf").write_bytes(blob[:-1] + bytes([blob[-1] ^ 0xFF]))
        argv += ["--artifact", str(tmp_path / "bad.golf")]
    elif case == "missing folder":
        argv = two_logs + ["-o", str(tmp_path / "no" / "report.png")]
    else:
        argv += ["--code", str(ROOT / "train_gpt.py")]
    assert plot_main(argv) == 2
    one_error_line(capsys, needle)
    assert out.read_bytes() == b"old" and not list(tmp_path.glob("*.tmp"))


# ---------------------------------------------------------------- compare

def table_rows(markdown: str) -> dict[str, list[str]]:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in markdown.strip().splitlines()]
    return {r[0]: r[1:] for r in rows}


def test_compare_lists_differing_fields_and_derived_numbers(two_logs, tmp_path, capsys):
    upstream = tmp_path / "baseline.log"
    upstream.write_text("step:1/20000 train_loss:6.9408 train_time:24ms step_avg:23.99ms\n"
                        "step:13780/20000 val_loss:2.0606 val_bpb:1.2172 train_time:600038ms step_avg:43.54ms\n"
                        "final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570\n")
    assert compare_main(two_logs + [str(upstream)]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows[""] == ["int6", "int5", "baseline"]
    config_rows = [k for k in rows if k.startswith("`")]
    assert config_rows == ["`matrix_bits`"] and rows["`matrix_bits`"] == ["6", "5", "—"]
    assert rows["steps"] == ["300", "300", "13,780"]
    assert rows["pre-quant BPB"] == ["1.40000", "1.40000", "1.21720"]
    assert rows["quant gap (RT - pre)"] == ["+0.01000", "+0.02000", "+0.00717"]
    assert rows["TTT gain (RT - TTT)"] == ["+0.03000", "—", "—"]
    assert rows["total bytes"] == ["6,500", "5,500", "—"]
    assert rows["train s"] == ["30.0", "30.0", "600.0"] and rows["eval s"] == ["12.5", "12.5", "—"]


def test_compare_artifact_dir_measures_the_file_and_flags_a_disagreeing_log(two_logs, artifact, tmp_path, capsys):
    dirs = []
    for name in ("int6", "int5"):
        (tmp_path / name / "final_model.golf").write_bytes(artifact.read_bytes())
        dirs.append(str(tmp_path / name))
    assert compare_main(two_logs + ["--artifact-dir"] + dirs) == 0
    out = capsys.readouterr().out
    size = artifact.stat().st_size
    assert table_rows(out.split("\n\n")[0])["artifact bytes"] == [f"{size:,}"] * 2
    assert f"int6: the log says artifact_bytes 6,000, the artifact file has {size:,}" in out


def test_compare_notes_a_run_whose_artifact_the_size_fallback_rewrote(two_logs, capsys):
    with open(two_logs[1], "a") as f:
        f.write("size_fallback artifact_bytes:16001000 code_bytes:500 limit:16000000 awq_top_k:1 "
                "rewritten_artifact_bytes:15921000 (without AWQ-lite's groups)\n")
    assert compare_main(two_logs) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "size_fallback" in line]
    assert notes == ["- note: int5: size_fallback rewrote the artifact without AWQ-lite's groups (16,001,000 -> "
                     "15,921,000 B): its scores are that artifact's"]


@pytest.mark.parametrize("case, needle", [("missing log", "nope.txt"), ("dir count", "--artifact-dir"),
                                          ("missing artifact", "final_model.golf")])
def test_compare_bad_input_is_one_line_exit_2(two_logs, tmp_path, capsys, case, needle):
    argv = {"missing log": [str(tmp_path / "nope.txt")],
            "dir count": two_logs + ["--artifact-dir", str(tmp_path)],
            "missing artifact": two_logs + ["--artifact-dir", str(tmp_path), str(tmp_path)]}[case]
    assert compare_main(argv) == 2
    one_error_line(capsys, needle)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("tool", ["sample.py", "plot.py", "compare.py"])
def test_tools_run_as_scripts_and_fail_without_a_traceback(tool, tmp_path):
    argv = {"sample.py": ["nope.golf", "--tokenizer", "nope.model"], "plot.py": ["nope.txt", "-o", "x.png"],
            "compare.py": ["nope.txt"]}[tool]
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / tool)] + argv, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "nope" in proc.stderr
