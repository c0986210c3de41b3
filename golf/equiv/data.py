"""Data pieces: the record's DocumentPackingLoader against golf's training loader (Config.train_loader) on the
bundled sample corpus, at the real batch (each side's train_batch_tokens, train_seq_len, 8 ranks).

Shards: the sample corpus's documents (data/sample/sotu.jsonl.xz, 233 documents of 5.5-217 KB, none of them
tokenised: one token per UTF-8 byte, ids 2-257, BOS 1 before each) split into SHARDS train shards in a temp dir, so
the run needs no tokenizer and crosses shard ends (the record skips a shard's tail) and wraps around.
Pieces: every rank's inputs and targets for STEPS steps; the attention segments as cu_seqlens (the record pads its
cu_seqlens to a multiple of 64 with the row length, R:607-609, empty segments for static compile shapes: compared
after that padding is stripped) and the longest segment.
"""

import dataclasses
import json
import lzma
import tempfile
from pathlib import Path

import numpy as np
import torch

from golf.config import GolfError, pick
from golf.data import BOS_ID, TRAIN_LOADERS, document_ids, shard_paths, write_shard
from golf.equiv.record import record_hparams, without_pinned_memory
from golf.equiv.report import Piece, compare, verdict
from golf.kernels.attention import varlen_boundaries

SAMPLE_CORPUS = Path(__file__).resolve().parents[2] / "data" / "sample" / "sotu.jsonl.xz"
SHARDS, STEPS, WORLD = 3, 16, 8  # 10.8 M byte tokens: ~13 steps of 786,432 per pass, so 16 steps wrap around


def write_sample_shards(directory: Path, corpus: Path = SAMPLE_CORPUS) -> int:
    """SHARDS shards named as the record's glob wants them (fineweb_train_*.bin); returns the token count."""
    try:
        with lzma.open(corpus, "rt", encoding="utf-8") as f:
            docs = [json.loads(line)["text"] for line in f if line.strip()]
    except (OSError, lzma.LZMAError, json.JSONDecodeError, KeyError) as e:
        raise GolfError(f"{corpus}: cannot read the sample corpus ({e}); restore it with `git checkout data/sample`")
    total = 0
    for i, part in enumerate(np.array_split(np.arange(len(docs)), SHARDS)):
        pieces = []
        for d in part:
            pieces += [np.array([BOS_ID], dtype=np.uint16),
                       np.frombuffer(docs[d].encode("utf-8"), dtype=np.uint8).astype(np.uint16) + 2]
        tokens = np.concatenate(pieces)
        write_shard(str(directory / f"fineweb_train_{i:06d}.bin"), tokens)
        total += len(tokens)
    return total


def record_boundaries(cu: torch.Tensor, total: int) -> tuple[list[int], bool]:
    """The record's cu_seqlens without its bucket padding, and whether the padding holds only `total`."""
    values = cu.tolist()
    end = values.index(total) + 1
    return values[:end], all(v == total for v in values[end:])


def record_batches(rec, directory: Path, rank: int) -> list[tuple]:
    h = record_hparams(rec, datasets_dir=str(directory), rank=rank, world_size=WORLD)
    batches = []
    with without_pinned_memory():
        loader = rec.module.DocumentPackingLoader(h, torch.device("cpu"))
        for _ in range(STEPS):
            x, y, cu, max_len = loader.next_batch(h.train_batch_tokens, h.grad_accum_steps)
            boundaries, padded_ok = record_boundaries(cu, x.numel())
            batches.append((x, y, boundaries, max_len, padded_ok))
        for future in loader._prefetch_queue:  # its prefetches must finish while pinning is off
            future.result()
    return batches


def golf_batches(cfg, directory: Path, rank: int) -> list[tuple]:
    loader = pick(TRAIN_LOADERS, cfg.train_loader, "TRAIN_LOADER")(shard_paths(str(directory), "train"), rank, WORLD)
    grad_accum = cfg.grad_accum_steps or 8 // WORLD
    batches = []
    for _ in range(STEPS):
        batch = loader.next_batch(cfg.train_batch_tokens, cfg.train_seq_len, grad_accum)
        x, y = batch[0], batch[1]
        doc_ids = batch[2] if len(batch) == 3 else document_ids(x)  # the segments golf's model attends within
        cu = varlen_boundaries(doc_ids)
        batches.append((x, y, cu.tolist(), int((cu[1:] - cu[:-1]).max())))
    return batches


def check(rec, cfg) -> list[Piece]:
    with tempfile.TemporaryDirectory(prefix="golf-equiv-data-") as tmp:
        directory = Path(tmp)
        total = write_sample_shards(directory)
        theirs = [b for rank in range(WORLD) for b in record_batches(rec, directory, rank)]
        ours = [b for rank in range(WORLD) for b in golf_batches(cfg, directory, rank)]
    where = f"{WORLD} ranks x {STEPS} steps, {SHARDS} shards of the sample corpus ({total:,} byte tokens)"
    shapes = {tuple(o[0].shape) for o in ours} | {tuple(t[0].shape) for t in theirs}
    if len(shapes) > 1:
        return [verdict("data.tokens", False, float("inf"), float("inf"),
                        f"batch shapes golf {tuple(ours[0][0].shape)} vs record {tuple(theirs[0][0].shape)}; {where}")]
    x_ours = torch.stack([torch.cat((o[0], o[1])) for o in ours])
    x_theirs = torch.stack([torch.cat((t[0], t[1])) for t in theirs])
    pieces = [compare("data.tokens", x_ours, x_theirs, 0, 0, detail=f"inputs and targets; {where}")]
    differ = [i for i, (o, t) in enumerate(zip(ours, theirs)) if o[2] != t[2] or o[3] != t[3]]
    segments = sum(len(t[2]) - 1 for t in theirs)
    padding = all(t[4] for t in theirs)
    detail = (f"{segments:,} segments over {len(theirs)} batches, {len(differ)} batches differ "
              f"(first: rank {differ[0] // STEPS} step {differ[0] % STEPS})" if differ else
              f"{segments:,} segments over {len(theirs)} batches equal, and max_seqlen")
    pieces.append(verdict("data.cu_seqlens", not differ and padding, float(len(differ)),
                          len(differ) / len(theirs), detail + ("" if padding else "; record padding not the row length")
                          + " (exact; the record's bucket padding stripped)"))
    return pieces
