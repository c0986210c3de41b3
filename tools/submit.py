"""Build and validate a records folder (`<YYYY-MM-DD>_<Name>/`) from one run directory per seed.

python tools/submit.py RUN_DIR [RUN_DIR ...] --name NAME --author A --github-id G [--blurb TEXT]
                       [--track record|non-record|unlimited] [--against FILE_OR_DIR] [--out submissions]
                       [--date YYYY-MM-DD] [--hardware TEXT]
python tools/submit.py --validate DIR [--track ...] [--against FILE_OR_DIR]

Tracks (golf/budget.py TRACKS): 16,000,000 bytes on every track; 600 s of training and 600 s of evaluation
only on the record track (`10min_16mb`); on `non-record` (`non-record-16mb`) and `unlimited`
(`non-record-unlimited-compute-16mb`) both times are reported, never a limit. The builder writes
OUT/records/<track folder>/<date>_<name>/ (track_10min_16mb, or track_non_record_16mb for both others).

A RUN_DIR holds the exact train_gpt.py that ran, final_model.golf and logs/<run_id>.txt. Refused, one
line per problem and exit 1: different train_gpt.py across runs, total bytes (artifact + code, measured
from the files and equal to the log's total_bytes) over 16,000,000, training or evaluation over the
track's limit, a log without its final round trip.

--validate checks a records folder, ours or upstream's layout (logs as *.log / *.txt, also in subfolders),
one line per check, `PASS|WARN|FAIL <file>: <figure> <op> <limit>` (--json: one object per line); exit 1
on any FAIL, 2 when DIR is not a folder. The track is submission.json's `track` (any upstream spelling),
else --track, else the records folder DIR sits in, else the record track. Per log: its claimed score
(golf/logparse.py's order) against submission.json's val_bpb for its seed; train and eval seconds against
the track's limits; size two ways, each figure counted once: as the log counted it (its total: artifact +
compressed or raw code) and strictly (the artifact's bytes + the raw bytes of every .py shipped). FAIL: a
score in no line of the log (a pre-quantisation score alone is "no artifact score"), a missing file or
required field, a time over a limit of the track, a size over the limit as the log counted it. WARN:
counting conventions and rounding (a strict size over only because the log counted compressed code, a
capped run ending under a second past 600 s, a score found in a lower-ranked line or in another log of the
seed); off the record track, a code file or submission*.json named otherwise (as upstream accepted there).
--against compares with a baseline (a submission.json, a records folder, or a text file
of per-seed val_bpb): improvement in nats and a one-sided Welch t-test against the 0.005-nat bar.
"""

import argparse
import datetime
import hashlib
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from golf.budget import SIZE_LIMIT_BYTES, TRACKS, Track, track_named  # noqa: E402
from golf.logparse import PREQUANT, PREQUANT_CLAIM, RunSummary, parse_run_log  # noqa: E402

LIMIT_BYTES = SIZE_LIMIT_BYTES
RECORD = TRACKS["record"]
RECORD_MARGIN_NATS = 0.005  # a record must beat the frontier by this much ...
RECORD_P = 0.01  # ... at this significance
FIELDS = ("author", "github_id", "name", "blurb", "date", "track", "val_loss", "val_bpb", "val_loss_std",
          "val_bpb_std", "seeds", "seed_results", "hardware", "pytorch_version", "cuda_version")
SEED_FIELDS = ("val_loss", "val_bpb", "artifact_bytes", "steps", "step_avg_ms", "eval_time_s")
# What upstream's track_non_record_16mb folders add (2026-03-18 4h baseline, 2026-03-31 LegendreGPT, ...): the
# largest seed's figures where they differ per seed, the mean of the pre-quantisation scores.
NON_RECORD_FIELDS = ("pre_quant_val_loss", "pre_quant_val_bpb", "step_stop", "wallclock_seconds", "bytes_total",
                     "bytes_model_compressed", "bytes_code")


# ---------------------------------------------------------------- statistics (math only)

def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b), by Lentz's continued fraction (Numerical Recipes 6.4)."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x={x} outside [0, 1]")
    if x in (0.0, 1.0):
        return x
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below the mean: use the symmetry
        return 1.0 - betainc(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * f / a


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom (df may be fractional, as Welch's is)."""
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


@dataclass(frozen=True)
class Welch:
    improvement: float  # mean(baseline) - mean(ours), nats per token: positive is better
    t: float
    df: float
    p: float  # one-sided: P(improvement <= margin) under the t approximation

    @property
    def is_record(self) -> bool:
        return self.improvement >= RECORD_MARGIN_NATS and self.p < RECORD_P


def welch_test(ours: list[float], baseline: list[float], margin: float = RECORD_MARGIN_NATS) -> Welch:
    """One-sided Welch t-test of H0: mean(baseline) - mean(ours) <= margin (losses: lower is better)."""
    if len(ours) < 2 or len(baseline) < 2:
        raise ValueError("Welch's test needs at least 2 values per side")
    d = statistics.fmean(baseline) - statistics.fmean(ours)
    va, vb = statistics.variance(ours) / len(ours), statistics.variance(baseline) / len(baseline)
    se = math.sqrt(va + vb)
    if se == 0:
        return Welch(d, math.copysign(math.inf, d - margin), math.inf, 0.0 if d > margin else 1.0)
    df = (va + vb) ** 2 / (va ** 2 / (len(ours) - 1) + vb ** 2 / (len(baseline) - 1))
    t = (d - margin) / se
    return Welch(d, t, df, 1.0 - student_t_cdf(t, df))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); std 0 for a single seed."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


# ---------------------------------------------------------------- runs

@dataclass
class SeedRun:
    run_dir: Path
    seed: int
    log_path: Path
    log: RunSummary
    code_sha256: str
    code_bytes: int
    artifact_bytes: int


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def unfinished_text(summary: RunSummary) -> str:
    """Why a log without an artifact score has none: its training reached its end (it says how), or not."""
    end = summary.training_end()
    return f"training reached its end: {end}" if end else "the run did not finish"


def run_problems(summary: RunSummary, where: str, code_sha: str | None, total_bytes: int | None,
                 track: Track) -> list[str]:
    """What a single log breaks: round trip, the track's time limits, byte budget, and its code hash."""
    problems = []
    if summary.final_roundtrip() is None:
        problems.append(f"{where}: no final_roundtrip val_loss/val_bpb line: no artifact score; "
                        f"{unfinished_text(summary)}")
    train_s = max([summary.seconds("stopped.train_time", 0.0) or 0.0]
                  + [s["train_time_ms"] / 1000 for s in summary.steps if s.get("train_time_ms") is not None])
    if track.train_seconds is not None and train_s > track.train_seconds:
        problems.append(f"{where}: training took {train_s:.1f}s > {track.train_seconds:.0f}s ({track.name} track)")
    eval_s = summary.seconds("eval_time")
    if track.eval_seconds is not None and eval_s is not None and eval_s > track.eval_seconds:
        problems.append(f"{where}: evaluation took {eval_s:.1f}s > {track.eval_seconds:.0f}s ({track.name} track)")
    logged_total = summary.get("total_bytes")
    if total_bytes is not None and logged_total is not None and int(logged_total) != total_bytes:
        problems.append(f"{where}: the log says total_bytes:{int(logged_total)} but the files add up to {total_bytes}")
    total = total_bytes if total_bytes is not None else logged_total
    if total is not None and total > LIMIT_BYTES:
        problems.append(f"{where}: total {int(total)} bytes > {LIMIT_BYTES}")
    logged_sha = summary.meta.get("sha256")
    if code_sha and logged_sha and not code_sha.startswith(logged_sha):
        problems.append(f"{where}: the log ran code sha256:{logged_sha}, not this train_gpt.py ({code_sha[:16]})")
    return problems


def read_run(run_dir: Path, track: Track) -> tuple[SeedRun | None, list[str]]:
    code, artifact = run_dir / "train_gpt.py", run_dir / "final_model.golf"
    logs = sorted((run_dir / "logs").glob("*.txt"))
    missing = [str(p) for p in (code, artifact) if not p.is_file()]
    if missing or len(logs) != 1:
        problems = [f"{p}: missing" for p in missing]
        if len(logs) != 1:
            problems.append(f"{run_dir / 'logs'}: expected exactly one <run_id>.txt, found {len(logs)}")
        return None, problems
    summary = parse_run_log(str(logs[0]))
    try:
        seed = int(json.loads(summary.config or "{}")["seed"])
    except (KeyError, ValueError, TypeError):
        return None, [f"{logs[0]}: no config line with a seed"]
    run = SeedRun(run_dir, seed, logs[0], summary, sha256(code), code.stat().st_size, artifact.stat().st_size)
    return run, run_problems(summary, str(logs[0]), run.code_sha256, run.artifact_bytes + run.code_bytes, track)


def seed_result(run: SeedRun) -> dict:
    val_loss, val_bpb = run.log.claimed_score()
    last = run.log.steps[-1] if run.log.steps else {}
    return {"val_loss": val_loss, "val_bpb": val_bpb, "artifact_bytes": run.artifact_bytes,
            "steps": last.get("step"), "step_avg_ms": last.get("step_avg_ms"),
            "eval_time_s": run.log.seconds("eval_time")}


def non_record_fields(runs: list[SeedRun]) -> dict:
    """NON_RECORD_FIELDS of a multi-seed submission: the largest seed's steps, seconds and bytes (the figures a
    reader checks against a limit), the mean pre-quantisation score (None when a log lacks its `prequant` line)."""
    pre = [r.log.best((PREQUANT,)) for r in runs]
    mean = (lambda key: None if None in pre else statistics.fmean(p[key] for p in pre))
    return {"pre_quant_val_loss": mean("val_loss"), "pre_quant_val_bpb": mean("val_bpb"),
            "step_stop": max(r.log.final_step() or 0 for r in runs),
            "wallclock_seconds": max(r.log.train_seconds() or 0.0 for r in runs),
            "bytes_total": max(r.artifact_bytes for r in runs) + runs[0].code_bytes,
            "bytes_model_compressed": max(r.artifact_bytes for r in runs), "bytes_code": runs[0].code_bytes}


# ---------------------------------------------------------------- baseline

def baseline_losses(path: Path, nats_per_bpb: float | None) -> list[float]:
    """Per-seed val_loss (nats) of a baseline: submission.json / records folder, or a text file of
    per-seed val_bpb, turned into nats with our tokens' nats-per-bpb ratio (same val set and tokenizer)."""
    if path.is_dir():
        path = path / "submission.json"
    if path.suffix == ".json":
        sub = json.loads(path.read_text())
        return [float(r["val_loss"]) for _, r in sorted(sub["seed_results"].items())]
    bpbs = [float(ln.split()[0]) for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if nats_per_bpb is None:
        raise ValueError(f"{path}: per-seed BPBs need our val_loss/val_bpb ratio to become nats")
    return [b * nats_per_bpb for b in bpbs]


def comparison(ours: dict, against: Path) -> tuple[str, Welch]:
    losses = [r["val_loss"] for _, r in sorted(ours["seed_results"].items())]
    ratio = ours["val_loss"] / ours["val_bpb"]
    test = welch_test(losses, baseline_losses(against, ratio))
    verdict = "meets" if test.is_record else "does not meet"
    text = (f"against {against}: improvement {test.improvement:+.5f} nats, one-sided Welch t={test.t:.3f} "
            f"df={test.df:.2f} p={test.p:.2g} vs H0 improvement <= {RECORD_MARGIN_NATS}: {verdict} the record "
            f"bar ({RECORD_MARGIN_NATS} nats at p < {RECORD_P})")
    return text, test


# ---------------------------------------------------------------- building

def readme(sub: dict, runs: list[SeedRun], compare: str | None, track: Track) -> str:
    meta = runs[0].log.meta
    train_s = {str(r.seed): r.log.train_seconds() for r in runs}
    rows = "\n".join(
        f"| {s} | {r['val_loss']:.5f} | {r['val_bpb']:.5f} | {r['artifact_bytes']} | "
        f"{r['artifact_bytes'] + runs[0].code_bytes} | {r['steps']} | {r['step_avg_ms']} | {train_s[s]} | "
        f"{r['eval_time_s']} |" for s, r in sorted(sub["seed_results"].items(), key=lambda kv: int(kv[0])))
    config = runs[0].log.config or "{}"
    return f"""# {sub['name']}

{sub['blurb']}

Author: {sub['author']} (@{sub['github_id']}). Track: {sub['track']} (limits: {track.limits()}).
Hardware: {sub['hardware']}. PyTorch {sub['pytorch_version']}, CUDA {sub['cuda_version']}.

## Results (round trip: the artifact as written, reloaded and evaluated)
| seed | val_loss | val_bpb | artifact bytes | total bytes | steps | step_avg ms | train s | eval s |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
{rows}

Mean over {len(runs)} seeds: val_loss {sub['val_loss']:.5f} ± {sub['val_loss_std']:.5f}, val_bpb {sub['val_bpb']:.5f} ± {sub['val_bpb_std']:.5f} (sample std).
{compare + chr(10) if compare else ''}
## Recipe
`train_gpt.py` ({runs[0].code_bytes} bytes, sha256 {runs[0].code_sha256[:16]}) is the packed golf recipe
`{meta.get('recipe', 'unknown')}` at commit `{meta.get('git', 'unknown')}`. Run with
`torchrun --standalone --nproc_per_node=8 train_gpt.py` (SEED=<seed>). Config of seed {runs[0].seed}:

```json
{json.dumps(json.loads(config), indent=1, sort_keys=True)}
```
"""


def build(run_dirs: list[Path], args) -> tuple[Path | None, list[str]]:
    track = TRACKS[args.track]
    runs, problems = [], []
    for d in run_dirs:
        run, found = read_run(d, track)
        problems += found
        if run:
            runs.append(run)
    if len({r.code_sha256 for r in runs}) > 1:
        problems.append("train_gpt.py differs between runs: " + ", ".join(
            f"{r.run_dir}: {r.code_sha256[:16]}" for r in runs))
    seeds = [r.seed for r in runs]
    if len(set(seeds)) != len(seeds):
        problems.append(f"seeds repeat across runs: {seeds}")
    if problems:
        return None, problems
    runs.sort(key=lambda r: r.seed)
    results = {str(r.seed): seed_result(r) for r in runs}
    loss, loss_std = mean_std([r["val_loss"] for r in results.values()])
    bpb, bpb_std = mean_std([r["val_bpb"] for r in results.values()])
    meta = runs[0].log.meta
    sub = {"author": args.author, "github_id": args.github_id, "name": args.name, "blurb": args.blurb,
           "date": args.date, "track": track.spelling, "val_loss": loss, "val_bpb": bpb, "val_loss_std": loss_std,
           "val_bpb_std": bpb_std, "seeds": [r.seed for r in runs], "seed_results": results,
           "hardware": args.hardware, "pytorch_version": meta.get("torch", "unknown"),
           "cuda_version": meta.get("cuda", "unknown")}
    if track != RECORD:
        sub.update(non_record_fields(runs))
    compare = comparison(sub, Path(args.against))[0] if args.against else None
    folder = Path(args.out) / "records" / track.folder / f"{args.date}_{args.name}"
    if folder.exists():
        return None, [f"{folder}: already exists; remove it or choose another --name"]
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    shutil.copyfile(runs[0].run_dir / "train_gpt.py", tmp / "train_gpt.py")
    for r in runs:
        shutil.copyfile(r.log_path, tmp / f"train_seed{r.seed}.log")
    (tmp / "submission.json").write_text(json.dumps(sub, indent=2) + "\n")
    (tmp / "README.md").write_text(readme(sub, runs, compare, track))
    os.replace(tmp, folder)
    return folder, []


# ---------------------------------------------------------------- validating

FAIL, WARN, PASS = "FAIL", "WARN", "PASS"
UPSTREAM_REQUIRED = ("author", "github_id", "name", "val_bpb")  # upstream README: name, GitHub ID, val_bpb
NOT_LOGS = {"requirements.txt"}
SEED_IN_NAME = re.compile(r"(?:seed_?|log_|^train)(\d+)")  # train_seed42.log, seed_42.log, ternary_log_7.txt, train0.txt
# A run stopped by its wallclock cap ends after the step that crossed it: merged upstream records end
# 0.008-0.137 s over 600 s (their stopping_early lines). Over by more, or with no cap line, is a FAIL.
CAP_OVERSHOOT_S = 1.0
ARTIFACT_GLOBS = ("final_model*.ptz", "final_model*.golf", "final_model*.pt")


@dataclass(frozen=True)
class Check:
    level: str  # FAIL: the folder breaks a rule; WARN: a counting convention or rounding worth knowing; PASS
    where: str
    text: str

    def line(self) -> str:
        return f"{self.level} {self.where}: {self.text}"


def decimals(value: float) -> int:
    text = repr(float(value))
    return len(text.split(".")[1]) if "." in text and "e" not in text else 8


def same_score(reported: float, logged: float) -> bool:
    """The submission's figure is the log's, rounded to the digits the submission wrote."""
    return abs(reported - logged) <= 0.5 * 10 ** -decimals(reported) + 1e-12


def folder_logs(folder: Path) -> list[Path]:
    """The train logs of a records folder: *.log and *.txt, in it or below it (upstream puts some in logs/)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".log", ".txt") and p.name not in NOT_LOGS)


def seed_of(path: Path, summary: RunSummary) -> tuple[int | None, str | None]:
    """(seed, a note when the file name and the log's own seed disagree); the name decides, as
    submission.json's seed_results are keyed by what the submitter named the logs."""
    m = SEED_IN_NAME.search(path.stem)
    named, logged = (int(m.group(1)) if m else None), summary.seed()
    if named is not None and logged is not None and named != logged:
        return named, f"the file name says seed {named}, the log's own hyperparameters say seed {logged}"
    return (named if named is not None else logged), None


def code_rule(summary: RunSummary) -> str:
    line = summary.size_lines.get("code_bytes", "")
    if line.startswith("Code size (compressed)"):
        return "compressed code"
    return "raw code" if line else "no code size logged"


def shipped_artifact(folder: Path) -> Path | None:
    found = [p for pattern in ARTIFACT_GLOBS for p in sorted(folder.glob(pattern))]
    return found[0] if found else None


def time_checks(summary: RunSummary, where: str, track: Track) -> list[Check]:
    """Train and eval seconds against the track's limits; where it has none, reported as they are."""
    checks = []
    train_s, eval_s = summary.train_seconds(), summary.eval_seconds()
    if train_s is None:
        checks.append(Check(WARN, where, "train time: not logged"))
    elif track.train_seconds is None:
        checks.append(Check(PASS, where, f"train {train_s:.1f}s: reported, no limit on the {track.name} track"))
    elif train_s <= track.train_seconds:
        checks.append(Check(PASS, where, f"train {train_s:.1f}s <= {track.train_seconds:.0f}s"))
    else:
        limit = track.train_seconds
        capped = summary.get("stopping_early.train_time") is not None or summary.get("stopped.train_time") is not None
        if capped and train_s - limit <= CAP_OVERSHOOT_S:
            checks.append(Check(WARN, where, f"train {train_s:.3f}s > {limit:.0f}s by under {CAP_OVERSHOOT_S:.0f}s: "
                                             "the wallclock cap stopped it after the step that crossed (rounding)"))
        else:
            checks.append(Check(FAIL, where, f"training took {train_s:.1f}s > {limit:.0f}s"))
    if eval_s is None:
        return checks
    if track.eval_seconds is None:
        checks.append(Check(PASS, where, f"eval {eval_s:.1f}s: reported, no limit on the {track.name} track"))
    elif eval_s <= track.eval_seconds:
        checks.append(Check(PASS, where, f"eval {eval_s:.1f}s <= {track.eval_seconds:.0f}s"))
    else:
        checks.append(Check(FAIL, where, f"evaluation took {eval_s:.1f}s > {track.eval_seconds:.0f}s"))
    return checks


def size_checks(summary: RunSummary, where: str, code_files: list[Path], artifact: Path | None,
                code: Path | None) -> list[Check]:
    """Size two ways, each figure counted once: as the log counted it (its total: artifact + its code bytes,
    compressed or raw), and strictly (the artifact's bytes + the raw bytes of every code file shipped); `code`:
    the folder's train_gpt.py (or the one file it ships instead)."""
    checks = []
    fallback = summary.size_fallback()
    if fallback:  # golf's SIZE_FALLBACK: the scores are of the artifact written without AWQ-lite
        checks.append(Check(WARN, where, f"size_fallback: the artifact ({fallback[0]:,} B) did not fit with the code "
                                         f"and was rewritten without AWQ-lite's groups ({fallback[1]:,} B): the "
                                         f"logged scores are that artifact's"))
    logged_art, logged_code, logged_total = (summary.get(k) for k in ("artifact_bytes", "code_bytes", "total_bytes"))
    if logged_total is None and logged_art is not None and logged_code is not None:
        logged_total = logged_art + logged_code
    rule = code_rule(summary)
    fits_as_logged = None
    if logged_total is not None:
        fits_as_logged = logged_total <= LIMIT_BYTES
        checks.append(Check(PASS if fits_as_logged else FAIL, where,
                            f"size as the log counted it (artifact + {rule}): {int(logged_total):,} "
                            f"{'<=' if fits_as_logged else '>'} {LIMIT_BYTES:,}"))
    art = artifact.stat().st_size if artifact else logged_art
    source = f"{artifact.name} as shipped" if artifact else "artifact bytes from the log (no artifact in the folder)"
    if art is None or not code_files:
        checks.append(Check(WARN, where, "strict size: unknown (no artifact size logged or shipped, or no code file)"))
        return checks
    code_bytes = sum(p.stat().st_size for p in code_files)
    strict = int(art) + code_bytes
    fits = strict <= LIMIT_BYTES
    text = (f"strict size ({source} + {code_bytes:,} raw bytes of {', '.join(p.name for p in code_files)}): "
            f"{strict:,} {'<=' if fits else '>'} {LIMIT_BYTES:,}")
    if fits:
        checks.append(Check(PASS, where, text))
    elif fits_as_logged:
        checks.append(Check(WARN, where, text + f"; it fits only as the log counted it ({rule}): a counting convention"))
    else:
        checks.append(Check(FAIL, where, text))
    if rule == "raw code" and logged_code is not None and code and int(logged_code) != code.stat().st_size:
        checks.append(Check(WARN, where, f"the log counted {int(logged_code):,} code bytes; the folder's {code.name} "
                                         f"has {code.stat().st_size:,} (not the code that ran, or a wrapper)"))
    return checks


def reported_size_check(where: str, seed: str, art: int, logs: list[RunSummary], ours: bool, code_bytes: int) -> Check:
    """submission.json's per-seed artifact_bytes against the limit, counted once: upstream records often
    report the log's total (artifact + code) there, ours reports the artifact alone."""
    if any(s.get("total_bytes") == art for s in logs):
        total, how = art, "= a log's total (artifact + its code bytes): no code added"
    elif ours or any(s.get("artifact_bytes") == art for s in logs):
        total, how = art + code_bytes, f"+ {code_bytes:,} train_gpt.py bytes"
    else:
        fits = art <= LIMIT_BYTES
        return Check(WARN if fits else FAIL, where, f"seed {seed}: artifact_bytes {art:,} matches no size line of the "
                                                    f"logs (counted as a total: {'<=' if fits else '>'} {LIMIT_BYTES:,})")
    fits = total <= LIMIT_BYTES
    return Check(PASS if fits else FAIL, where,
                 f"seed {seed}: artifact_bytes {art:,} {how} = {total:,} {'<=' if fits else '>'} {LIMIT_BYTES:,}")


def no_artifact_score(summary: RunSummary, seed, reported: float | None) -> str:
    """Why a log has no claim: only a pre-quantisation score (labelled as golf/logparse.py labels it), or none at
    all; and whether its training reached its end."""
    why = unfinished_text(summary)
    shown = summary.reported_claim()
    if shown is None:
        return f"no score of the artifact (round trip, sliding or TTT line): {why}"
    if reported is None or same_score(reported, shown["val_bpb"]):
        return f"{PREQUANT_CLAIM.format(bpb=shown['val_bpb'] if reported is None else reported)}; {why}"
    return (f"no artifact score: the log's only score is the pre-quantisation val {shown['val_bpb']}, and submission.json "
            f"seed {seed} says {reported}; {why}")


def score_checks(summary: RunSummary, where: str, seed, result: dict | None,
                 others: list[tuple[str, int | None, RunSummary]]) -> list[Check]:
    """The log's claim against submission.json's figure for its seed; `others`: (name, seed, summary) of the
    folder's other logs."""
    claim, reported = summary.claimed(), None
    if result is not None and "val_bpb" in result:
        try:
            reported = float(result["val_bpb"])
        except (TypeError, ValueError):
            return [Check(FAIL, where, f"submission.json val_bpb {result['val_bpb']!r} for seed {seed} is not a number")]
    if claim is None:
        return [Check(FAIL, where, no_artifact_score(summary, seed, reported))]
    said = f"claimed {claim['label']} val_bpb {claim['val_bpb']}"
    if reported is None:
        return [Check(WARN, where, f"{said}; submission.json has no per-seed val_bpb for seed {seed} to compare")]
    if same_score(reported, claim["val_bpb"]):
        return [Check(PASS, where, f"{said} = submission.json seed {seed} val_bpb {reported}")]
    other = [s["label"] for s in summary.scores if same_score(reported, s["val_bpb"])]
    if other:
        return [Check(WARN, where, f"{said}, but submission.json seed {seed} says {reported}: the log's {other[-1]} line "
                                   "(the claim order ranks it lower)")]
    having = [(name, s) for name, s, o in others if any(same_score(reported, x["val_bpb"]) for x in o.scores)]
    if any(s == seed for _, s in having):
        return [Check(WARN, where, f"{said}, not submission.json seed {seed}'s {reported}, which another log of that "
                                   "seed has (a rerun or a superseded run)")]
    elsewhere = "".join(f"; {name} (seed {s}) has it" for name, s in having)
    return [Check(FAIL, where, f"submission.json seed {seed} says val_bpb {reported}, which no score line of this log "
                               f"has ({said}){elsewhere}")]


def renamed(folder: Path, name: str, pattern: str, track: Track) -> tuple[Path | None, list[Check]]:
    """The folder's `name`, or off the record track the files matching `pattern` it ships instead (upstream
    accepted train_gpt_legendre.py, train_mamba3_hybrid.py, submission_binary.json, ... in track_non_record_16mb):
    (the one such file or None, a WARN naming them); FAIL missing when there is none, or on the record track."""
    path = folder / name
    if path.is_file():
        return path, []
    instead = sorted(folder.glob(pattern))
    if track == RECORD or not instead:
        return None, [Check(FAIL, name, "missing")]
    return (instead[0] if len(instead) == 1 else None), [Check(WARN, name, (
        f"missing; the folder ships {', '.join(p.name for p in instead)} instead (a name upstream accepted on the "
        f"{track.name} track)"))]


def resolve_track(sub: dict, where: str, given: Track | None, placed: Track | None) -> tuple[Track, Check]:
    """The track a folder is checked against and the line saying which: submission.json's `track` in any upstream
    spelling; without one, --track (`given`), else the records folder it sits in (`placed`), else the record track."""
    said = sub.get("track")
    if said is None:
        track, source = ((given, "--track") if given else (placed, "the records folder it is in") if placed
                         else (RECORD, "the default"))
        return track, Check(PASS, where, f"track {track.name} ({track.limits()}): no track field, from {source}")
    named = track_named(str(said))
    if named is None:
        track = given or placed or RECORD
        known = ", ".join(f"{t.spelling!r}" for t in TRACKS.values())
        return track, Check(FAIL, where, f"track {said!r} names no track ({known}); checked as {track.name}")
    if given is not None and given != named:
        return given, Check(FAIL, where, f"track {said!r} is the {named.name} track, not --track {given.name}")
    return named, Check(PASS, where, f"track {said!r}: {named.name} ({named.limits()})")


def check_folder(folder: Path, given: Track | None = None) -> list[Check]:
    """Every check of a records folder (ours or upstream's layout), one Check per line; `given`: --track."""
    where = "."
    placed = track_named(folder.resolve().parent.name)  # records/track_non_record_16mb/<folder>
    track = given or placed or RECORD  # until submission.json says otherwise
    sub_path, checks = renamed(folder, "submission.json", "submission*.json", track)
    sub, problem = {}, None
    if sub_path is not None:
        try:
            sub = json.loads(sub_path.read_text())
            problem = None if isinstance(sub, dict) else "not a JSON object"
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            problem = f"not JSON ({e})"
    if sub_path is not None and problem is None:
        track, track_line = resolve_track(sub, sub_path.name, given, placed)
    code, found = renamed(folder, "train_gpt.py", "train*.py", track)
    checks += found + ([] if (folder / "README.md").is_file() else [Check(FAIL, "README.md", "missing")])
    if sub_path is None or problem:
        return checks + ([Check(FAIL, sub_path.name, problem)] if problem else [])
    runs = []
    for log_path in folder_logs(folder):
        summary = parse_run_log(str(log_path))
        if not (summary.steps or summary.vals or summary.scores or summary.config_fields):
            checks.append(Check(WARN, str(log_path.relative_to(folder)), "not a run log (no step, score or config lines): not read"))
        else:
            runs.append((log_path, summary))
    ours = any(s.config_fields for _, s in runs)
    required = FIELDS if ours else UPSTREAM_REQUIRED
    checks += [Check(FAIL, sub_path.name, f"missing field {f!r}") for f in required if f not in sub]
    if not ours and [f for f in FIELDS if f not in sub]:
        checks.append(Check(WARN, sub_path.name, "fields golf's builder writes, absent here: "
                                                 + ", ".join(f for f in FIELDS if f not in sub)))
    checks.append(track_line)
    if ours and track != RECORD:
        checks += [Check(FAIL, sub_path.name, f"missing field {f!r}") for f in NON_RECORD_FIELDS if f not in sub]
    if isinstance(sub.get("bytes_total"), int):
        fits = sub["bytes_total"] <= LIMIT_BYTES
        checks.append(Check(PASS if fits else FAIL, sub_path.name,
                            f"bytes_total {sub['bytes_total']:,} {'<=' if fits else '>'} {LIMIT_BYTES:,}"))
    if not runs:
        checks.append(Check(FAIL, where, "no train logs (*.log, *.txt)"))
    seed_results = sub.get("seed_results") if isinstance(sub.get("seed_results"), dict) else {}
    seeds = {}
    for log_path, summary in runs:
        seeds[str(log_path)] = seed_of(log_path, summary)
    artifact = shipped_artifact(folder)
    code_bytes = code.stat().st_size if code else 0
    code_files = sorted(folder.glob("*.py"))  # every code file shipped: the strict size counts them all
    code_sha = sha256(code) if code else None
    for log_path, summary in runs:
        name = str(log_path.relative_to(folder))
        seed, note = seeds[str(log_path)]
        if note:
            checks.append(Check(WARN, name, note))
        result = seed_results.get(str(seed)) if seed is not None else None
        if result is None and len(runs) == 1 and "val_bpb" in sub:
            result = {"val_bpb": sub["val_bpb"]}  # one log, no per-seed results: the folder's figure is its
        others = [(str(p.relative_to(folder)), seeds[str(p)][0], s) for p, s in runs if p != log_path]
        checks += score_checks(summary, name, seed, result, others)
        checks += time_checks(summary, name, track)
        checks += size_checks(summary, name, code_files, artifact, code)
        logged_sha = summary.meta.get("sha256")
        if code_sha and logged_sha and not code_sha.startswith(logged_sha):
            checks.append(Check(FAIL, name, f"the log ran code sha256:{logged_sha}, not this {code.name} ({code_sha[:16]})"))
    claims = [s.claimed()["val_bpb"] for _, s in runs if s.claimed()]
    if not seed_results and len(runs) > 1 and claims and isinstance(sub.get("val_bpb"), (int, float)):
        mean = sum(claims) / len(claims)
        if same_score(sub["val_bpb"], mean):
            checks.append(Check(PASS, sub_path.name, f"val_bpb {sub['val_bpb']} (no per-seed results) = the mean "
                                                     f"{mean:.8f} of the {len(claims)} logs' claims"))
        elif any(same_score(sub["val_bpb"], c) for c in claims):
            checks.append(Check(PASS, sub_path.name, f"val_bpb {sub['val_bpb']} (no per-seed results) = one log's claim"))
        else:
            checks.append(Check(WARN, sub_path.name, f"val_bpb {sub['val_bpb']} (no per-seed results) is neither a "
                                                     f"log's claim nor their mean {mean:.8f}"))
    shas = {s.meta["sha256"] for _, s in runs if s.meta.get("sha256")}
    if len(shas) > 1:
        checks.append(Check(FAIL, where, f"logs ran different code: sha256 {', '.join(sorted(shas))}"))
    for seed, r in sorted(seed_results.items()):
        if not isinstance(r, dict):
            continue
        if ours:
            checks += [Check(FAIL, sub_path.name, f"seed {seed} lacks {f!r}") for f in SEED_FIELDS if f not in r]
        art = r.get("artifact_bytes")
        if isinstance(art, int):
            checks.append(reported_size_check(sub_path.name, seed, art, [s for _, s in runs], ours, code_bytes))
    return checks


def validate(folder: Path, track: Track | None = None) -> list[str]:
    """The rules a records folder breaks, one line each (the FAIL checks)."""
    return [c.line() for c in check_folder(folder, track) if c.level == FAIL]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="*", type=Path)
    ap.add_argument("--validate", type=Path, help="check an existing records folder instead of building one")
    ap.add_argument("--name")
    ap.add_argument("--author")
    ap.add_argument("--github-id")
    ap.add_argument("--blurb", default="")
    ap.add_argument("--against", help="baseline: submission.json, records folder, or a text file of per-seed val_bpb")
    ap.add_argument("--out", default=str(ROOT / "submissions"))
    ap.add_argument("--date", default=datetime.date.today().isoformat())
    ap.add_argument("--hardware", default="8xH100 80GB SXM")
    ap.add_argument("--json", action="store_true", help="with --validate: one JSON object per check line")
    ap.add_argument("--track", type=track_arg, help="record (default when building), non-record or unlimited; "
                                                    "any upstream spelling (10min_16mb, non_record_16mb, ...)")
    args = ap.parse_args(argv)
    if args.validate:
        return validate_main(args.validate, args.against, args.json, args.track)
    args.track = (args.track or RECORD).name
    if not args.run_dirs or not (args.name and args.author and args.github_id):
        ap.error("give RUN_DIR... with --name, --author and --github-id (or --validate DIR)")
    folder, problems = build(args.run_dirs, args)
    if folder:
        problems = validate(folder)
    for p in problems:
        print(f"submit: {p}", file=sys.stderr)
    if problems:
        return 1
    sub = json.loads((folder / "submission.json").read_text())
    print(f"{folder}: OK, {len(sub['seeds'])} seeds, val_bpb {sub['val_bpb']:.5f} ± {sub['val_bpb_std']:.5f}, "
          f"val_loss {sub['val_loss']:.5f} ± {sub['val_loss_std']:.5f}")
    if args.against:
        print(comparison(sub, Path(args.against))[0])
    return 0


def track_arg(spelling: str) -> Track:
    track = track_named(spelling)
    if track is None:
        raise argparse.ArgumentTypeError(f"{spelling!r} names no track (record, non-record, unlimited)")
    return track


def validate_main(folder: Path, against: str | None, as_json: bool, track: Track | None = None) -> int:
    """--validate: every check on its own line (PASS / WARN / FAIL); exit 1 on any FAIL, 2 on no folder."""
    if not folder.is_dir():
        print(f"submit: {folder}: not a folder", file=sys.stderr)
        return 2
    checks = check_folder(folder, track)
    for c in checks:
        print(json.dumps({"level": c.level, "where": c.where, "check": c.text}) if as_json else c.line())
    fails, warns = sum(c.level == FAIL for c in checks), sum(c.level == WARN for c in checks)
    if not as_json:
        print(f"{folder}: {fails} FAIL, {warns} WARN, {len(checks) - fails - warns} PASS")
    if fails:
        return 1
    if against:
        try:
            print(comparison(json.loads((folder / "submission.json").read_text()), Path(against))[0])
        except (KeyError, ValueError, OSError) as e:
            print(f"submit: --against {against}: cannot compare: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
