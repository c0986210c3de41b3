"""The README's main command: sample data -> pack -> train_gpt.py on 2 CPU processes -> size check -> summary.

python tools/smoke.py [--nproc 2] [--seconds 120] [--run-dir runs/smoke] [--seed 1337] [--recipe default]
Everything is local: no network. The default recipe is packed into <run-dir>/train_gpt.py and that
file runs there, away from the golf package, as it would be shipped (tracked files are not touched).
Prints val_bpb (pre-quant, round trip and, with TTT, the claimed TTT score), the bytes against
16,000,000, each phase's seconds against the budget the run planned for it, and the verdict of
tools/preflight.py on the packed file at smoke size. Exit 1 on any overrun (a budget_violation or
size_violation line, a phase over its plan, a total over its limit) or a failed run; never "OK" after one.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from golf.logparse import parse_run_log  # noqa: E402
from golf.recipes import RECIPES  # noqa: E402

LIMIT = 16_000_000


def run(cmd: list[str], env=None, cwd=None, check=True) -> int:
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, env=env, cwd=cwd, check=check).returncode


PHASE = re.compile(r"^budget_actual phase:(\w+) planned:(\S+) actual:([0-9.]+)s$", re.MULTILINE)
TOTAL = re.compile(r"^budget_total train\+reserve:([0-9.]+)s/([0-9.]+)s eval:([0-9.]+)s/([0-9.]+)s$", re.MULTILINE)
VIOLATION = re.compile(r"^(?:budget|size)_violation .*$", re.MULTILINE)


def budget_summary(log_text: str) -> tuple[list[str], bool]:
    """(lines, overrun): each phase against the plan the run logged, the two totals against their limits, and the
    run's own violation lines. A phase or total over its budget is OVER, whether or not the run said so."""
    lines, overrun = [], False
    for phase, planned, actual in PHASE.findall(log_text):
        if planned in ("untimed", "uncounted"):
            lines.append(f"phase {phase}: {float(actual):.1f}s ({planned})")
            continue
        over = float(actual) > float(planned.rstrip("s"))
        overrun |= over
        lines.append(f"phase {phase}: {float(actual):.1f}s of planned {planned} {'OVER' if over else 'OK'}")
    totals = TOTAL.findall(log_text)
    if not totals:
        return lines + ["budget_total line missing from the log: OVER (cannot tell)"], True
    train, train_limit, ev, ev_limit = (float(v) for v in totals[-1])
    for name, used, limit in (("train+reserve", train, train_limit), ("eval", ev, ev_limit)):
        overrun |= used > limit
        lines.append(f"{name}: {used:.1f}s of {limit:.0f}s {'OVER' if used > limit else 'OK'}")
    violations = VIOLATION.findall(log_text)
    return lines + violations, overrun or bool(violations)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=120.0, help="training wallclock budget")
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "smoke"))
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--recipe", default="default", help="recipe to pack; one on plain SP8192 data (sp8192, prior) runs "
                    "on the plain sample")
    args = ap.parse_args(argv)
    t0 = time.time()
    py = sys.executable

    if args.recipe not in RECIPES:
        print(f"smoke: error: --recipe {args.recipe}: unknown (choices: {', '.join(RECIPES)})", file=sys.stderr)
        return 2
    # The sample in the recipe's tokenizer family: CaseOps (with its val byte sidecar) unless the recipe is plain.
    caseops = "caseops" in RECIPES[args.recipe].tokenizer_path
    run([py, str(ROOT / "data" / "prepare_sample.py")] + ([] if caseops else ["--plain"]))
    sample, tokenizer = ("sample_sp8192_caseops", "sample_8192_bpe_caseops.model") if caseops else \
        ("sample_sp8192", "sample_8192_bpe.model")
    run_dir = Path(args.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    script = run_dir / "train_gpt.py"
    run([py, str(ROOT / "tools" / "pack.py"), "--recipe", args.recipe, "-o", str(script)])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the packed file needs no golf
    env.update(PRESET="smoke", SEED=str(args.seed), MAX_WALLCLOCK_SECONDS=str(args.seconds),
               OUT_DIR=str(run_dir), RUN_ID=f"smoke_seed{args.seed}",
               DATA_PATH=str(ROOT / "data" / "datasets" / sample),
               TOKENIZER_PATH=str(ROOT / "data" / "tokenizers" / tokenizer))
    train_rc = run([py, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}", str(script)],
                   env=env, cwd=run_dir, check=False)
    preflight = subprocess.run([py, str(ROOT / "tools" / "preflight.py"), str(script)], env=env, cwd=run_dir,
                               capture_output=True, text=True)
    artifact = run_dir / "final_model.golf"
    check = subprocess.run([py, str(ROOT / "tools" / "size_check.py"), str(artifact), "--code", str(script), "--json"],
                           capture_output=True, text=True)
    if check.returncode not in (0, 1):
        print(check.stderr.strip(), file=sys.stderr)
        return check.returncode
    size = json.loads(check.stdout)
    log_path = run_dir / "logs" / f"smoke_seed{args.seed}.txt"
    log = parse_run_log(str(log_path))
    print("\n==== smoke summary ====")
    ttt = log.get("final_ttt.val_bpb")
    print(f"val_bpb prequant:{log.get('prequant.val_bpb'):.4f} roundtrip:{log.get('final_roundtrip.val_bpb'):.4f}"
          + (f" ttt:{ttt:.4f} (claimed)" if ttt is not None else ""))
    fits = size["total_bytes"] <= LIMIT
    print(f"total_bytes:{size['total_bytes']} of {LIMIT} (artifact {size['artifact_bytes']} + code {size['code_bytes']})"
          f" {'OK' if fits else 'OVER'}")
    if size["total_bytes"] != log.get("total_bytes"):
        print(f"MISMATCH: the log says total_bytes:{log.get('total_bytes'):.0f}", file=sys.stderr)
        return 1
    lines, overrun = budget_summary(log_path.read_text(encoding="utf-8"))
    for line in lines:
        print(line)
    print("preflight (smoke size, predicted for 8xH100):")
    for line in (preflight.stdout + preflight.stderr).strip().splitlines():
        print(f"  {line}")
    failed = overrun or not fits or train_rc != 0 or preflight.returncode != 0
    print(f"smoke {'FAIL' if failed else 'PASS'}: train_gpt.py exit {train_rc}, preflight exit {preflight.returncode}"
          f"{', overrun' if overrun else ''}{', over the size limit' if not fits else ''}; "
          f"wallclock {time.time() - t0:.0f}s, run dir {run_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
