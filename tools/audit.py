"""Legality and coverage checks of a training file on the smoke data: a PASS/FAIL checklist.

    python tools/audit.py [train_gpt.py] [--quick] [--data DIR] [--tokenizer PATH] [--keep DIR]

The file (packed, or one that imports golf) is only run as a subprocess and read with `ast`:
  1. static: no val data reaches a training step or .backward() outside TTT functions (names with
     "ttt"; their legality is check 3's job); no loop over val/chunks nested in an epoch loop; no
     min/argmin over val scores. These are heuristics over names: they catch the known patterns.
  2. two runs (PRESET=smoke, fixed ITERATIONS, no wallclock stop so both train identically), one on
     the val split as is, one with val token t swapped for another id (temp data dirs that share
     the train shards); each run dumps the per-target NLL of the eval it reports (DUMP_VAL_LOSSES).
  3. perturbation: targets before token t (j < t - 1; target j is token j+1) score bit for bit the
     same in both runs, and some later target does not (else the check proved nothing).
  4. coverage: every `val_tokens:<n> val_bytes:<n>` the log reports is (val tokens - 1, the
     sentencepiece-decoded UTF-8 bytes of the val stream), and the dump's mean is the claimed loss.
  5. data separation: the run logged `eval_phase_started ... val_reads:0` (golf.data.SHARD_READS
     before the val split is loaded) ahead of any val result.
  6. byte accounting: tools/bpb_check.py on the data (decoded val stream vs byte counts vs documents;
     the sample's documents when auditing the sample).
Exit 0 all PASS, 1 any FAIL, 2 bad input (missing file, data or tokenizer).
"""

import argparse
import ast
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.prepare_sample import prepare_sample  # noqa: E402
from golf.config import GolfError  # noqa: E402
from golf.data import load_val_tokens, read_shard, shard_paths, sidecar_path, write_shard  # noqa: E402
from golf.tokenizer import SP_BOS_ID, decoded_byte_count, load_tokenizer  # noqa: E402
from tools.bpb_check import check as bpb_check  # noqa: E402

VAL_NAME = re.compile(r"(^|_)val($|_)", re.IGNORECASE)
COVERAGE = re.compile(r"val_tokens:(\d+) val_bytes:(\d+)")
QUICK = dict(ITERATIONS="3", TRAIN_BATCH_TOKENS="2048", VAL_MAX_TOKENS="8192")
FULL = dict(ITERATIONS="50", VAL_MAX_TOKENS="0")


# ---------------------------------------------------------------- static checks
def called_name(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def val_tainted(func: ast.AST) -> set[str]:
    """Names in func that hold val data: named like val, or assigned/looped from something that is."""
    tainted = {n.id for n in ast.walk(func) if isinstance(n, ast.Name) and VAL_NAME.search(n.id)}
    tainted |= {a.arg for a in ast.walk(func) if isinstance(a, ast.arg) and VAL_NAME.search(a.arg)}
    while True:
        before = len(tainted)
        for node in ast.walk(func):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For)):
                source = node.iter if isinstance(node, ast.For) else node.value
                targets = [node.target] if not isinstance(node, ast.Assign) else node.targets
                if source is not None and mentions_val(source, tainted):
                    tainted |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        if len(tainted) == before:
            return tainted


def mentions_val(node: ast.AST, tainted: set[str]) -> bool:
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and n.id in tainted:
            return True
        if isinstance(n, ast.Call) and VAL_NAME.search(called_name(n)):
            return True
        if isinstance(n, ast.Constant) and n.value == "val":
            return True
    return False


def functions(tree: ast.Module) -> list[ast.AST]:
    """Each function (with its nested ones), and the module's own top-level statements: one scope each."""
    defs = (ast.FunctionDef, ast.AsyncFunctionDef)
    top = ast.Module(body=[s for s in tree.body if not isinstance(s, defs + (ast.ClassDef,))], type_ignores=[])
    return [n for n in ast.walk(tree) if isinstance(n, defs)] + [top]


def val_in_training(tree: ast.AST) -> list[str]:
    """Calls that train on val data: x.backward() / opt.step() / train*(...) mentioning val-tainted names."""
    found = []
    for func in functions(tree):
        if "ttt" in getattr(func, "name", "").lower():
            continue
        tainted = val_tainted(func)
        for call in (n for n in ast.walk(func) if isinstance(n, ast.Call)):
            name = called_name(call)
            receiver = call.func.value if isinstance(call.func, ast.Attribute) else None
            if name == "backward" and receiver is not None and mentions_val(receiver, tainted):
                found.append(f"line {call.lineno}: backward() on val data")
            elif ("train" in name.lower() or name == "step") and any(mentions_val(a, tainted) for a in call.args):
                found.append(f"line {call.lineno}: {name}() given val data")
    return found


def epochs_over_val(tree: ast.AST) -> list[str]:
    """An epoch loop with a loop over val data or chunks inside it: several passes over val."""
    found = []
    for outer in (n for n in ast.walk(tree) if isinstance(n, (ast.For, ast.While))):
        head = ast.unparse(outer.target if isinstance(outer, ast.For) else outer.test)
        if isinstance(outer, ast.For):
            head += " " + ast.unparse(outer.iter)
        if "epoch" not in head.lower():
            continue
        for inner in (n for n in ast.walk(outer) if isinstance(n, ast.For) and n is not outer):
            text = ast.unparse(inner.iter)
            if "chunk" in text.lower() or any(VAL_NAME.search(w) for w in re.findall(r"\w+", text)):
                found.append(f"line {inner.lineno}: loop over {text!r} inside epoch loop at line {outer.lineno}")
    return found


def best_of_scores(tree: ast.AST) -> list[str]:
    """min()/argmin over val scores: choosing the best of several scored passes."""
    found = []
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        if called_name(call) in ("min", "argmin", "nanmin", "nanargmin"):
            text = ast.unparse(call)
            if re.search(r"bpb|val_loss|score", text, re.IGNORECASE):
                found.append(f"line {call.lineno}: {text[:80]}")
    return found


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


# ---------------------------------------------------------------- checklist
def audit(train_file: Path, data: str, tokenizer: str, quick: bool, work: Path,
          text_source: str | None = None) -> list[tuple[str, bool, str]]:
    results = [(f"bpb_check: {r['check']}", r["status"] != "FAIL", f"{r['status']} {r['figure']} (limit: {r['limit']})")
               for r in bpb_check(data, tokenizer, text_source)]
    tree = ast.parse(train_file.read_text(encoding="utf-8"), filename=str(train_file))
    for name, check in (("static: no val data in training steps", val_in_training),
                        ("static: no epoch loop over val", epochs_over_val),
                        ("static: no min over scored passes", best_of_scores)):
        found = check(tree)
        results.append((name, not found, "; ".join(found[:3]) or "none found"))

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

    same = a.shape == b.shape == (len(val) - 1,)
    before = same and np.array_equal(a[: t - 1].view(np.uint32), b[: t - 1].view(np.uint32))
    moved = same and not np.array_equal(a[t - 1 :], b[t - 1 :])
    if not same:
        why = f"dump shapes {a.shape} {b.shape}, expected ({len(val) - 1},)"
    elif not before:
        why = f"target {int(np.flatnonzero(a[: t - 1] != b[: t - 1])[0])} changed (before t - 1 = {t - 1})"
    else:
        why = f"{t - 1} targets bit-identical" + ("" if moved else "; but nothing after t changed either")
    results.append(("perturbation: scores before the changed token are unchanged", before and moved, why))

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
    args = ap.parse_args(argv)
    train_file = Path(args.train_file).resolve()
    if not train_file.is_file():
        print(f"error: {args.train_file}: training file not found", file=sys.stderr)
        return 2
    text_source = None
    try:
        if args.data is None and args.tokenizer is None:
            # The default is the bundled sample; from a fresh clone it is built first (idempotent, ~10 s).
            prepare_sample(out_dir=str(ROOT / "data"))
            args.data = str(ROOT / "data" / "datasets" / "sample_sp8192")
            args.tokenizer = str(ROOT / "data" / "tokenizers" / "sample_8192_bpe.model")
            text_source = "sample"  # bpb_check compares the decoded val stream with the sample's documents
        elif args.data is None or args.tokenizer is None:
            raise GolfError("--data and --tokenizer go together (or give neither for the sample)")
        shard_paths(args.data, "train")  # bad input fails here, before any run
        shard_paths(args.data, "val")
        load_tokenizer(args.tokenizer)
        with tempfile.TemporaryDirectory(prefix="audit-") as tmp:
            work = Path(args.keep).resolve() if args.keep else Path(tmp)
            results = audit(train_file, args.data, args.tokenizer, args.quick, work, text_source)
    except (GolfError, SyntaxError) as e:
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
