"""The README's main command: sample data -> pack -> train_gpt.py on 2 CPU processes -> size check -> summary.

python tools/smoke.py [--nproc 2] [--seconds 120] [--run-dir runs/smoke] [--seed 1337] [--recipe default]
Everything is local: no network. The default recipe is packed into <run-dir>/train_gpt.py and that
file runs there, away from the golf package, as it would be shipped (tracked files are not touched).
Prints val_bpb (pre-quant, round trip and, with TTT, the claimed TTT score), the bytes against
16,000,000 and the seconds used against both 600 s budgets.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from golf.logparse import parse_run_log  # noqa: E402

LIMIT = 16_000_000


def run(cmd: list[str], env=None, cwd=None) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, env=env, cwd=cwd, check=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=120.0, help="training wallclock budget")
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "smoke"))
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--recipe", default="default", help="recipe to pack; `caseops` runs on the CaseOps sample data")
    args = ap.parse_args(argv)
    t0 = time.time()
    py = sys.executable

    caseops = args.recipe == "caseops"  # the sample built with the CaseOps tokenizer and its val byte sidecar
    run([py, str(ROOT / "data" / "prepare_sample.py")] + (["--caseops"] if caseops else []))
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
    run([py, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}", str(script)],
        env=env, cwd=run_dir)
    artifact = run_dir / "final_model.golf"
    check = subprocess.run([py, str(ROOT / "tools" / "size_check.py"), str(artifact), "--code", str(script), "--json"],
                           capture_output=True, text=True)
    if check.returncode not in (0, 1):
        print(check.stderr.strip(), file=sys.stderr)
        return check.returncode
    size = json.loads(check.stdout)
    log = parse_run_log(str(run_dir / "logs" / f"smoke_seed{args.seed}.txt"))
    train_s = log.get("stopped.train_time", 0.0) / 1000
    print("\n==== smoke summary ====")
    ttt = log.get("final_ttt.val_bpb")
    print(f"val_bpb prequant:{log.get('prequant.val_bpb'):.4f} roundtrip:{log.get('final_roundtrip.val_bpb'):.4f}"
          + (f" ttt:{ttt:.4f} (claimed)" if ttt is not None else ""))
    print(f"total_bytes:{size['total_bytes']} of {LIMIT} (artifact {size['artifact_bytes']} + code {size['code_bytes']})"
          f" {'OK' if size['total_bytes'] <= LIMIT else 'OVER'}")
    if size["total_bytes"] != log.get("total_bytes"):
        print(f"MISMATCH: the log says total_bytes:{log.get('total_bytes'):.0f}", file=sys.stderr)
        return 1
    print(f"train_time:{train_s:.1f}s of 600s  eval_time:{log.get('eval_time'):.1f}s of 600s")
    print(f"smoke wallclock:{time.time() - t0:.0f}s  run dir:{run_dir}")
    return 0 if size["total_bytes"] <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
