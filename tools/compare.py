"""Runs side by side as a Markdown table, ready to paste into a submission README.

    python tools/compare.py RUN_LOG [RUN_LOG ...] [--artifact-dir DIR [DIR ...]] [--json]

One column per run; rows: the config fields that differ between the runs (from each log's
`config:` line), the claimed score and its label (the order in golf/logparse.py's doc; a log with no artifact
score shows its pre-quantisation val, labelled "no artifact score: the claimed X is the pre-quantisation val"), steps,
step_avg_ms, pre-quant and round-trip BPB, quant gap (round trip - pre-quant), TTT gain (round trip - TTT),
artifact / code / total bytes, train and eval seconds. A value a log lacks prints as "—".
--json prints one JSON object per run per line instead, with the same fields (null where a log has none). With --artifact-dir (one folder per log, in order) the artifact bytes are the
size of DIR/final_model.golf (checksum verified), and a footnote flags a log that says otherwise.
Exit 2 with one line on stderr for a missing or unreadable log or artifact.
"""
import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.artifact import read_artifact_meta  # noqa: E402
from golf.config import GolfError  # noqa: E402
from golf.logparse import RunSummary, config_differences, read_run_logs, run_names, unread_note  # noqa: E402

MISSING = "—"
ARTIFACT_NAME = "final_model.golf"  # what golf/train.py writes into OUT_DIR


def fmt(value, spec: str) -> str:
    return MISSING if value is None else format(value, spec)


def difference(a, b):
    return None if a is None or b is None else a - b


def config_text(value) -> str:
    """A config value as the env var would spell it: strings bare, the rest as JSON (true, 0.04)."""
    return value if isinstance(value, str) else json.dumps(value)


def cell(text) -> str:
    return str(text).replace("|", "\\|")


def artifact_size(folder: str) -> int:
    path = os.path.join(folder, ARTIFACT_NAME)
    read_artifact_meta(path)  # a missing or corrupt file is a GolfError naming it
    return os.path.getsize(path)


def run_fields(s: RunSummary, artifact_bytes) -> dict:
    """The numbers compared for one run (None where the log has none); --json prints these."""
    code = s.get("code_bytes")
    total = s.get("total_bytes")
    if artifact_bytes is not None:
        total = artifact_bytes + code if code is not None else None
    else:
        artifact_bytes = s.get("artifact_bytes")
    claim = s.reported_claim()
    as_int = (lambda v: None if v is None else int(v))
    return {"claimed_bpb": claim and claim["val_bpb"], "claimed_label": claim and claim["label"],
            "prequant_bpb": s.prequant_bpb(), "roundtrip_bpb": s.roundtrip_bpb(), "ttt_bpb": s.ttt_bpb(),
            "steps": s.final_step(), "step_avg_ms": s.step_avg_ms(), "train_s": s.train_seconds(),
            "eval_s": s.eval_seconds(), "artifact_bytes": as_int(artifact_bytes), "code_bytes": as_int(code),
            "total_bytes": as_int(total)}


def run_rows(s: RunSummary, artifact_bytes) -> dict[str, str]:
    """Metric name -> formatted value for one run, in table order."""
    f = run_fields(s, artifact_bytes)
    pre, rt, ttt = f["prequant_bpb"], f["roundtrip_bpb"], f["ttt_bpb"]
    return {"claimed BPB": fmt(f["claimed_bpb"], ".5f"), "claimed by": cell(f["claimed_label"] or MISSING),
            "steps": fmt(f["steps"], ",d"), "step_avg_ms": fmt(f["step_avg_ms"], ".2f"),
            "pre-quant BPB": fmt(pre, ".5f"), "round-trip BPB": fmt(rt, ".5f"),
            "quant gap (RT - pre)": fmt(difference(rt, pre), "+.5f"),
            "TTT gain (RT - TTT)": fmt(difference(rt, ttt), "+.5f"),
            "artifact bytes": fmt(f["artifact_bytes"], ",d"), "code bytes": fmt(f["code_bytes"], ",d"),
            "total bytes": fmt(f["total_bytes"], ",d"), "train s": fmt(f["train_s"], ".1f"),
            "eval s": fmt(f["eval_s"], ".1f")}


def compare_table(summaries: list[RunSummary], artifact_sizes: list) -> tuple[str, list[str]]:
    """(the Markdown table, footnotes)."""
    names = run_names(summaries)
    header = "| | " + " | ".join(cell(n) for n in names) + " |"
    lines = [header, "|---|" + "---:|" * len(names)]
    if any(s.recipe for s in summaries):
        lines.append("| recipe | " + " | ".join(cell(s.recipe or MISSING) for s in summaries) + " |")
    for key in config_differences(summaries):
        values = [config_text(s.config_fields[key]) if key in s.config_fields else MISSING for s in summaries]
        lines.append(f"| `{key}` | " + " | ".join(cell(v) for v in values) + " |")
    columns = [run_rows(s, size) for s, size in zip(summaries, artifact_sizes)]
    for metric in columns[0]:
        lines.append(f"| {metric} | " + " | ".join(c[metric] for c in columns) + " |")
    notes = []
    for name, s, size in zip(names, summaries, artifact_sizes):
        logged = s.get("artifact_bytes")
        if size is not None and logged is not None and logged != size:
            notes.append(f"{name}: the log says artifact_bytes {logged:,.0f}, the artifact file has {size:,}")
        fallback = s.size_fallback()
        if fallback:  # golf's SIZE_FALLBACK: its scores are of the artifact without AWQ-lite's groups
            notes.append(f"{name}: size_fallback rewrote the artifact without AWQ-lite's groups "
                         f"({fallback[0]:,} -> {fallback[1]:,} B): its scores are that artifact's")
    return "\n".join(lines), notes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+", metavar="RUN_LOG")
    parser.add_argument("--artifact-dir", nargs="+", default=None, metavar="DIR",
                        help=f"each run's OUT_DIR holding {ARTIFACT_NAME}, one per log, in order")
    parser.add_argument("--json", action="store_true", help="one JSON object per run per line instead of the table")
    args = parser.parse_args(argv)
    try:
        if args.artifact_dir and len(args.artifact_dir) != len(args.logs):
            raise GolfError(f"--artifact-dir: {len(args.artifact_dir)} folder(s) for {len(args.logs)} log(s); "
                            "give one per log, in the same order")
        summaries = read_run_logs(args.logs)
        sizes = [artifact_size(d) for d in args.artifact_dir] if args.artifact_dir else [None] * len(summaries)
    except GolfError as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2
    for s in summaries:
        note = unread_note(s)
        if note:
            print(f"compare: {note}", file=sys.stderr)
    if args.json:
        for name, s, size in zip(run_names(summaries), summaries, sizes):
            print(json.dumps({"run": name, "path": s.path, **run_fields(s, size)}))
        return 0
    table, notes = compare_table(summaries, sizes)
    print(table)
    if notes:
        print()
        for note in notes:
            print(f"- note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
