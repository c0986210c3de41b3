"""Proof that a dataset's BPB byte count is right: decode the val stream and compare it with the documents.

    python tools/bpb_check.py --data DIR --tokenizer MODEL [--text-source FILE|sample] [--json]

For any sentencepiece tokenizer with shards in the challenge layout; a CaseOps tokenizer (golf/caseops.py,
operators at ids 4-7) is inverted after decoding. Checks, one line each:
  1. stream: the val stream starts with BOS (token 0 is never a target, so a missing BOS loses bytes).
  2. byte rule: the bytes evaluation sums (golf.evaluate.target_byte_counts: the val byte sidecar
     `*_val_bytes_*.bin` when the data has one, else the LUT rule) count 0 for every BOS target, and
     one count per target (val tokens - 1).
  3. per document: those bytes summed over each document's targets equal the UTF-8 length of the
     document decoded (and, for CaseOps, inverted); the total equals the sum.
  4. documents (with --text-source): the decoded documents are, in order and byte for byte, the
     source documents as the tokenizer's normaliser (nmt_nfkc for the challenge tokenizers) writes them;
     a WARN line says how far that normalised text is from the raw text (the challenge scores the
     decoded text, as its plain SP tokenizers do). --text-source FILE: .jsonl / .jsonl.xz of {"text"}
     documents whose first D are the val documents (the challenge's docs_selected.jsonl layout);
     `sample`: the bundled sample corpus's val split (data/prepare_sample.py).
Exit 0 all PASS (WARN allowed), 1 any FAIL, 2 bad input (missing or corrupt data, tokenizer, source).
"""

import argparse
import json
import lzma
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from golf.caseops import CaseOpsError  # noqa: E402
from golf.config import GolfError  # noqa: E402
from golf.data import load_val_byte_sidecar, load_val_tokens  # noqa: E402
from golf.tokenizer import (  # noqa: E402
    SP_BOS_ID,
    build_byte_luts,
    decode_document,
    load_tokenizer,
    normalised_text,
    tokenizer_transform,
)
from golf.evaluate import target_byte_counts  # noqa: E402


def read_text_source(source: str, count: int) -> list[str]:
    """The first `count` documents of a .jsonl(.xz) file, or the sample corpus's val split."""
    if source == "sample":
        from data.prepare_sample import SAMPLE_CORPUS, read_corpus, split_train_val

        return [doc["text"] for doc in split_train_val(read_corpus(SAMPLE_CORPUS))[1]]
    opener = lzma.open if source.endswith(".xz") else open
    docs = []
    try:
        with opener(source, "rt", encoding="utf-8") as f:
            for line in f:
                if len(docs) == count:
                    break
                if line.strip():
                    obj = json.loads(line)
                    docs.append(obj["text"] if isinstance(obj, dict) else str(obj))
    except (OSError, lzma.LZMAError, ValueError, KeyError, UnicodeDecodeError) as err:
        raise GolfError(f"{source}: cannot read documents ({type(err).__name__}: {err}); "
                        "give a .jsonl or .jsonl.xz of {\"text\": ...} lines, or `sample`") from None
    return docs


def check(data: str, tokenizer: str, text_source: str | None) -> list[dict]:
    """The checks as dicts {check, status PASS/FAIL/WARN, figure, limit}."""
    sp = load_tokenizer(tokenizer)
    transform = tokenizer_transform(sp)
    tokens = load_val_tokens(data)
    sidecar = load_val_byte_sidecar(data)
    if transform == "caseops" and sidecar is None:
        raise GolfError(f"{data}: CaseOps tokenizer but no val byte sidecar (*_val_bytes_*.bin); "
                        "the LUT rule would count operator bytes; rebuild the data")
    if tokens.numel() == 0:
        raise GolfError(f"{data}: the val stream is empty")
    if int(tokens.max()) >= sp.vocab_size():
        raise GolfError(f"{data}: val token id {int(tokens.max())} is outside the tokenizer's {sp.vocab_size()} pieces")
    rule = "sidecar" if sidecar is not None else "LUT rule"
    results = []

    def add(name: str, ok: bool | None, figure, limit) -> None:
        status = "PASS" if ok else "WARN" if ok is None else "FAIL"
        results.append({"check": name, "status": status, "figure": figure, "limit": limit})

    n = tokens.numel()
    add("stream starts with BOS", bool(n) and int(tokens[0]) == SP_BOS_ID, f"token 0 = {int(tokens[0])}",
        f"BOS = {SP_BOS_ID}")
    target_bytes = target_byte_counts(tokens, build_byte_luts(sp, sp.vocab_size()), sidecar)
    bos_targets = tokens[1:] == SP_BOS_ID
    add(f"{rule}: one count per target", target_bytes.numel() == n - 1, f"{target_bytes.numel()} counts",
        f"{n - 1} targets")
    add(f"{rule}: BOS targets count 0 bytes", int(target_bytes[bos_targets].abs().sum()) == 0,
        f"{int(target_bytes[bos_targets].sum())} bytes on {int(bos_targets.sum())} BOS targets", "0")

    # A document runs from its BOS to the next BOS (exclusive); ids before the first BOS are a document too.
    stream = tokens.numpy()
    starts = sorted({0, *np.flatnonzero(stream == SP_BOS_ID).tolist()})
    ends = starts[1:] + [n]
    cumulative = np.concatenate([[0], np.cumsum(target_bytes.numpy())])  # cumulative[p]: bytes of tokens 1..p
    decoded, counted, undecodable = [], [], []
    for s, e in zip(starts, ends):
        try:
            decoded.append(decode_document(sp, stream[s + 1 if stream[s] == SP_BOS_ID else s : e].tolist()))
        except CaseOpsError as err:  # operators out of place: no text to count, a mismatch
            decoded.append("")
            undecodable.append(f"doc {len(counted)}: {err}")
        # Its tokens s+1 .. e-1 are targets s .. e-2. Token 0 is no target: without a BOS its bytes are lost.
        counted.append(int(cumulative[e - 1] - cumulative[s]))
    actual = [len(text.encode("utf-8")) for text in decoded]
    if undecodable:
        add("CaseOps operators decode", False, f"{len(undecodable)} docs do not; first: {undecodable[0]}", "0")
    wrong = [k for k, (c, a) in enumerate(zip(counted, actual)) if c != a]
    first = f"; first: doc {wrong[0]} counts {counted[wrong[0]]} vs {actual[wrong[0]]} decoded" if wrong else ""
    add(f"{rule} = decoded bytes, per document", not wrong, f"{len(wrong)} of {len(starts)} docs differ{first}", "0")
    add(f"{rule} = decoded bytes, total", sum(counted) == sum(actual) and int(target_bytes.sum()) == sum(actual),
        f"{int(target_bytes.sum())} bytes counted", f"{sum(actual)} decoded ({transform} tokenizer)")

    if text_source is None:
        add("decoded = source documents", None, "not compared (no --text-source)", "byte for byte")
        return results
    docs = read_text_source(text_source, len(decoded))
    add("document count", len(docs) == len(decoded), f"{len(decoded)} in the val stream", f"{len(docs)} in the source")
    expected = [normalised_text(sp, doc) for doc in docs]
    differ = [k for k, (d, x) in enumerate(zip(decoded, expected)) if d != x]
    where = ""
    if differ:
        k = differ[0]
        at = next((i for i, (a, b) in enumerate(zip(decoded[k], expected[k])) if a != b),
                  min(len(decoded[k]), len(expected[k])))
        where = f"; first: doc {k} at char {at}: {decoded[k][at:at + 24]!r} vs {expected[k][at:at + 24]!r}"
    add("decoded = source documents (normalised), byte for byte", not differ and len(docs) == len(decoded),
        f"{len(differ)} of {min(len(docs), len(decoded))} docs differ{where}", "0")
    raw = sum(len(doc.encode("utf-8")) for doc in docs)
    changed = sum(doc != x for doc, x in zip(docs, expected))
    add("normaliser vs raw text", None if changed else True,
        f"{changed} docs changed by it; scored {sum(actual)} bytes vs raw {raw} ({sum(actual) - raw:+d})",
        "0 changed")
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="shard dir with *_val_*.bin (and *_val_bytes_*.bin)")
    ap.add_argument("--tokenizer", required=True, help="the sentencepiece model the shards were made with")
    ap.add_argument("--text-source", default=None, help="the documents: .jsonl(.xz) (first D are val) or `sample`")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON list")
    args = ap.parse_args(argv)
    try:
        results = check(args.data, args.tokenizer, args.text_source)
    except GolfError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        width = max(len(r["check"]) for r in results)
        for r in results:
            print(f"{r['status']:<4}  {r['check']:<{width}}  {r['figure']}  (limit: {r['limit']})")
    failed = sum(r["status"] == "FAIL" for r in results)
    if not args.json:
        print(f"bpb_check: {len(results) - failed}/{len(results)} not FAIL" + (f", {failed} FAIL" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
