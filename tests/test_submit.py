import hashlib
import json
import math
from pathlib import Path

import pytest

from golf.budget import TRACKS, track_named
from golf.logparse import parse_run_log
from tools.submit import (FAIL, FIELDS, NON_RECORD_FIELDS, PASS, WARN, Check, betainc, check_folder, main,
                          student_t_cdf, validate, welch_test)

CODE = "print('packed')\n# a logged source line that looks like a result:\n# step:999/1 train_loss:0.1\n"


def fake_run(root: Path, seed: int, val_loss: float, val_bpb: float, code: str = CODE, artifact_bytes: int = 5000,
             train_ms: int = 590000, eval_s: float = 300.0, final: bool = True, logged_total: int | None = None,
             ttt: tuple[float, float] | None = None, prequant: tuple[float, float] | None = None) -> Path:
    run = root / f"run{seed}"
    (run / "logs").mkdir(parents=True)
    (run / "train_gpt.py").write_text(code)
    with open(run / "final_model.golf", "wb") as f:
        f.truncate(artifact_bytes)  # sizes are all submit checks of an artifact
    code_bytes = len(code.encode())
    total = artifact_bytes + code_bytes if logged_total is None else logged_total
    sha = hashlib.sha256(code.encode()).hexdigest()[:16]
    lines = [f"code:train_gpt.py sha256:{sha} bytes:{code_bytes}", "recipe:default git:0123abc",
             f"config:{json.dumps({'seed': seed, 'model_dim': 512})}",
             "versions: python:3.11.7 torch:2.13.0 cuda:12.8", "data_fingerprint:ab12 shards:80",
             "=" * 40 + " source " + "=" * 40 + "\n" + code, "=" * 40 + " end source " + "=" * 40,
             "step:1/20000 train_loss:9.0000 train_time:90ms step_avg:90.00ms",
             f"step:6000/20000 train_loss:2.9000 train_time:{train_ms}ms step_avg:{train_ms / 6000:.2f}ms",
             f"stopped step:6000 train_time:{train_ms}ms planned:585000ms",
             f"eval_time:{eval_s}s budget:600s"]
    if prequant:
        lines.insert(-1, f"prequant val_loss:{prequant[0]:.8f} val_bpb:{prequant[1]:.8f}")
    if final:
        lines.append(f"final_roundtrip val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}")
    if ttt:
        lines.append(f"final_ttt val_loss:{ttt[0]:.8f} val_bpb:{ttt[1]:.8f}")
    lines.append(f"artifact_bytes:{artifact_bytes} code_bytes:{code_bytes} total_bytes:{total}")
    (run / "logs" / f"seed{seed}.txt").write_text("\n".join(lines) + "\n")
    return run


def submit(tmp_path, runs, *extra) -> int:
    return main([str(r) for r in runs] + ["--name", "Test", "--author", "A", "--github-id", "a", "--blurb", "b",
                                          "--date", "2026-05-01", "--out", str(tmp_path / "subs"), *extra])


def test_build_and_validate_two_seeds(tmp_path, capsys):
    runs = [fake_run(tmp_path, 1, 2.50, 1.10), fake_run(tmp_path, 2, 2.52, 1.12)]
    assert submit(tmp_path, runs) == 0
    folder = tmp_path / "subs" / "records" / "track_10min_16mb" / "2026-05-01_Test"
    sub = json.loads((folder / "submission.json").read_text())
    assert set(FIELDS) <= set(sub) and sub["track"] == "10min_16mb" and sub["seeds"] == [1, 2]
    assert sub["val_bpb"] == pytest.approx(1.11) and sub["val_bpb_std"] == pytest.approx(0.02 / math.sqrt(2))
    assert (sub["pytorch_version"], sub["cuda_version"]) == ("2.13.0", "12.8")
    assert sub["seed_results"]["1"] == {"val_loss": 2.5, "val_bpb": 1.1, "artifact_bytes": 5000, "steps": 6000,
                                        "step_avg_ms": pytest.approx(98.33), "eval_time_s": 300.0}
    assert (folder / "train_gpt.py").read_text() == CODE
    assert (folder / "train_seed2.log").is_file() and "| 2 | 2.52000 | 1.12000 |" in (folder / "README.md").read_text()
    assert validate(folder) == []
    assert submit(tmp_path, runs) == 1  # never overwrites a folder
    assert "already exists" in capsys.readouterr().err


def test_a_ttt_run_claims_its_ttt_score(tmp_path):
    runs = [fake_run(tmp_path, 1, 2.50, 1.10, ttt=(2.45, 1.08)), fake_run(tmp_path, 2, 2.52, 1.12, ttt=(2.47, 1.09))]
    assert submit(tmp_path, runs) == 0
    folder = tmp_path / "subs" / "records" / "track_10min_16mb" / "2026-05-01_Test"
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["seed_results"]["1"]["val_bpb"] == 1.08 and sub["val_bpb"] == pytest.approx(1.085)
    assert validate(folder) == []


@pytest.mark.parametrize("bad, needle", [
    (dict(code=CODE + "# changed\n"), "train_gpt.py differs between runs"),
    (dict(artifact_bytes=16_000_000), "> 16000000"),
    (dict(logged_total=123), "the log says total_bytes:123"),
    (dict(train_ms=601000), "training took 601.0s > 600s"),
    (dict(eval_s=650.0), "evaluation took 650.0s > 600s"),
    (dict(final=False), "no final_roundtrip"),
])
def test_build_refuses(tmp_path, capsys, bad, needle):
    runs = [fake_run(tmp_path, 1, 2.5, 1.1), fake_run(tmp_path, 2, 2.5, 1.1, **bad)]
    assert submit(tmp_path, runs) == 1
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "subs" / "records" / "track_10min_16mb" / "2026-05-01_Test").exists()


def built(tmp_path) -> Path:
    assert submit(tmp_path, [fake_run(tmp_path, 1, 2.5, 1.1), fake_run(tmp_path, 2, 2.52, 1.12)]) == 0
    return tmp_path / "subs" / "records" / "track_10min_16mb" / "2026-05-01_Test"


def test_validator_rejects_missing_field(tmp_path):
    folder = built(tmp_path)
    sub = json.loads((folder / "submission.json").read_text())
    del sub["hardware"]
    (folder / "submission.json").write_text(json.dumps(sub))
    assert main(["--validate", str(folder)]) == 1
    assert any("missing field 'hardware'" in p for p in validate(folder))


def test_validator_rejects_size_overrun(tmp_path):
    folder = built(tmp_path)
    sub = json.loads((folder / "submission.json").read_text())
    sub["seed_results"]["2"]["artifact_bytes"] = 15_999_990
    (folder / "submission.json").write_text(json.dumps(sub))
    assert any("seed 2: artifact_bytes 15,999,990 + " in p and "> 16,000,000" in p for p in validate(folder))


def test_validator_warns_of_an_artifact_rewritten_by_the_size_fallback(tmp_path):
    folder = built(tmp_path)
    assert not [c for c in check_folder(folder) if "size_fallback" in c.text]
    log = folder / "train_seed2.log"
    log.write_text(log.read_text() + "size_fallback artifact_bytes:16001000 code_bytes:32392 limit:16000000 "
                                     "awq_top_k:1 rewritten_artifact_bytes:15921000 (without AWQ-lite's groups)\n")
    warned = [c for c in check_folder(folder) if "size_fallback" in c.text]
    assert [(c.level, c.where) for c in warned] == [(WARN, "train_seed2.log")]
    assert "16,001,000 B" in warned[0].text and "15,921,000 B" in warned[0].text


def test_validator_rejects_mismatched_code_hashes(tmp_path):
    folder = built(tmp_path)
    log = folder / "train_seed2.log"
    log.write_text(log.read_text().replace("sha256:", "sha256:ff", 1))
    problems = validate(folder)
    assert any("logs ran different code" in p for p in problems)
    assert any("train_seed2.log: the log ran code sha256:ff" in p for p in problems)


# ---- records folders in upstream's layout (synthetic, written from the shapes of the merged records)

def phased_log(seed: int, ttt: float, diag: float = 1.0725, train_ms: int = 599592, eval_ms: int = 508785,
               model: int = 15865260, code: int = 31999, finished: bool = True) -> str:
    lines = ["W0426 19:59:28.614000 762659 torch/distributed/run.py:803] ****", "Hyperparameters:", f"  seed: {seed}",
             "1/20000 train_loss: 9.0087 train_time: 0.0m tok/s: 1234567",
             "4945/20000 val_loss: 2.3539 val_bpb: 1.0756",
             f"stopping_early: wallclock_cap train_time: {train_ms}ms step: 4945/20000",
             "diagnostic pre-quantization post-ema val_loss:2.32848665 val_bpb:1.06395844 eval_time:6718ms",
             "Serialized model: 135417533 bytes", "Code size (uncompressed): 157868 bytes",
             f"Code size (compressed): {code} bytes", f"Serialized model quantized+pergroup: {model} bytes",
             f"Total submission size quantized+pergroup: {model + code} bytes"]
    if finished:
        lines += [f"diagnostic quantized val_loss:2.34727563 val_bpb:{diag:.8f} eval_time:49995ms",
                  f"quantized_ttt_phased val_loss:2.31944212 val_bpb:{ttt:.8f} eval_time:{eval_ms}ms",
                  f"total_eval_time:{eval_ms / 1000:.1f}s"]
    return "\n".join(lines) + "\n"


SEEDS = {42: 1.05989454, 0: 1.06124613, 1234: 1.06208695}


def upstream_folder(tmp_path, code_bytes: int = 158429, **log_args) -> Path:
    folder = tmp_path / "2026-04-27_Synthetic_1.0611"
    folder.mkdir()
    (folder / "train_gpt.py").write_text("#" * (code_bytes - 1) + "\n")
    (folder / "README.md").write_text("# synthetic\n")
    for seed, bpb in SEEDS.items():
        (folder / f"train_seed{seed}.log").write_text(phased_log(seed, bpb, **log_args))
    sub = {"author": "A", "github_id": "a", "name": "Synthetic", "track": "10min_16mb", "val_bpb": 1.06107587,
           "seed_results": {str(k): {"val_bpb": v, "artifact_bytes": 15865260 + 31999} for k, v in SEEDS.items()}}
    (folder / "submission.json").write_text(json.dumps(sub))
    return folder


def edit_submission(folder: Path, seed: str, **fields) -> None:
    sub = json.loads((folder / "submission.json").read_text())
    sub["seed_results"][seed].update(fields)
    (folder / "submission.json").write_text(json.dumps(sub))


def levels(folder: Path, where: str) -> list[tuple[str, str]]:
    return [(c.level, c.text) for c in check_folder(folder) if c.where == where]


def test_upstream_layout_three_seeds(tmp_path, capsys):
    folder = upstream_folder(tmp_path)
    checks = check_folder(folder)
    assert [c.line() for c in checks if c.level == FAIL] == []
    assert {c.where: c.text for c in checks if c.text.startswith("claimed")} == {
        f"train_seed{s}.log": f"claimed quantized_ttt_phased val_bpb {v} = submission.json seed {s} val_bpb {v}"
        for s, v in SEEDS.items()}
    seed42 = levels(folder, "train_seed42.log")
    assert (PASS, "train 599.6s <= 600s") in seed42 and (PASS, "eval 508.8s <= 600s") in seed42
    assert (PASS, "size as the log counted it (artifact + compressed code): 15,897,259 <= 16,000,000") in seed42
    strict = [t for lv, t in seed42 if t.startswith("strict size")]
    assert strict == ["strict size (artifact bytes from the log (no artifact in the folder) + 158,429 raw bytes of "
                      "train_gpt.py): 16,023,689 > 16,000,000; it fits only as the log counted it (compressed code): "
                      "a counting convention"]
    assert (WARN, strict[0]) in seed42  # a convention, not an error
    # submission.json's artifact_bytes already holds the compressed code: never added a second time
    assert any(c.where == "submission.json" and "seed 42: artifact_bytes 15,897,259 = a log's total" in c.text
               and c.level == PASS for c in checks)
    assert main(["--validate", str(folder)]) == 0
    assert "0 FAIL" in capsys.readouterr().out.splitlines()[-1]
    assert main(["--validate", str(folder), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["level"] for r in rows} == {PASS, WARN} and all(set(r) == {"level", "where", "check"} for r in rows)


def test_upstream_layout_errors_and_warnings(tmp_path, capsys):
    folder = upstream_folder(tmp_path)
    edit_submission(folder, "0", val_bpb=1.0612)  # the log's 1.06124613 rounded to 4 places: the same score
    edit_submission(folder, "1234", val_bpb=1.0725)  # the diagnostic round trip's figure, not the claim
    edit_submission(folder, "42", val_bpb=1.0500)  # in no line of the log
    assert levels(folder, "train_seed0.log")[0] == (PASS, "claimed quantized_ttt_phased val_bpb 1.06124613 = "
                                                          "submission.json seed 0 val_bpb 1.0612")
    assert levels(folder, "train_seed1234.log")[0][0] == WARN and "diagnostic quantized" in levels(
        folder, "train_seed1234.log")[0][1]
    assert levels(folder, "train_seed42.log")[0] == (FAIL, "submission.json seed 42 says val_bpb 1.05, which no score "
                                                           "line of this log has (claimed quantized_ttt_phased val_bpb "
                                                           "1.05989454)")
    assert main(["--validate", str(folder)]) == 1
    capsys.readouterr()


@pytest.mark.parametrize("log_args, verdict", [
    (dict(train_ms=600050), (WARN, "train 600.050s > 600s by under 1s: the wallclock cap stopped it after the step "
                                   "that crossed (rounding)")),
    (dict(train_ms=605000), (FAIL, "training took 605.0s > 600s")),
    (dict(eval_ms=650000), (FAIL, "evaluation took 650.0s > 600s")),
    (dict(model=15990000), (FAIL, "size as the log counted it (artifact + compressed code): 16,021,999 > 16,000,000")),
    # trained to its wallclock cap, then only the pre-quantisation score: no artifact score, never "did not finish"
    (dict(finished=False), (FAIL, "no artifact score: the log's only score is the pre-quantisation val 1.06395844, and "
                                  "submission.json seed 0 says 1.06124613; training reached its end: wallclock stop at "
                                  "step 4945")),
])
def test_upstream_layout_verdicts(tmp_path, log_args, verdict):
    assert verdict in levels(upstream_folder(tmp_path, **log_args), "train_seed0.log")


def test_strict_size_counts_every_code_file_shipped(tmp_path):
    folder = upstream_folder(tmp_path, code_bytes=100_000)
    assert all(lv == PASS for lv, t in levels(folder, "train_seed0.log") if t.startswith("strict"))
    (folder / "helper.py").write_text("#" * 40_000)
    assert (WARN, "strict size (artifact bytes from the log (no artifact in the folder) + 140,000 raw bytes of "
                  "helper.py, train_gpt.py): 16,005,260 > 16,000,000; it fits only as the log counted it "
                  "(compressed code): a counting convention") in levels(folder, "train_seed0.log")


def test_missing_pieces_and_non_logs(tmp_path, capsys):
    folder = upstream_folder(tmp_path)
    (folder / "train_gpt.py").unlink()
    sub = json.loads((folder / "submission.json").read_text())
    del sub["github_id"]
    (folder / "submission.json").write_text(json.dumps(sub))
    (folder / "ttt").mkdir()
    (folder / "ttt" / "summary.log").write_text('=== seed=42 result ===\n{\n  "post_ttt_val_bpb": 1.064\n}\n')
    checks = check_folder(folder)
    assert Check(FAIL, "train_gpt.py", "missing") in checks
    assert Check(FAIL, "submission.json", "missing field 'github_id'") in checks
    assert Check(WARN, "ttt/summary.log", "not a run log (no step, score or config lines): not read") in checks
    assert main(["--validate", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"submit: {tmp_path / 'nope'}: not a folder"


def test_a_rerun_of_a_seed_and_a_mislabelled_log(tmp_path):
    folder = upstream_folder(tmp_path)
    (folder / "train_seed42_rerun.log").write_text(phased_log(42, 1.0608))
    (folder / "train_seed0.log").write_text(phased_log(1337, SEEDS[0]))  # named seed 0, ran with seed 1337
    assert levels(folder, "train_seed42_rerun.log")[0] == (
        WARN, "claimed quantized_ttt_phased val_bpb 1.0608, not submission.json seed 42's 1.05989454, which another "
              "log of that seed has (a rerun or a superseded run)")
    assert levels(folder, "train_seed0.log")[0] == (
        WARN, "the file name says seed 0, the log's own hyperparameters say seed 1337")
    assert [c for c in check_folder(folder) if c.level == FAIL] == []


def test_march_baseline_layout(tmp_path):
    folder = tmp_path / "2026-03-17_NaiveBaseline"
    folder.mkdir()
    code = "import torch\nprint('step:1/2 train_loss:0.5')\n"
    (folder / "train_gpt.py").write_text(code)
    (folder / "README.md").write_text("# baseline\n")
    log = code + "=" * 100 + "\n" + "\n".join([
        "step:13780/20000 train_loss:2.0606 train_time:600038ms step_avg:43.54ms",
        "stopping_early: wallclock_cap train_time:600038ms step:13780/20000",
        "Serialized model int8+zlib: 15815847 bytes", f"Code size: {len(code)} bytes",
        "Total submission size int8+zlib: 15863489 bytes",
        "final_int8_zlib_roundtrip val_loss:2.0727 val_bpb:1.2244 eval_time:1406ms",
        "final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570"])
    (folder / "train.log").write_text(log + "\n")
    (folder / "submission.json").write_text(json.dumps({"author": "A", "github_id": "a", "name": "Naive Baseline",
                                                        "val_bpb": 1.2243657, "bytes_total": 15863489}))
    summary = parse_run_log(str(folder / "train.log"))
    assert summary.final_roundtrip() == (2.07269931, 1.2243657) and summary.get("total_bytes") == 15863489
    assert [s["step"] for s in summary.steps] == [13780] and summary.seconds("final_int8_zlib_roundtrip.eval_time") == 1.406
    got = levels(folder, "train.log")
    assert got[0] == (PASS, "claimed final_int8_zlib_roundtrip_exact val_bpb 1.2243657 = submission.json seed None "
                            "val_bpb 1.2243657")  # one log, no seed_results: the folder's own val_bpb
    assert (WARN, "train 600.038s > 600s by under 1s: the wallclock cap stopped it after the step that crossed "
                  "(rounding)") in got  # upstream's own baseline ran 38 ms over
    assert validate(folder) == []
    (folder / "train.log").write_text(log.replace("15863489", "16000001") + "\n")
    assert validate(folder) == ["FAIL train.log: size as the log counted it (artifact + raw code): 16,000,001 > 16,000,000"]


def test_logged_source_is_not_read_as_results(tmp_path):
    summary = parse_run_log(str(fake_run(tmp_path, 3, 2.5, 1.1) / "logs" / "seed3.txt"))
    assert [s["step"] for s in summary.steps] == [1, 6000]
    assert summary.meta == {"code": "train_gpt.py", "sha256": hashlib.sha256(CODE.encode()).hexdigest()[:16],
                            "bytes": str(len(CODE)), "recipe": "default", "git": "0123abc", "python": "3.11.7",
                            "torch": "2.13.0", "cuda": "12.8"}
    assert summary.final_roundtrip() == (2.5, 1.1) and summary.seconds("stopped.train_time") == 590.0


# Reference values from scipy.stats.t.cdf / scipy.special.betainc / scipy.stats.ttest_ind(equal_var=False).
def test_incomplete_beta_and_t_cdf_known_values():
    assert betainc(2, 3, 0.5) == pytest.approx(11 / 16, abs=1e-14)
    assert betainc(1, 4, 0.3) == pytest.approx(1 - 0.7 ** 4, abs=1e-14)
    assert betainc(2.5, 1.5, 0.3) == pytest.approx(0.08894372317066562, abs=1e-12)
    assert student_t_cdf(2.0, 10) == pytest.approx(0.9633059826146299, abs=1e-12)
    assert student_t_cdf(-1.5, 3.7) == pytest.approx(0.10679908460100675, abs=1e-12)
    assert student_t_cdf(0.3, 1) == pytest.approx(0.5 + math.atan(0.3) / math.pi, abs=1e-12)  # Cauchy
    assert student_t_cdf(0.0, 7) == 0.5


def test_welch_against_the_record_bar():
    ours, base = [1.0612, 1.0608, 1.0615], [1.0700, 1.0690, 1.0710, 1.0695]
    w = welch_test(ours, base)
    assert w.improvement == pytest.approx(4.2795 / 4 - 3.1835 / 3, abs=1e-12)
    assert (w.t, w.df, w.p) == (pytest.approx(7.845750271752151), pytest.approx(4.186343471379197),
                                pytest.approx(0.0005894409937160276, rel=1e-8))
    assert w.is_record
    assert not welch_test(ours, [x - 0.004 for x in base]).is_record  # 0.0046 nats: under the margin


def test_against_a_baseline_file_reports_nats(tmp_path, capsys):
    folder = built(tmp_path)
    (tmp_path / "base.txt").write_text("# per-seed val_bpb\n1.2\n1.21\n1.19\n")
    assert main(["--validate", str(folder), "--against", str(tmp_path / "base.txt")]) == 0
    out = capsys.readouterr().out
    ratio = 2.51 / 1.11  # our nats per bpb
    assert f"improvement {1.2 * ratio - 2.51:+.5f} nats" in out and "meets the record bar" in out


def test_folder_figure_without_per_seed_results(tmp_path):
    folder = upstream_folder(tmp_path)
    sub = json.loads((folder / "submission.json").read_text())
    del sub["seed_results"]
    (folder / "submission.json").write_text(json.dumps(sub))  # val_bpb 1.06107587: the mean of the three claims
    assert Check(PASS, "submission.json", "val_bpb 1.06107587 (no per-seed results) = the mean 1.06107587 of the 3 "
                                          "logs' claims") in check_folder(folder)
    sub["val_bpb"] = 1.07
    (folder / "submission.json").write_text(json.dumps(sub))
    assert Check(WARN, "submission.json", "val_bpb 1.07 (no per-seed results) is neither a log's claim nor their mean "
                                          "1.06107587") in check_folder(folder)


# ---- tracks: record (600 s + 600 s), non-record and unlimited (times reported); 16,000,000 bytes on all

@pytest.mark.parametrize("spelling, name", [
    ("10min_16mb", "record"), ("track_10min_16mb", "record"), ("record", "record"),
    ("non-record-16mb", "non-record"), ("non_record_16mb", "non-record"), ("track_non_record_16mb", "non-record"),
    ("Non-Record", "non-record"), ("non-record-unlimited-compute-16mb", "unlimited"), ("unlimited", "unlimited"),
    ("16mb", None), ("", None)])
def test_track_spellings(spelling, name):
    assert (track_named(spelling) and track_named(spelling).name) == name


def set_track(folder: Path, track) -> None:
    sub = json.loads((folder / "submission.json").read_text())
    sub.pop("track", None) if track is None else sub.update(track=track)
    (folder / "submission.json").write_text(json.dumps(sub))


FOUR_HOURS = dict(train_ms=14_400_039, eval_ms=700_000)  # the 2026-03-18 4-hour baseline's train_time, a long eval


@pytest.mark.parametrize("spelling, name", [("non-record-16mb", "non-record"), ("non_record_16mb", "non-record"),
                                            ("non-record-unlimited-compute-16mb", "unlimited")])
def test_times_are_reported_never_failed_off_the_record_track(tmp_path, spelling, name):
    folder = upstream_folder(tmp_path, **FOUR_HOURS)
    set_track(folder, spelling)
    checks = check_folder(folder)
    assert [c.line() for c in checks if c.level == FAIL] == []
    assert Check(PASS, "submission.json", f"track {spelling!r}: {name} (16,000,000 bytes; train and eval times "
                                          "reported, no limit)") in checks
    assert (PASS, f"train 14400.0s: reported, no limit on the {name} track") in levels(folder, "train_seed0.log")
    assert (PASS, f"eval 700.0s: reported, no limit on the {name} track") in levels(folder, "train_seed0.log")
    # the size limit stays: 16,021,999 bytes as the log counted them FAILs on every track
    (folder / "train_seed0.log").write_text(phased_log(0, SEEDS[0], model=15_990_000, **FOUR_HOURS))
    assert validate(folder)[0] == ("FAIL train_seed0.log: size as the log counted it (artifact + compressed code): "
                                   "16,021,999 > 16,000,000")


def test_record_track_fails_the_same_times(tmp_path):
    folder = upstream_folder(tmp_path, **FOUR_HOURS)
    set_track(folder, "10min_16mb")
    assert (FAIL, "training took 14400.0s > 600s") in levels(folder, "train_seed0.log")
    assert (FAIL, "evaluation took 700.0s > 600s") in levels(folder, "train_seed0.log")


def test_track_from_the_field_then_track_option_then_the_records_folder(tmp_path, capsys):
    folder = upstream_folder(tmp_path, **FOUR_HOURS)
    set_track(folder, "6hour_16mb")  # a spelling no track has
    assert Check(FAIL, "submission.json", "track '6hour_16mb' names no track ('10min_16mb', 'non-record-16mb', "
                                          "'non-record-unlimited-compute-16mb'); checked as record") in check_folder(folder)
    set_track(folder, "non-record-16mb")
    assert Check(FAIL, "submission.json", "track 'non-record-16mb' is the non-record track, not --track record") \
        in check_folder(folder, TRACKS["record"])
    set_track(folder, None)
    assert validate(folder, TRACKS["unlimited"]) == []
    assert main(["--validate", str(folder), "--track", "non_record_16mb"]) == 0
    assert "track non-record (16,000,000 bytes; train and eval times reported, no limit): no track field, from " \
           "--track" in capsys.readouterr().out
    assert any("training took 14400.0s" in p for p in validate(folder))  # no field, no option: the record track
    placed = tmp_path / "records" / "track_non_record_16mb"
    placed.mkdir(parents=True)
    folder = folder.rename(placed / folder.name)
    assert validate(folder) == []  # upstream's own non-record folders without a track field
    with pytest.raises(SystemExit):
        main(["--validate", str(folder), "--track", "fortnight"])
    assert "'fortnight' names no track" in capsys.readouterr().err


def test_build_a_non_record_folder(tmp_path, capsys):
    runs = [fake_run(tmp_path, s, 2.5 + s / 100, 1.1 + s / 100, train_ms=14_400_000, eval_s=900.0,
                     prequant=(2.4 + s / 100, 1.05 + s / 100)) for s in (1, 2)]
    assert submit(tmp_path, runs) == 1  # the record track refuses both times
    err = capsys.readouterr().err
    assert "training took 14400.0s > 600s (record track)" in err and "evaluation took 900.0s > 600s" in err
    assert submit(tmp_path, runs, "--track", "non-record") == 0
    folder = tmp_path / "subs" / "records" / "track_non_record_16mb" / "2026-05-01_Test"
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["track"] == "non-record-16mb" and set(FIELDS) | set(NON_RECORD_FIELDS) <= set(sub)
    assert {f: sub[f] for f in NON_RECORD_FIELDS} == {
        "pre_quant_val_loss": pytest.approx(2.415), "pre_quant_val_bpb": pytest.approx(1.065), "step_stop": 6000,
        "wallclock_seconds": 14400.0, "bytes_total": 5000 + len(CODE), "bytes_model_compressed": 5000,
        "bytes_code": len(CODE)}
    assert "| 1 | 2.51000 | 1.11000 | 5000 |" in (folder / "README.md").read_text()
    assert validate(folder) == []
    del sub["wallclock_seconds"]
    (folder / "submission.json").write_text(json.dumps(sub))
    assert validate(folder) == ["FAIL submission.json: missing field 'wallclock_seconds'"]
    assert submit(tmp_path, runs, "--track", "unlimited", "--name", "Long") == 0
    sub = json.loads((folder.parent / "2026-05-01_Long" / "submission.json").read_text())
    assert sub["track"] == "non-record-unlimited-compute-16mb" and sub["wallclock_seconds"] == 14400.0


def upstream_log(lines: list[str]) -> str:
    return "\n".join(["Hyperparameters:", "  seed: 1337"] + lines) + "\n"


# A run that stopped on its wallclock cap and logged only periodic val lines (2026-03-23_DGAttention's shape).
CAPPED_PREQUANT_ONLY = ["step:2900/20000 train_loss:1.9412 train_time:584177ms step_avg:201.44ms",
                        "step:2979/20000 val_loss:2.0089 val_bpb:1.1898 train_time:600055ms step_avg:201.43ms",
                        "stopping_early: wallclock_cap train_time:600055ms step:2979/20000",
                        "Serialized model rdquant+zstd: 15558180 bytes", "Code size: 80288 bytes",
                        "Total submission size rdquant+zstd: 15638468 bytes"]


@pytest.mark.parametrize("lines, said", [
    (CAPPED_PREQUANT_ONLY, "no artifact score: the claimed 1.1898 is the pre-quantisation val; training reached its "
                           "end: wallclock stop at step 2979"),
    ([ln.replace("/20000", "/2979") for ln in CAPPED_PREQUANT_ONLY if not ln.startswith("stopping")],
     "no artifact score: the claimed 1.1898 is the pre-quantisation val; training reached its end: last step "
     "2979/2979"),
    (CAPPED_PREQUANT_ONLY[:2], "no artifact score: the claimed 1.1898 is the pre-quantisation val; the run did not "
                              "finish"),  # cut off mid-run: no stop line, step 2979 of 20000
    (CAPPED_PREQUANT_ONLY[:1], "no score of the artifact (round trip, sliding or TTT line): the run did not finish"),
])
def test_a_pre_quantisation_claim_is_labelled_and_a_run_that_trained_to_its_end_is_not_unfinished(tmp_path, lines,
                                                                                                  said):
    folder = tmp_path / "records" / "track_non_record_16mb" / "2026-03-23_Synthetic"
    folder.mkdir(parents=True)
    (folder / "train_gpt.py").write_text("#" * 80287 + "\n")
    (folder / "README.md").write_text("# synthetic\n")
    (folder / "train.log").write_text(upstream_log(lines))
    (folder / "submission.json").write_text(json.dumps({"author": "A", "github_id": "a", "name": "S", "val_bpb": 1.1898,
                                                        "track": "non-record-16mb"}))
    assert (FAIL, said) in levels(folder, "train.log")
    assert validate(folder) == [f"FAIL train.log: {said}"]  # the claim, not the track or the time


def test_off_the_record_track_other_names_of_the_code_and_submission_files_are_warnings(tmp_path):
    folder = upstream_folder(tmp_path, **FOUR_HOURS)
    set_track(folder, None)
    (folder / "train_gpt.py").rename(folder / "train_gpt_legendre.py")
    (folder / "submission.json").rename(folder / "submission_binary.json")
    placed = tmp_path / "records" / "track_non_record_16mb"
    placed.mkdir(parents=True)
    folder = folder.rename(placed / folder.name)
    checks = check_folder(folder)
    assert [c.line() for c in checks if c.level == FAIL] == []
    assert checks[:2] == [
        Check(WARN, "submission.json", "missing; the folder ships submission_binary.json instead (a name upstream "
                                       "accepted on the non-record track)"),
        Check(WARN, "train_gpt.py", "missing; the folder ships train_gpt_legendre.py instead (a name upstream "
                                    "accepted on the non-record track)")]
    assert (PASS, "claimed quantized_ttt_phased val_bpb 1.06124613 = submission.json seed 0 val_bpb 1.06124613") in \
        levels(folder, "train_seed0.log")  # read from submission_binary.json
    # the record track takes the names as they are
    assert [c.line() for c in check_folder(folder, TRACKS["record"]) if c.level == FAIL] == [
        "FAIL submission.json: missing", "FAIL train_gpt.py: missing"]
