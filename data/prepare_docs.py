"""Tokenize a raw document stream (FineWeb's docs_selected.jsonl) into challenge shards, optionally with CaseOps.

Usage: python data/prepare_docs.py --docs data/docs_selected.jsonl [--caseops] [--vocab 8192] [--val-docs N]
           [--tokenizer-docs 100000] [--tokenizer MODEL] [--train-shards N] [--shard-tokens 100000000] [--out data]
The first val-docs documents are val (the challenge's split: docs_selected.source_manifest.json's docs_val beside
--docs, else 50,000), the rest train. A tokenizer is trained on the first --tokenizer-docs TRAIN documents (never
val) unless --tokenizer reuses one. Writes <out>/tokenizers/<name>.model and <out>/datasets/<dataset>/
fineweb_{train,val}_NNNNNN.bin (+ fineweb_val_bytes_NNNNNN.bin, the byte sidecar, for CaseOps) + manifest.json,
named as the records name them (CaseOps: fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model and
fineweb10B_sp8192_lossless_caps_caseops_v1_reserved/). Then: python tools/bpb_check.py --data ... --tokenizer ...
--text-source <docs>. Get the documents with python data/download_fineweb.py --with-docs.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import itertools
import json
import os
import shutil
import time
from collections.abc import Iterator

import numpy as np

from golf.config import GolfError
from golf.data import sidecar_path, write_bytes_atomic, write_shard
from golf.tokenizer import (
    SP_BOS_ID,
    build_byte_luts,
    caseops_token_bytes,
    encode_docs,
    load_tokenizer,
    tokenizer_transform,
    train_tokenizer,
)

DEFAULT_VAL_DOCS = 50_000  # upstream data/download_hf_docs_and_tokenize.py NUM_VAL_DOCS
SHARD_TOKENS = 10**8  # upstream SHARD_SIZE
ENCODE_BATCH = 1024  # documents per sentencepiece batch call
NAMES = {  # transform -> (tokenizer file, dataset dir) for vocab V
    "plain": ("fineweb_{v}_bpe.model", "fineweb10B_sp{v}"),
    "caseops": ("fineweb_{v}_bpe_lossless_caps_caseops_v1_reserved.model",
                "fineweb10B_sp{v}_lossless_caps_caseops_v1_reserved"),
}


def read_docs(path: str) -> Iterator[str]:
    """The "text" of each line of a .jsonl file (a bare JSON string is a document too)."""
    number = 0
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    obj = json.loads(line)
                    yield obj["text"] if isinstance(obj, dict) else str(obj)
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise GolfError(f"{path} line {number}: cannot read documents ({type(err).__name__}: {err})") from None


def default_val_docs(docs_path: str) -> int:
    """docs_val of the stream's source manifest (docs_selected.source_manifest.json beside it), else 50,000."""
    manifest = os.path.join(os.path.dirname(docs_path), Path(docs_path).stem + ".source_manifest.json")
    try:
        with open(manifest, encoding="utf-8") as f:
            return int(json.load(f)["docs_val"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_VAL_DOCS


class ShardWriter:
    """Buffers [BOS] + ids per document and writes fixed-size shards <prefix>_NNNNNN.bin (+ the val byte sidecar)."""

    def __init__(self, directory: str, split: str, shard_tokens: int, luts=None, max_shards: int | None = None):
        self.directory, self.split, self.shard_tokens, self.luts = directory, split, shard_tokens, luts
        self.max_shards = max_shards
        self.tokens: list[np.ndarray] = []
        self.sidecar: list[np.ndarray] = []
        self.buffered = 0
        self.shards = 0
        self.total = 0

    @property
    def full(self) -> bool:
        return self.max_shards is not None and self.shards >= self.max_shards

    def add(self, docs: list[list[int]]) -> None:
        batch = np.array([t for ids in docs for t in [SP_BOS_ID] + ids], dtype=np.uint16)
        self.tokens.append(batch)
        if self.luts is not None:  # the batch starts with BOS, so its counts do not depend on what came before
            self.sidecar.append(caseops_token_bytes(batch, self.luts))
        self.buffered += len(batch)
        while self.buffered >= self.shard_tokens and not self.full:
            self.flush(self.shard_tokens)

    def flush(self, count: int | None = None) -> None:
        tokens = np.concatenate(self.tokens) if self.tokens else np.zeros(0, np.uint16)
        count = len(tokens) if count is None else count
        if count == 0 or self.full:
            return
        path = os.path.join(self.directory, f"fineweb_{self.split}_{self.shards:06d}.bin")
        write_shard(path, tokens[:count])
        self.tokens = [tokens[count:]]
        if self.luts is not None:
            sidecar = np.concatenate(self.sidecar)
            write_shard(sidecar_path(path), sidecar[:count])
            self.sidecar = [sidecar[count:]]
        self.buffered -= count
        self.total += count
        self.shards += 1


def prepare_docs(docs_path: str, out_dir: str = "data", vocab_size: int = 8192, transform: str = "plain",
                 val_docs: int | None = None, tokenizer_docs: int = 100_000, tokenizer: str | None = None,
                 train_shards: int | None = None, shard_tokens: int = SHARD_TOKENS) -> dict:
    """Tokenizer (trained or reused) + shards from a .jsonl document stream; returns the manifest written."""
    start = time.time()
    val_docs = default_val_docs(docs_path) if val_docs is None else val_docs
    model_name, dataset_name = (n.format(v=vocab_size) for n in NAMES[transform])
    model_path = os.path.join(out_dir, "tokenizers", model_name)
    dataset_dir = os.path.join(out_dir, "datasets", dataset_name)
    if tokenizer is None:
        train_texts = itertools.islice(read_docs(docs_path), val_docs, val_docs + tokenizer_docs)
        train_tokenizer(train_texts, vocab_size, model_path, transform)
    elif os.path.abspath(tokenizer) != os.path.abspath(model_path):
        os.makedirs(os.path.dirname(model_path), exist_ok=True)
        shutil.copyfile(tokenizer, model_path)
    sp = load_tokenizer(model_path)
    if tokenizer_transform(sp) != transform or sp.vocab_size() != vocab_size:
        raise GolfError(f"{tokenizer or model_path}: a {tokenizer_transform(sp)} tokenizer of {sp.vocab_size()} "
                        f"pieces, not {transform} of {vocab_size}")
    os.makedirs(dataset_dir, exist_ok=True)
    luts = build_byte_luts(sp, vocab_size) if transform == "caseops" else None
    writers = {"val": ShardWriter(dataset_dir, "val", shard_tokens, luts),
               "train": ShardWriter(dataset_dir, "train", shard_tokens, max_shards=train_shards)}
    counts = {"val": 0, "train": 0}
    docs = read_docs(docs_path)
    while True:
        split = "val" if counts["val"] < val_docs else "train"
        if split == "train" and writers["train"].full:
            break
        limit = val_docs - counts["val"] if split == "val" else ENCODE_BATCH
        batch = list(itertools.islice(docs, min(ENCODE_BATCH, limit)))
        if not batch:
            break
        writers[split].add(encode_docs(sp, batch))
        counts[split] += len(batch)
        if split == "val" and counts["val"] == val_docs:
            writers["val"].flush()  # the last val shard may be short; train starts its own shards
    for writer in writers.values():
        writer.flush()  # the rest, as a short last shard (unless the train shard limit is reached)
    if counts["val"] < val_docs:
        raise GolfError(f"{docs_path}: only {counts['val']} documents, fewer than the {val_docs} val documents")
    manifest = {"docs": os.path.basename(docs_path), "text_transform": transform, "vocab_size": vocab_size,
                "tokenizer": model_name, "docs_val": counts["val"], "docs_train": counts["train"],
                "files_val": writers["val"].shards, "files_train": writers["train"].shards,
                "tokens_val": writers["val"].total, "tokens_train": writers["train"].total,
                "val_bytes_sidecar": transform == "caseops", "seconds": round(time.time() - start, 1)}
    write_bytes_atomic(os.path.join(dataset_dir, "manifest.json"), (json.dumps(manifest, indent=2) + "\n").encode())
    return {**manifest, "dataset_dir": dataset_dir, "tokenizer_path": model_path}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", required=True, help="a .jsonl of {\"text\": ...} documents (docs_selected.jsonl)")
    parser.add_argument("--caseops", action="store_true", help="CaseOps tokenizer + val byte sidecar")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--val-docs", type=int, default=None, help="first N documents are val (default: the "
                        "source manifest's docs_val, else 50000)")
    parser.add_argument("--tokenizer-docs", type=int, default=100_000, help="train documents to train the tokenizer on")
    parser.add_argument("--tokenizer", default=None, help="reuse this model instead of training one")
    parser.add_argument("--train-shards", type=int, default=None, help="stop after this many train shards")
    parser.add_argument("--shard-tokens", type=int, default=SHARD_TOKENS)
    parser.add_argument("--out", default="data")
    args = parser.parse_args()
    try:
        result = prepare_docs(args.docs, args.out, args.vocab, "caseops" if args.caseops else "plain", args.val_docs,
                              args.tokenizer_docs, args.tokenizer, args.train_shards, args.shard_tokens)
    except GolfError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{result['dataset_dir']}: docs {result['docs_train']} train / {result['docs_val']} val, shards "
          f"{result['files_train']} train / {result['files_val']} val, tokens {result['tokens_train']} train / "
          f"{result['tokens_val']} val; tokenizer {result['tokenizer_path']}; {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
