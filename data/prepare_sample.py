"""Build the offline sample dataset: a tokenizer and train/val shards from the bundled SOTU corpus.

Usage: python data/prepare_sample.py [--vocab 8192] [--out data] [--plain]
Writes the CaseOps tokenizer (golf/caseops.py, the record's tokenizer family) <out>/tokenizers/sample_<V>_bpe_caseops.model
and <out>/datasets/sample_sp<V>_caseops/sample_{train,val}_000000.bin with the val byte sidecar
sample_val_bytes_000000.bin, plus a manifest.json; a re-run whose outputs still match the manifest skips the work.
--plain: a plain tokenizer sample_<V>_bpe.model and <out>/datasets/sample_sp<V>/ (no sidecar: the LUT byte rule).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import hashlib
import json
import lzma
import os
import time

import numpy as np
import torch

from golf.config import GolfError
from golf.data import read_shard, sidecar_path, write_bytes_atomic, write_shard
from golf.tokenizer import (
    SP_BOS_ID,
    build_byte_luts,
    caseops_token_bytes,
    decoded_byte_count,
    encode_docs,
    load_tokenizer,
    token_bytes,
    tokenizer_transform,
    train_tokenizer,
)

SAMPLE_CORPUS = str(Path(__file__).resolve().parent / "sample" / "sotu.jsonl.xz")
# Every 20th document in id order (ids are "<year>_<president>_<party>") is held out: ~5% val,
# spread over all eras rather than only the most recent speeches.
VAL_EVERY = 20
SPLIT_RULE = f"val = documents at positions {VAL_EVERY - 1}, {2 * VAL_EVERY - 1}, ... (every {VAL_EVERY}th) in sorted-id order"


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_corpus(corpus: str) -> list[dict]:
    """Documents {"id", "text"} of a .jsonl.xz corpus, sorted by id."""
    try:
        with lzma.open(corpus, "rt", encoding="utf-8") as f:
            docs = [json.loads(line) for line in f if line.strip()]
    except (OSError, lzma.LZMAError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GolfError(f"{corpus}: cannot read the sample corpus ({err}); restore it with `git checkout data/sample`") from None
    return sorted(docs, key=lambda doc: doc["id"])


def split_train_val(docs: list[dict]) -> tuple[list[dict], list[dict]]:
    """Whole documents: every VAL_EVERY-th in the given order goes to val, the rest to train."""
    val = [doc for i, doc in enumerate(docs) if i % VAL_EVERY == VAL_EVERY - 1]
    train = [doc for i, doc in enumerate(docs) if i % VAL_EVERY != VAL_EVERY - 1]
    return train, val


def tokenize_docs(sp, docs: list[dict]) -> np.ndarray:
    """[BOS] + ids of each document (through the tokenizer's text transform), concatenated (uint16[N])."""
    encoded = encode_docs(sp, [doc["text"] for doc in docs])
    return np.concatenate([np.array([SP_BOS_ID] + ids, dtype=np.uint16) for ids in encoded])


def val_byte_counts(sp, val_tokens: np.ndarray, vocab_size: int, where: str) -> tuple[int, np.ndarray | None]:
    """(UTF-8 bytes of the val targets, the byte sidecar; None for a plain tokenizer), checked against decoding."""
    luts = build_byte_luts(sp, vocab_size)
    if tokenizer_transform(sp) == "caseops":
        sidecar = caseops_token_bytes(val_tokens, luts)
        val_bytes = int(sidecar[1:].astype(np.int64).sum())
    else:
        sidecar = None
        val_ids = torch.from_numpy(val_tokens.astype(np.int64))
        val_bytes = int(token_bytes(val_ids[:-1], val_ids[1:], luts).sum())
    if val_bytes != decoded_byte_count(sp, val_tokens.tolist()):
        raise GolfError(f"{where}: val byte counts disagree with decoding; this is a bug in golf.tokenizer")
    return val_bytes, sidecar


def sample_paths(out_dir: str, vocab_size: int, transform: str = "plain") -> dict[str, str]:
    suffix = "" if transform == "plain" else f"_{transform}"
    dataset_dir = os.path.join(out_dir, "datasets", f"sample_sp{vocab_size}{suffix}")
    val = os.path.join(dataset_dir, "sample_val_000000.bin")
    return {
        "tokenizer": os.path.join(out_dir, "tokenizers", f"sample_{vocab_size}_bpe{suffix}.model"),
        "train": os.path.join(dataset_dir, "sample_train_000000.bin"),
        "val": val,
        "val_bytes": sidecar_path(val),
        "manifest": os.path.join(dataset_dir, "manifest.json"),
    }


def existing_manifest(paths: dict[str, str], corpus_sha256: str, vocab_size: int, transform: str) -> dict | None:
    """The manifest if every output exists, verifies and matches it; None when anything must be rebuilt."""
    try:
        with open(paths["manifest"], encoding="utf-8") as f:
            manifest = json.load(f)
        matches = (
            manifest["corpus_sha256"] == corpus_sha256
            and manifest["vocab_size"] == vocab_size
            and manifest.get("text_transform", "plain") == transform
            and manifest["tokenizer_sha256"] == file_sha256(paths["tokenizer"])
            and manifest["tokens_train"] == len(read_shard(paths["train"]))
            and manifest["tokens_val"] == len(read_shard(paths["val"]))
            and (transform == "plain" or manifest["tokens_val"] == len(read_shard(paths["val_bytes"])))
        )
    except (OSError, ValueError, KeyError, TypeError, GolfError):
        return None
    return manifest if matches else None


def prepare_sample(out_dir: str = "data", vocab_size: int = 8192, corpus: str = SAMPLE_CORPUS,
                   transform: str = "caseops") -> dict:
    """Build (or verify and skip) the sample tokenizer and shards; returns the manifest plus "skipped".

    transform "caseops" (the default's tokenizer family): a CaseOps tokenizer, and the val byte sidecar beside the
    val shard; "plain": a plain tokenizer, no sidecar.
    """
    start = time.time()
    paths = sample_paths(out_dir, vocab_size, transform)
    corpus_sha256 = file_sha256(corpus) if os.path.isfile(corpus) else None
    if corpus_sha256 is None:
        raise GolfError(f"{corpus}: sample corpus not found; restore it with `git checkout data/sample`")
    manifest = existing_manifest(paths, corpus_sha256, vocab_size, transform)
    if manifest is not None:
        return {**manifest, "skipped": True, "seconds": time.time() - start}

    train_docs, val_docs = split_train_val(read_corpus(corpus))
    train_tokenizer((doc["text"] for doc in train_docs), vocab_size, paths["tokenizer"], transform)
    sp = load_tokenizer(paths["tokenizer"])
    train_tokens = tokenize_docs(sp, train_docs)
    val_tokens = tokenize_docs(sp, val_docs)
    val_bytes, sidecar = val_byte_counts(sp, val_tokens, vocab_size, paths["tokenizer"])
    write_shard(paths["train"], train_tokens)
    write_shard(paths["val"], val_tokens)
    if sidecar is not None:
        write_shard(paths["val_bytes"], sidecar)  # the sidecar has the token shard's layout
    manifest = {
        "corpus": os.path.basename(corpus),
        "corpus_sha256": corpus_sha256,
        "vocab_size": vocab_size,
        "tokenizer": os.path.basename(paths["tokenizer"]),
        "tokenizer_sha256": file_sha256(paths["tokenizer"]),
        "split_rule": SPLIT_RULE,
        "docs_train": len(train_docs),
        "docs_val": len(val_docs),
        "tokens_train": len(train_tokens),
        "tokens_val": len(val_tokens),
        "val_bytes": val_bytes,
    }
    if transform != "plain":  # the plain manifest keeps its old keys, so existing sample data stays valid
        manifest.update(text_transform=transform, val_bytes_sidecar=os.path.basename(paths["val_bytes"]))
    write_bytes_atomic(paths["manifest"], (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return {**manifest, "skipped": False, "seconds": time.time() - start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=8192, help="tokenizer vocab size (default 8192)")
    parser.add_argument("--out", default="data", help="output root (default data)")
    parser.add_argument("--corpus", default=SAMPLE_CORPUS, help="a .jsonl.xz of {id, text} documents")
    parser.add_argument("--plain", action="store_true", help="a plain tokenizer, no byte sidecar (recipe sp8192)")
    args = parser.parse_args()
    transform = "plain" if args.plain else "caseops"
    try:
        result = prepare_sample(args.out, args.vocab, args.corpus, transform)
    except GolfError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    where = os.path.dirname(sample_paths(args.out, args.vocab, transform)["manifest"])
    verb = "skipped (outputs exist and match the manifest)" if result["skipped"] else "made"
    print(
        f"{where}: {verb}: docs {result['docs_train']} train / {result['docs_val']} val, "
        f"tokens {result['tokens_train']} train / {result['tokens_val']} val, "
        f"val bytes {result['val_bytes']}, {result['seconds']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
