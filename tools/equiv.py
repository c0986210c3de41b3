"""Prove golf's recipe equal to an upstream record, piece by piece, against the record's own code on CPU.

    python tools/equiv.py RECORD_TRAIN_GPT [--log LOG] [--recipe NAME] [--json] [--pieces FAMILY ...]

Loads the record's train_gpt.py without running its main (golf/equiv/record.py: env from the log header, default
log the sibling train_seed42.log; FA3 replaced by a CPU SDPA stand-in; its eager paths instead of Triton), then runs
each piece family found in golf/equiv/ (model, data, config, optim, quant, evaluate: each a module with
`check(rec, cfg) -> list[Piece]`; pr2101: PR #2101's pieces, only on a record that has them). One line per piece: `PASS|FAIL|DEVIATION <piece> max_abs max_rel <detail>`,
tolerances in the detail; DEVIATION lines carry the reason from golf/recipes.py DEVIATIONS.
--json prints {"pieces": [...], "config": [...]} (name, status, max_abs, max_rel, detail, reason).
Config keys that describe the launch, paths or logging are n/a. Exit 0 when every piece is PASS, a declared
DEVIATION or n/a, 1 otherwise, 2 on bad input. Writes only to temp dirs.
"""
import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.config import GolfError  # noqa: E402
from golf.equiv.record import load_record  # noqa: E402
from golf.equiv.report import STATUSES  # noqa: E402
from golf.recipes import RECIPES  # noqa: E402

FAMILIES = ("model", "data", "config", "optim", "quant", "evaluate", "pr2101")


def available_families() -> dict:
    """The piece families present in golf/equiv/ (others' families may not exist yet on this branch)."""
    found = {}
    for name in FAMILIES:
        try:
            found[name] = importlib.import_module(f"golf.equiv.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"golf.equiv.{name}":
                raise
    return found


def run(args) -> dict:
    if args.recipe not in RECIPES:
        raise GolfError(f"--recipe {args.recipe!r}: unknown (known: {', '.join(sorted(RECIPES))})")
    families = available_families()
    chosen = args.pieces or list(families)
    unknown = [p for p in chosen if p not in families]
    if unknown:
        raise GolfError(f"--pieces {' '.join(unknown)}: no such family in golf/equiv/ "
                        f"(present: {', '.join(families)})")
    rec = load_record(Path(args.record), Path(args.log) if args.log else None)
    cfg = RECIPES[args.recipe]
    result = {"pieces": [], "config": [], "seconds": {}}
    for name in chosen:
        start = time.perf_counter()
        pieces = families[name].check(rec, cfg)
        result["config" if name == "config" else "pieces"].extend(pieces)
        result["seconds"][name] = round(time.perf_counter() - start, 1)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("record", help="an upstream record's train_gpt.py")
    ap.add_argument("--log", help="the record's train log (default: train_seed42.log beside it)")
    ap.add_argument("--recipe", default="default", help="golf recipe to compare (golf/recipes.py RECIPES)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--pieces", nargs="+", metavar="FAMILY", help=f"families to run (of {', '.join(FAMILIES)})")
    args = ap.parse_args(argv)
    # The pieces run small tensors: on the 2 shared cores a second intra-op thread only spins (the model pieces
    # took 10-20x the CPU time with 2 threads under load).
    torch.set_num_threads(1)
    try:
        result = run(args)
    except GolfError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pieces = result["pieces"] + result["config"]
    ok = all(p.status != "FAIL" for p in pieces)
    if args.json:
        print(json.dumps({"pieces": [p.as_dict() for p in result["pieces"]],
                          "config": [p.as_dict() for p in result["config"]],
                          "seconds": result["seconds"]}, indent=1))
    else:
        for p in pieces:
            print(p.line())
        counts = {s: sum(p.status == s for p in pieces) for s in STATUSES}
        seconds = ", ".join(f"{k} {v}s" for k, v in result["seconds"].items())
        print(f"{'OK' if ok else 'DIFFERS'}: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f" ({seconds})")
        if not ok and "config" in result["seconds"]:
            hint = closer_recipe(args, sum(p.status == "FAIL" for p in result["config"]))
            if hint:
                print(hint)
    return 0 if ok else 1


def closer_recipe(args, config_fails: int) -> str | None:
    """A line naming the recipe whose values the record's log header matches best, when that is not --recipe's
    (e.g. the 1.0611 record is recipe pr1855, not the default): the config family alone, on each recipe."""
    from golf.equiv import config as equiv_config

    rec = load_record(Path(args.record), Path(args.log) if args.log else None)
    fails = {name: sum(p.status == "FAIL" for p in equiv_config.check(rec, cfg)) for name, cfg in RECIPES.items()}
    best = min(fails, key=fails.get)
    if fails[best] >= config_fails or best == args.recipe:
        return None
    return (f"hint: recipe {best} leaves {fails[best]} config FAIL(s) against this log header where {args.recipe} "
            f"leaves {config_fails}: try --recipe {best}")


if __name__ == "__main__":
    sys.exit(main())
