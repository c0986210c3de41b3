"""Size gate: exact bytes of the artifact file and the code file as shipped, against the limit.

    python tools/size_check.py ARTIFACT [--code train_gpt.py] [--limit 16000000] [--json]

Prints a table by tensor group (params, bits, raw bytes, compressed bytes, bits/param), under each
group its parts' compressed bytes (q symbols, scales, LQER factors, raw data), and the total against
the limit. Exit 0 within the limit, 1 over it, 2 on unreadable or corrupt input.
Without --code the code bytes count as 0 (the table says so).
A file that is not a golf artifact (upstream's final_model.int8.ptz / .int6.ptz: a zlib, lzma, zstd or
brotli-wrapped torch.save state dict) is read by golf/upstream_artifact.py: its exact file bytes count,
and the table lists each tensor (dtype, shape, params, raw bytes) by torch.load(weights_only=True).
"""
import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.artifact import artifact_report  # noqa: E402
from golf.config import GolfError  # noqa: E402
from golf.upstream_artifact import upstream_report  # noqa: E402

CHALLENGE_LIMIT = 16_000_000  # decimal bytes: code + compressed model


def file_bytes(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError as e:
        raise GolfError(f"{path}: cannot read: {e.strerror or e}") from None


def size_summary(artifact: str, code: str | None, limit: int) -> dict:
    groups = artifact_report(artifact)
    artifact_bytes = file_bytes(artifact)
    code_bytes = file_bytes(code) if code else 0
    total = artifact_bytes + code_bytes
    return {"artifact": artifact, "code": code, "artifact_bytes": artifact_bytes, "code_bytes": code_bytes,
            "total_bytes": total, "limit": limit, "headroom_bytes": limit - total, "fits": total <= limit,
            "groups": groups}


def total_lines(summary: dict) -> list[str]:
    """The artifact, code and total lines that end both reports (ours and upstream artifacts)."""
    code = summary["code"] or "(no --code given: not counted)"
    verdict = "OK" if summary["fits"] else "OVER LIMIT"
    return [f"artifact {summary['artifact']}: {summary['artifact_bytes']:,} bytes",
            f"code     {code}: {summary['code_bytes']:,} bytes",
            f"total    {summary['total_bytes']:,} / limit {summary['limit']:,} bytes: "
            f"headroom {summary['headroom_bytes']:,} ({verdict})"]


def format_table(summary: dict) -> str:
    lines = [f"{'group':<20} {'tensors':>7} {'params':>12} {'bits':>8} {'raw bytes':>12} "
             f"{'compressed':>12} {'bits/param':>10}"]
    for row in summary["groups"]:
        bpp = "" if row["bits_per_param"] is None else f"{row['bits_per_param']:.3f}"
        bits = ",".join(str(b) for b in row["bits"])
        lines.append(f"{row['group']:<20} {row['tensors']:>7} {row['params']:>12,} {bits:>8} "
                     f"{row['raw_bytes']:>12,} {row['compressed_bytes']:>12,} {bpp:>10}")
        for part, size in row.get("parts", {}).items():  # each part's own block: symbols, scales, LQER factors
            codec = row.get("codecs", {}).get(part, "")
            lines.append(f"{'  ' + row['group'] + '/' + part:<20} {'':>7} {'':>12} {'':>8} {'':>12} {size:>12,}"
                         f"{'  ' + codec if codec else ''}")
    return "\n".join(lines + total_lines(summary))


# ---- upstream artifacts (issue 17): any file without golf's magic
def is_golf_artifact(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GOLF"
    except OSError as e:
        raise GolfError(f"{path}: cannot read: {e.strerror or e}") from None


def upstream_summary(artifact: str, code: str | None, limit: int) -> dict:
    report = upstream_report(artifact)
    artifact_bytes, code_bytes = file_bytes(artifact), file_bytes(code) if code else 0
    total = artifact_bytes + code_bytes
    return {"artifact": artifact, "code": code, "format": "upstream torch.save", **report,
            "artifact_bytes": artifact_bytes, "code_bytes": code_bytes, "total_bytes": total, "limit": limit,
            "headroom_bytes": limit - total, "fits": total <= limit}


def format_upstream(summary: dict) -> str:
    lines = [f"{'tensor':<48} {'dtype':>9} {'shape':>16} {'params':>12} {'raw bytes':>12}"]
    for t in summary["tensors"]:
        shape = "x".join(str(d) for d in t["shape"]) or "scalar"
        lines.append(f"{t['name'][:48]:<48} {t['dtype']:>9} {shape:>16} {t['params']:>12,} {t['bytes']:>12,}")
    for dtype, d in sorted(summary["by_dtype"].items()):
        lines.append(f"{'(all ' + dtype + ')':<48} {dtype:>9} {d['tensors']:>14} t {d['params']:>12,} {d['bytes']:>12,}")
    shuffle = f", byte-shuffled stride {summary['shuffle_stride']}" if summary["shuffle_stride"] else ""
    lines.append(f"container: {summary['codec']}{shuffle}; torch.save bytes {summary['torch_bytes']:,}")
    return "\n".join(lines + total_lines(summary))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact")
    parser.add_argument("--code", default=None, help="the shipped code file (e.g. train_gpt.py)")
    parser.add_argument("--limit", type=int, default=CHALLENGE_LIMIT)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    try:
        ours = is_golf_artifact(args.artifact)
        summary = (size_summary if ours else upstream_summary)(args.artifact, args.code, args.limit)
    except GolfError as e:
        print(f"size_check: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary) if args.json else (format_table if ours else format_upstream)(summary))
    return 0 if summary["fits"] else 1


if __name__ == "__main__":
    sys.exit(main())
