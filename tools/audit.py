"""Legality and coverage checks of a training file on the smoke data: a PASS/FAIL checklist.

    python tools/audit.py [train_gpt.py] [--quick] [--data DIR] [--tokenizer PATH] [--keep DIR]
    python tools/audit.py FILE --static [--json] [--unpack DIR]   # any train_gpt.py, a shim too: never run

--static reads the file (and the source a shim decodes) with ast only: golf.static_audit's checklist (val data
reaching updates outside score-first, epochs over val, best-of scores, target-keyed tables, unnormalised
mixtures, train data or network on the eval path). Without --static, those checks come first, then:

The file (packed, or one that imports golf) is only run as a subprocess and read with `ast`:
  1. static (evidence: the source): golf.static_audit, as with --static.
  2. two runs (PRESET=smoke, fixed ITERATIONS, no wallclock stop so both train identically), one on
     the val split as is, one with val token t swapped for another id (temp data dirs that share
     the train shards); each run dumps the per-target NLL of the eval it reports (DUMP_VAL_LOSSES).
  3. perturbation: every target scored before token t was first scored (target t - 1; target j is token j+1)
     scores bit for bit the same in both runs, and some later target does not (else the check proved
     nothing). "Before" is the run's own scoring order when it dumps one (<dump>_order.npy: the step that
     scored each target; per-doc TTT scores documents longest first), else stream order; within one step,
     targets j < t - 1 count as before. The dumped order must itself run forward inside each document.
  4. coverage: every `val_tokens:<n> val_bytes:<n>` the log reports is (val tokens - 1, the
     sentencepiece-decoded UTF-8 bytes of the val stream), and the dump's mean is the claimed loss.
  5. data separation: the run logged `eval_phase_started ... val_reads:0` (golf.data.SHARD_READS
     before the val split is loaded) ahead of any val result.
  6. byte accounting: tools/bpb_check.py on the data (decoded val stream vs byte counts vs documents;
     the sample's documents when auditing the sample).
Exit 0 all PASS, 1 any FAIL, 2 bad input (missing file, data or tokenizer).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.prepare_sample import prepare_sample, sample_paths  # noqa: E402
from golf.config import GolfError  # noqa: E402
from golf.data import load_val_tokens, read_shard, shard_paths, sidecar_path, write_shard  # noqa: E402
from golf.static_audit import AuditInputError, audit_file, report_lines, unpacked_sources  # noqa: E402
from golf.tokenizer import SP_BOS_ID, decoded_byte_count, load_tokenizer  # noqa: E402
from tools.bpb_check import check as bpb_check  # noqa: E402

COVERAGE = re.compile(r"val_tokens:(\d+) val_bytes:(\d+)")
QUICK = dict(ITERATIONS="3", TRAIN_BATCH_TOKENS="2048", VAL_MAX_TOKENS="8192")
FULL = dict(ITERATIONS="50", VAL_MAX_TOKENS="0")


# ---------------------------------------------------------------- the two runs
def perturb_position(val: np.ndarray) -> int:
    """A mid-stream token that is not BOS (so document boundaries stay put), off any power-of-two edge."""
    t = int(len(val) * 0.6) + 37
    while val[t] == SP_BOS_ID:
        t += 1
    return t


def make_data_dir(path: Path, train: list[str], val_paths: list[str], change: tuple[int, int] | None) -> None:
    """Symlinks to the train shards; val shards copied, with token change[0] set to change[1]."""
    path.mkdir(parents=True)
    for p in train:
        os.symlink(os.path.abspath(p), path / os.path.basename(p))
    offset = 0
    for p in val_paths:
        tokens = read_shard(p).copy()
        if change and offset <= change[0] < offset + len(tokens):
            tokens[change[0] - offset] = change[1]
        offset += len(tokens)
        write_shard(str(path / os.path.basename(p)), tokens)
        if os.path.isfile(sidecar_path(p)):  # CaseOps data: its byte counts go along (unchanged)
            os.symlink(os.path.abspath(sidecar_path(p)), sidecar_path(str(path / os.path.basename(p))))


def run_file(train_file: Path, data: Path, tokenizer: str, out: Path, settings: dict) -> tuple[int, str, Path]:
    out.mkdir(parents=True)
    dump = out / "val_losses.npy"
    env = dict(os.environ, PRESET="smoke", DATA_PATH=str(data), TOKENIZER_PATH=tokenizer, OUT_DIR=str(out),
               RUN_ID="audit", SEED="1337", DUMP_VAL_LOSSES=str(dump), COMPILE_WARMUP_STEPS="0",
               MAX_WALLCLOCK_SECONDS="1000000",  # no time-based stop or warmdown: both runs train alike
               QUANT_RESERVE_SECONDS="1000",  # legality runs, not timing runs: a busy machine must not fail them
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
               **settings)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    proc = subprocess.run([sys.executable, str(train_file)], env=env, cwd=out, capture_output=True, text=True)
    (out / "stdout.txt").write_text(proc.stdout + proc.stderr)
    return proc.returncode, proc.stdout, dump  # the console log: the log file also holds the source


def claimed_loss(log: str) -> float | None:
    for key in ("final_ttt", "final_roundtrip"):
        m = re.search(rf"^{key} val_loss:([0-9.eE+-]+)", log, re.MULTILINE)
        if m:
            return float(m.group(1))
    return None


def perturbation_verdict(a: np.ndarray, b: np.ndarray, t: int, order: np.ndarray | None = None) -> tuple[bool, str]:
    """Token t was changed between the runs that scored a and b (per-target NLL). Legal: every target scored
    before target t - 1 ((order, index) lexicographically smaller; order None: stream order) is bit-identical,
    and something after it moved."""
    if a.shape != b.shape:
        return False, f"dump shapes {a.shape} {b.shape} differ"
    j = np.arange(len(a))
    if order is None:
        order = np.zeros(len(a), dtype=np.int64)
    before = (order < order[t - 1]) | ((order == order[t - 1]) & (j < t - 1))
    same = a.view(np.uint32) == b.view(np.uint32)
    if not same[before].all():
        first = int(j[before & ~same][0])
        return False, (f"target {first} (scoring step {int(order[first])}) changed though scored before target "
                       f"{t - 1} (step {int(order[t - 1])})")
    moved = not same[~before].all()
    return moved, f"{int(before.sum())} targets scored before token {t} bit-identical" + (
        "" if moved else "; but nothing after it changed either")


def order_is_causal(order: np.ndarray, val: np.ndarray) -> tuple[bool, str]:
    """Inside each document (BOS to BOS) the dumped scoring order never goes back: no target is declared scored
    before an earlier target of its own document."""
    starts = list(np.flatnonzero(val[:-1] == SP_BOS_ID)) + [len(val) - 1]
    for s, e in zip(starts, starts[1:]):
        back = np.flatnonzero(np.diff(order[s:e]) < 0)
        if back.size:
            return False, f"target {s + int(back[0]) + 1} declared scored before target {s + int(back[0])}"
    return True, "forward within every document"


# ---------------------------------------------------------------- checklist
def audit(train_file: Path, data: str, tokenizer: str, quick: bool, work: Path,
          text_source: str | None = None) -> list[tuple[str, bool, str]]:
    results = [(f"bpb_check: {r['check']}", r["status"] != "FAIL", f"{r['status']} {r['figure']} (limit: {r['limit']})")
               for r in bpb_check(data, tokenizer, text_source)]
    results += [(c["name"], c["verdict"] != "FAIL", c["verdict"] + ": " + c["detail"] if c["verdict"] == "WARN"
                 else c["detail"]) for c in audit_file(train_file)["checks"]]  # WARN is no FAIL: it says so

    settings = QUICK if quick else FULL
    sp = load_tokenizer(tokenizer)
    val = load_val_tokens(data, int(settings["VAL_MAX_TOKENS"])).numpy()
    t = perturb_position(val)
    new_id = 4 + (int(val[t]) - 4 + 101) % (sp.vocab_size() - 4)  # any other normal piece (ids 0-3 are special)
    train = shard_paths(data, "train")
    make_data_dir(work / "data_orig", train, shard_paths(data, "val"), None)
    make_data_dir(work / "data_perturbed", train, shard_paths(data, "val"), (t, new_id))
    print(f"audit: {len(val)} val tokens, token {t} {int(val[t])} -> {new_id}; running {train_file.name} twice "
          f"({', '.join(f'{k}={v}' for k, v in settings.items())})", flush=True)
    runs = [run_file(train_file, work / f"data_{k}", tokenizer, work / f"run_{k}", settings)
            for k in ("orig", "perturbed")]
    ok = all(rc == 0 and dump.exists() for rc, _, dump in runs)
    detail = "both exit 0 with a loss dump" if ok else "; ".join(
        f"run_{k} exit {rc}: {(work / f'run_{k}' / 'stdout.txt').read_text()[-300:]!r}"
        for k, (rc, _, _) in zip(("orig", "perturbed"), runs))
    results.append(("runs complete", ok, detail))
    if not ok:
        return results
    (_, log, dump_a), (_, _, dump_b) = runs
    a, b = np.load(dump_a), np.load(dump_b)

    order_file = dump_a.with_name(dump_a.stem + "_order.npy")
    order = np.load(order_file) if order_file.exists() else None
    if a.shape != (len(val) - 1,) or (order is not None and order.shape != a.shape):
        ok, why = False, f"dump shapes {a.shape} {b.shape}, expected ({len(val) - 1},)"
    else:
        ok, why = order_is_causal(order, val) if order is not None else (True, "")
        if ok:
            ok, why = perturbation_verdict(a, b, t, order)
            why += " (the run's scoring order)" if order is not None else " (stream order)"
    results.append(("perturbation: scores before the changed token are unchanged", ok, why))

    expected = (len(val) - 1, decoded_byte_count(sp, val.tolist()))
    counts = [(int(n), int(m)) for n, m in COVERAGE.findall(log)]
    starts_bos = val[0] == SP_BOS_ID
    cover = bool(counts) and starts_bos and all(c == expected for c in counts)
    results.append(("coverage: every val target once, decoded byte count",
                    cover, f"log {sorted(set(counts))} vs expected {expected}" + ("" if starts_bos else "; val[0] != BOS")))
    claimed = claimed_loss(log)
    matches = claimed is not None and bool(np.isfinite(a).all()) and abs(float(a.astype(np.float64).mean()) - claimed) < 1e-6 * max(1.0, claimed)
    results.append(("dump is the claimed eval", matches, f"dump mean {a.astype(np.float64).mean():.8f} vs claimed {claimed}"))

    marker = re.search(r"^eval_phase_started .*val_reads:(\d+)", log, re.MULTILINE)
    first_val = min([m.start() for m in (re.search(r"val_bpb:", log), COVERAGE.search(log)) if m], default=len(log))
    separated = marker is not None and int(marker.group(1)) == 0 and marker.start() < first_val
    results.append(("data separation: no val shard read before eval", separated,
                    marker.group(0) if marker else "no eval_phase_started line before the val results"))
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train_file", nargs="?", default=str(ROOT / "train_gpt.py"))
    ap.add_argument("--quick", action="store_true", help=f"tiny runs: {QUICK}")
    ap.add_argument("--data", default=None, help="shard dir (default: the sample, built if missing)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer model (default: the sample's)")
    ap.add_argument("--keep", help="work in this (new) directory and keep the runs' logs and dumps")
    ap.add_argument("--static", action="store_true", help="static checks only; any file, never run")
    ap.add_argument("--json", action="store_true", help="with --static: the report as JSON")
    ap.add_argument("--unpack", metavar="DIR", help="with --static: write the source a shim decodes here "
                                                    "(decoded_1.py, ...: the lines the report cites)")
    args = ap.parse_args(argv)
    train_file = Path(args.train_file).resolve()
    if not train_file.is_file():
        print(f"error: {args.train_file}: training file not found", file=sys.stderr)
        return 2
    if args.static:
        try:
            report = audit_file(train_file)
        except AuditInputError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(json.dumps(report, indent=1) if args.json else "\n".join(report_lines(report)))
        if args.unpack:
            Path(args.unpack).mkdir(parents=True, exist_ok=True)
            for i, (origin, text) in enumerate(unpacked_sources(train_file)[1:], start=1):
                (Path(args.unpack) / f"decoded_{i}.py").write_text(text, encoding="utf-8")
                print(f"wrote {Path(args.unpack) / f'decoded_{i}.py'}: {origin}", file=sys.stderr)
        return 1 if any(c["verdict"] == "FAIL" for c in report["checks"]) else 0
    text_source = None
    try:
        if args.data is None and args.tokenizer is None:
            # The default is the bundled sample in the default's tokenizer family (CaseOps, with its val byte
            # sidecar); from a fresh clone it is built first (idempotent, ~10 s).
            prepare_sample(out_dir=str(ROOT / "data"))
            paths = sample_paths(str(ROOT / "data"), 8192, "caseops")
            args.data, args.tokenizer = os.path.dirname(paths["train"]), paths["tokenizer"]
            text_source = "sample"  # bpb_check compares the decoded val stream with the sample's documents
        elif args.data is None or args.tokenizer is None:
            raise GolfError("--data and --tokenizer go together (or give neither for the sample)")
        shard_paths(args.data, "train")  # bad input fails here, before any run
        shard_paths(args.data, "val")
        load_tokenizer(args.tokenizer)
        with tempfile.TemporaryDirectory(prefix="audit-") as tmp:
            work = Path(args.keep).resolve() if args.keep else Path(tmp)
            results = audit(train_file, args.data, args.tokenizer, args.quick, work, text_source)
    except (GolfError, AuditInputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    width = max(len(name) for name, _, _ in results)
    for name, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name:<{width}}  {detail}")
    failed = sum(not ok for _, ok, _ in results)
    print(f"audit: {len(results) - failed}/{len(results)} PASS" + (f", {failed} FAIL" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
