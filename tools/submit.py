"""Build and validate a records folder (`<YYYY-MM-DD>_<Name>/`) from one run directory per seed.

python tools/submit.py RUN_DIR [RUN_DIR ...] --name NAME --author A --github-id G [--blurb TEXT]
                       [--against FILE_OR_DIR] [--out submissions] [--date YYYY-MM-DD] [--hardware TEXT]
python tools/submit.py --validate DIR [--against FILE_OR_DIR]

A RUN_DIR holds the exact train_gpt.py that ran, final_model.golf and logs/<run_id>.txt. Refused, one
line per problem and exit 1: different train_gpt.py across runs, total bytes (artifact + code, measured
from the files and equal to the log's total_bytes) over 16,000,000, training or evaluation over 600 s,
a log without its final round trip. --validate checks a folder (ours, or upstream's records layout)
the same way. --against compares with a baseline (a submission.json, a records folder, or a text file
of per-seed val_bpb): improvement in nats and a one-sided Welch t-test against the 0.005-nat bar.
"""

import argparse
import datetime
import glob
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

from golf.logparse import RunSummary, parse_run_log  # noqa: E402

LIMIT_BYTES = 16_000_000
LIMIT_SECONDS = 600.0
TRACK = "10min_16mb"
RECORD_MARGIN_NATS = 0.005  # a record must beat the frontier by this much ...
RECORD_P = 0.01  # ... at this significance
FIELDS = ("author", "github_id", "name", "blurb", "date", "track", "val_loss", "val_bpb", "val_loss_std",
          "val_bpb_std", "seeds", "seed_results", "hardware", "pytorch_version", "cuda_version")
SEED_FIELDS = ("val_loss", "val_bpb", "artifact_bytes", "steps", "step_avg_ms", "eval_time_s")


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


def run_problems(summary: RunSummary, where: str, code_sha: str | None, total_bytes: int | None) -> list[str]:
    """What a single log breaks: round trip, both time budgets, byte budget, and its code hash."""
    problems = []
    if summary.final_roundtrip() is None:
        problems.append(f"{where}: no final_roundtrip val_loss/val_bpb line (the run did not finish)")
    train_s = max([summary.seconds("stopped.train_time", 0.0) or 0.0]
                  + [s["train_time_ms"] / 1000 for s in summary.steps if s.get("train_time_ms") is not None])
    if train_s > LIMIT_SECONDS:
        problems.append(f"{where}: training took {train_s:.1f}s > {LIMIT_SECONDS:.0f}s")
    eval_s = summary.seconds("eval_time")
    if eval_s is not None and eval_s > LIMIT_SECONDS:
        problems.append(f"{where}: evaluation took {eval_s:.1f}s > {LIMIT_SECONDS:.0f}s")
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


def read_run(run_dir: Path) -> tuple[SeedRun | None, list[str]]:
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
    return run, run_problems(summary, str(logs[0]), run.code_sha256, run.artifact_bytes + run.code_bytes)


def seed_result(run: SeedRun) -> dict:
    val_loss, val_bpb = run.log.claimed_score()
    last = run.log.steps[-1] if run.log.steps else {}
    return {"val_loss": val_loss, "val_bpb": val_bpb, "artifact_bytes": run.artifact_bytes,
            "steps": last.get("step"), "step_avg_ms": last.get("step_avg_ms"),
            "eval_time_s": run.log.seconds("eval_time")}


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

def readme(sub: dict, runs: list[SeedRun], compare: str | None) -> str:
    meta = runs[0].log.meta
    rows = "\n".join(
        f"| {s} | {r['val_loss']:.5f} | {r['val_bpb']:.5f} | {r['artifact_bytes']} | "
        f"{r['artifact_bytes'] + runs[0].code_bytes} | {r['steps']} | {r['step_avg_ms']} | {r['eval_time_s']} |"
        for s, r in sorted(sub["seed_results"].items(), key=lambda kv: int(kv[0])))
    config = runs[0].log.config or "{}"
    return f"""# {sub['name']}

{sub['blurb']}

Author: {sub['author']} (@{sub['github_id']}). Track: {sub['track']}. Hardware: {sub['hardware']}.
PyTorch {sub['pytorch_version']}, CUDA {sub['cuda_version']}.

## Results (round trip: the artifact as written, reloaded and evaluated)
| seed | val_loss | val_bpb | artifact bytes | total bytes | steps | step_avg ms | eval s |
| --- | --- | --- | --- | --- | --- | --- | --- |
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
    runs, problems = [], []
    for d in run_dirs:
        run, found = read_run(d)
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
           "date": args.date, "track": TRACK, "val_loss": loss, "val_bpb": bpb, "val_loss_std": loss_std,
           "val_bpb_std": bpb_std, "seeds": [r.seed for r in runs], "seed_results": results,
           "hardware": args.hardware, "pytorch_version": meta.get("torch", "unknown"),
           "cuda_version": meta.get("cuda", "unknown")}
    compare = comparison(sub, Path(args.against))[0] if args.against else None
    folder = Path(args.out) / f"{args.date}_{args.name}"
    if folder.exists():
        return None, [f"{folder}: already exists; remove it or choose another --name"]
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    shutil.copyfile(runs[0].run_dir / "train_gpt.py", tmp / "train_gpt.py")
    for r in runs:
        shutil.copyfile(r.log_path, tmp / f"train_seed{r.seed}.log")
    (tmp / "submission.json").write_text(json.dumps(sub, indent=2) + "\n")
    (tmp / "README.md").write_text(readme(sub, runs, compare))
    os.replace(tmp, folder)
    return folder, []


# ---------------------------------------------------------------- validating

def validate(folder: Path) -> list[str]:
    """Everything a records folder must hold and satisfy, one line per problem."""
    sub_path, code = folder / "submission.json", folder / "train_gpt.py"
    problems = [f"{p}: missing" for p in (sub_path, code, folder / "README.md") if not p.is_file()]
    if not sub_path.is_file():
        return problems
    try:
        sub = json.loads(sub_path.read_text())
    except json.JSONDecodeError as e:
        return problems + [f"{sub_path}: not JSON ({e})"]
    problems += [f"{sub_path}: missing field {f!r}" for f in FIELDS if f not in sub]
    if sub.get("track", TRACK) != TRACK:
        problems.append(f"{sub_path}: track {sub.get('track')!r}, expected {TRACK!r}")
    code_bytes = code.stat().st_size if code.is_file() else 0
    code_sha = sha256(code) if code.is_file() else None
    for seed, r in sorted((sub.get("seed_results") or {}).items()):
        problems += [f"{sub_path}: seed {seed} lacks {f!r}" for f in SEED_FIELDS if f not in r]
        if isinstance(r.get("artifact_bytes"), int) and r["artifact_bytes"] + code_bytes > LIMIT_BYTES:
            problems.append(f"{sub_path}: seed {seed}: {r['artifact_bytes']} + {code_bytes} code bytes "
                            f"= {r['artifact_bytes'] + code_bytes} > {LIMIT_BYTES}")
    logs = sorted(glob.glob(str(folder / "*.log")) + glob.glob(str(folder / "train*.txt")))
    if not logs:
        problems.append(f"{folder}: no train logs (*.log)")
    shas = set()
    for log_path in logs:
        summary = parse_run_log(log_path)
        if summary.meta.get("sha256"):
            shas.add(summary.meta["sha256"])
        problems += run_problems(summary, log_path, code_sha, None)
        seed = re.search(r"seed_?(\d+)", os.path.basename(log_path))
        result = (sub.get("seed_results") or {}).get(seed.group(1)) if seed else None
        final = summary.claimed_score()
        if result and final and abs(result.get("val_bpb", math.nan) - final[1]) > 1e-6:
            problems.append(f"{log_path}: val_bpb {final[1]} but submission.json says {result.get('val_bpb')}")
    if len(shas) > 1:
        problems.append(f"{folder}: logs ran different code: sha256 {', '.join(sorted(shas))}")
    return problems


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
    args = ap.parse_args(argv)
    if args.validate:
        problems = validate(args.validate)
        folder = args.validate
    else:
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


if __name__ == "__main__":
    sys.exit(main())
