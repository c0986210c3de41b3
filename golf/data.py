"""Token shards on disk: read/write/verify, the rank-sharded training stream, val tokens, fingerprint.

Shard layout (the challenge's): 256 little-endian int32 header words ([0] magic 20240520,
[1] version 1, [2] token count), then that many little-endian uint16 tokens.
A val shard `X_val_NNNNNN.bin` may have a byte sidecar `X_val_bytes_NNNNNN.bin` in the same layout
(the records' CaseOps data: PR #1736 prepare_caseops_data.py): entry i is the original UTF-8 bytes
val token i stands for, so BPB is scored on the original text whatever the tokenizer's transform.
"""

import glob
import hashlib
import os
import tempfile
from typing import Protocol

import numpy as np
import torch

from golf.config import GolfError, packed_when

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
SHARD_HEADER_WORDS = 256
SHARD_HEADER_BYTES = SHARD_HEADER_WORDS * 4
SHARD_SPLITS = ("train", "val")
BOS_ID = 1  # every document in a shard starts with BOS (golf/tokenizer.py trains with bos_id=1)
SIDECAR_TAG = "_val_bytes_"  # X_val_bytes_NNNNNN.bin beside X_val_NNNNNN.bin; it also matches *_val_*.bin
MAKE_DATA_HINT = "run `python data/prepare_sample.py` (sample) or `python data/download_fineweb.py` (FineWeb)"

# Every shard whose tokens were read, in order (absolute paths), appended by read_shard. Tests of
# the challenge's data rules use it to prove, e.g., that training never touched a val shard.
SHARD_READS: list[str] = []


def write_bytes_atomic(path: str, data: bytes, durable: bool = False) -> None:
    """Write data to path via a temp file in the same dir and os.replace, so path is never half-written.
    durable: the bytes are fsynced before the rename (a checkpoint must survive a crash right after)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a data file is for everyone to read
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_shard(path: str, tokens: np.ndarray) -> None:
    """Write a 1-D array of token ids (each in 0..65535) as a shard, atomically."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or not (np.issubdtype(tokens.dtype, np.integer) or tokens.size == 0):
        raise GolfError(f"{path}: shard tokens must be a 1-D integer array, got {tokens.dtype} of shape {tokens.shape}")
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) > 0xFFFF):
        raise GolfError(
            f"{path}: token ids span {int(tokens.min())}..{int(tokens.max())}, outside uint16 0..65535; "
            "use a vocab of at most 65536"
        )
    if tokens.size >= 2**31:
        raise GolfError(f"{path}: {tokens.size} tokens do not fit the int32 header count; write several shards")
    header = np.zeros(SHARD_HEADER_WORDS, dtype="<i4")
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, tokens.size)
    write_bytes_atomic(path, header.tobytes() + tokens.astype("<u2").tobytes())


def shard_token_count(path: str) -> int:
    """Token count of a shard after checking its magic, version and exact file length (header only)."""
    size = os.path.getsize(path) if os.path.isfile(path) else None
    if size is None:
        raise GolfError(f"{path}: shard not found; {MAKE_DATA_HINT}")
    if size < SHARD_HEADER_BYTES:
        raise GolfError(
            f"{path}: truncated shard, {size} bytes is shorter than the {SHARD_HEADER_BYTES}-byte header; "
            f"delete it and {MAKE_DATA_HINT}"
        )
    header = np.fromfile(path, dtype="<i4", count=SHARD_HEADER_WORDS)
    if header[0] != SHARD_MAGIC:
        raise GolfError(f"{path}: wrong magic {header[0]} (expected {SHARD_MAGIC}); not a token shard")
    if header[1] != SHARD_VERSION:
        raise GolfError(f"{path}: unsupported shard version {header[1]} (expected {SHARD_VERSION})")
    count = int(header[2])
    expected = SHARD_HEADER_BYTES + 2 * count
    if size != expected:
        problem = "truncated" if size < expected else "too long"
        raise GolfError(
            f"{path}: {problem} shard, header says {count} tokens = {expected} bytes but the file has {size} bytes; "
            f"delete it and {MAKE_DATA_HINT}"
        )
    return count


def read_shard(path: str) -> np.ndarray:
    """Tokens of one verified shard as uint16[count]; records the read in SHARD_READS."""
    count = shard_token_count(path)
    SHARD_READS.append(os.path.abspath(path))
    return np.fromfile(path, dtype="<u2", count=count, offset=SHARD_HEADER_BYTES)


def shard_paths(data_path: str, split: str) -> list[str]:
    """Sorted shards `*_{split}_*.bin` in data_path; split is 'train' or 'val'."""
    if split not in SHARD_SPLITS:
        raise GolfError(f"{data_path}: unknown split {split!r}; use one of {SHARD_SPLITS}")
    pattern = f"*_{split}_*.bin"
    paths = sorted(p for p in glob.glob(os.path.join(glob.escape(data_path), pattern))
                   if SIDECAR_TAG not in os.path.basename(p))
    if not paths:
        raise GolfError(f"{data_path}: no shards matching {pattern}; {MAKE_DATA_HINT}")
    return paths


class TokenStream:
    """Endless reader over shards in order; after the last shard it starts again at the first."""

    def __init__(self, paths: list[str]):
        if not paths:
            raise GolfError(f"TokenStream: no shard paths given; {MAKE_DATA_HINT}")
        self.paths = list(paths)
        self.shard_index = 0
        self.tokens = read_shard(self.paths[0])
        self.position = 0

    def advance_shard(self) -> None:
        self.shard_index = (self.shard_index + 1) % len(self.paths)
        self.tokens = read_shard(self.paths[self.shard_index])
        self.position = 0

    def take(self, n: int) -> np.ndarray:
        """The next n tokens (uint16[n]), crossing shard ends as needed."""
        chunks = []
        remaining = n
        fruitless_advances = 0  # a full lap without tokens means every shard is empty
        while remaining > 0:
            available = len(self.tokens) - self.position
            if available == 0:
                if fruitless_advances == len(self.paths):
                    raise GolfError(f"{self.paths[0]}: all {len(self.paths)} shards are empty; {MAKE_DATA_HINT}")
                self.advance_shard()
                fruitless_advances += 1
                continue
            fruitless_advances = 0
            k = min(remaining, available)
            chunks.append(self.tokens[self.position : self.position + k])
            self.position += k
            remaining -= k
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint16)


class DistributedTokenLoader:
    """Training batches for one rank: every rank reads the same stream and keeps its own span.

    Each call takes world_size * (local_tokens + 1) tokens; rank r keeps span
    [r * (local_tokens + 1), (r + 1) * (local_tokens + 1)) and predicts span[1:] from span[:-1].
    The +1 per rank means world 2 x accum 1 sees exactly the tokens of world 1 x accum 2.
    """

    def __init__(self, paths: list[str], rank: int, world_size: int):
        if not 0 <= rank < world_size:
            raise GolfError(f"rank {rank} is outside world size {world_size}; check the torchrun settings")
        self.rank = rank
        self.world_size = world_size
        self.stream = TokenStream(paths)

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) int64 of shape (local_tokens // seq_len, seq_len), y the next token of x."""
        parts = self.world_size * grad_accum_steps
        local_tokens = global_tokens // parts
        if local_tokens == 0 or local_tokens % seq_len:
            raise GolfError(
                f"TRAIN_BATCH_TOKENS={global_tokens}: split over world_size*grad_accum_steps={parts} gives "
                f"{local_tokens} tokens, not a positive multiple of TRAIN_SEQ_LEN={seq_len}; adjust them"
            )
        span_len = local_tokens + 1
        chunk = self.stream.take(span_len * self.world_size)
        span = torch.from_numpy(chunk[self.rank * span_len : (self.rank + 1) * span_len].astype(np.int64))
        return span[:-1].reshape(-1, seq_len), span[1:].reshape(-1, seq_len)

    @packed_when("checkpointing", "on")
    def state_dict(self) -> dict:
        """Where the stream stands (golf/checkpoint.py saves it): the next batch comes from here."""
        stream = self.stream
        return {"shards": [os.path.basename(p) for p in stream.paths], "shard_index": stream.shard_index,
                "position": stream.position}

    @packed_when("checkpointing", "on")
    def load_state_dict(self, state: dict) -> None:
        """Continue from a state_dict() of a loader over the same shards."""
        stream = self.stream
        names = [os.path.basename(p) for p in stream.paths]
        if state["shards"] != names:
            raise GolfError(f"{os.path.dirname(stream.paths[0])}: the checkpoint's loader read {len(state['shards'])} "
                            f"shards ({', '.join(state['shards'][:2])}, ...), this run {len(names)} others "
                            f"({', '.join(names[:2])}, ...); resume on the same data")
        if stream.shard_index != state["shard_index"]:
            stream.shard_index = state["shard_index"]
            stream.tokens = read_shard(stream.paths[stream.shard_index])
        stream.position = state["position"]


class DocumentPackingLoader:
    """The record's training batches (its DocumentPackingLoader, R:615-698): per micro-batch one row of
    local_tokens consecutive tokens per rank, its documents cut into attention segments of at most seq_len
    tokens counted from each document's start (document_ids with a cap; FA3 varlen runs them as cu_seqlens).

    Stream order as the record's: each shard is read from its first BOS; a step takes world_size spans of
    local_tokens + 1 tokens (rank r the r-th); a step that would cross the shard's end skips the rest of the shard
    and starts the next at its first BOS; after the last shard the first comes again.
    next_batch returns (x, y, doc_ids), each (1, local_tokens); the model takes doc_ids as its segments.
    """

    def __init__(self, paths: list[str], rank: int, world_size: int):
        if not paths:
            raise GolfError(f"DocumentPackingLoader: no shard paths given; {MAKE_DATA_HINT}")
        if not 0 <= rank < world_size:
            raise GolfError(f"rank {rank} is outside world size {world_size}; check the torchrun settings")
        self.paths, self.rank, self.world_size = list(paths), rank, world_size
        self.open_shard(0)

    def open_shard(self, index: int, position: int | None = None) -> None:
        self.shard_index = index
        self.tokens = read_shard(self.paths[index])
        bos = np.flatnonzero(self.tokens == BOS_ID)
        if len(bos) == 0:
            raise GolfError(f"{self.paths[index]}: no BOS token ({BOS_ID}) in the shard; documents must start with BOS")
        self.position = int(bos[0]) if position is None else position

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int):
        local_tokens = global_tokens // (self.world_size * grad_accum_steps)
        step_tokens = (local_tokens + 1) * self.world_size
        if local_tokens == 0:
            raise GolfError(f"TRAIN_BATCH_TOKENS={global_tokens}: less than one token per rank and micro-batch")
        for _ in range(len(self.paths) + 1):
            if self.position + step_tokens <= len(self.tokens):
                break
            self.open_shard((self.shard_index + 1) % len(self.paths))
        else:
            raise GolfError(f"{self.paths[0]}: no shard holds {step_tokens} tokens after its first BOS "
                            f"(one step of TRAIN_BATCH_TOKENS={global_tokens}); use more data or a smaller batch")
        start = self.position + self.rank * (local_tokens + 1)
        span = torch.from_numpy(self.tokens[start : start + local_tokens + 1].astype(np.int64))
        self.position += step_tokens
        x, y = span[None, :-1], span[None, 1:]
        return x, y, document_ids(x, cap=seq_len)

    @packed_when("checkpointing", "on")
    def state_dict(self) -> dict:
        """Where the stream stands (golf/checkpoint.py saves it): the next batch comes from here."""
        return {"shards": [os.path.basename(p) for p in self.paths], "shard_index": self.shard_index,
                "position": self.position}

    @packed_when("checkpointing", "on")
    def load_state_dict(self, state: dict) -> None:
        """Continue from a state_dict() of a loader over the same shards."""
        names = [os.path.basename(p) for p in self.paths]
        if state["shards"] != names:
            raise GolfError(f"{os.path.dirname(self.paths[0])}: the checkpoint's loader read {len(state['shards'])} "
                            f"shards ({', '.join(state['shards'][:2])}, ...), this run {len(names)} others "
                            f"({', '.join(names[:2])}, ...); resume on the same data")
        self.open_shard(int(state["shard_index"]), int(state["position"]))


class TrainLoader(Protocol):
    """What training reads from a TRAIN_LOADERS entry (golf/train.py's annotations name this, not a loader, so a
    pack keeps only the recipe's loader)."""

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        ...


# Config.train_loader: how training tokens become batches.
TRAIN_LOADERS = {"doc_packing": DocumentPackingLoader, "fixed_rows": DistributedTokenLoader}


def document_ids(tokens: torch.Tensor, cap: int = 0) -> torch.Tensor:
    """(B, T) token rows -> (B, T) int32 segment ids for doc-isolated attention: the id steps up at every BOS
    and, with cap > 0, every cap tokens from each document's start (the record's _build_cu_seqlens with
    max_doc_len, R:592-612). Tokens before a row's first BOS are the tail of a document begun before the row: a
    segment of their own, cut every cap tokens from the row start.

    cap 0 (fixed 2048-token rows, evaluation): a document runs to its row's edge."""
    ids = (tokens == BOS_ID).cumsum(dim=1, dtype=torch.int32)
    if cap <= 0:
        return ids
    pos = torch.arange(tokens.size(1), device=tokens.device).expand_as(tokens)
    doc_start = torch.where(tokens == BOS_ID, pos, 0).cummax(dim=1).values
    cut = ((pos - doc_start) % cap == 0) & (pos != doc_start)
    return ids + cut.cumsum(dim=1, dtype=torch.int32)


def read_first_tokens(paths: list[str], max_tokens: int = 0, check=None) -> np.ndarray:
    """Shards (or byte sidecars) concatenated in order; max_tokens > 0 reads only as many files as the first
    max_tokens entries need and keeps just those. check(path, values), if given, vets each file as it is read."""
    chunks = []
    total = 0
    for path in paths:
        chunks.append(read_shard(path))
        if check is not None:
            check(path, chunks[-1])
        total += len(chunks[-1])
        if 0 < max_tokens <= total:
            break
    values = np.concatenate(chunks)
    return values[:max_tokens] if max_tokens > 0 else values


def load_val_tokens(data_path: str, max_tokens: int = 0) -> torch.Tensor:
    """All val shards concatenated as int64[N]; max_tokens > 0 keeps only the first max_tokens (quick runs)."""
    return torch.from_numpy(read_first_tokens(shard_paths(data_path, "val"), max_tokens).astype(np.int64))


def sidecar_path(val_shard: str) -> str:
    """The byte sidecar's path for a val shard: .../X_val_NNNNNN.bin -> .../X_val_bytes_NNNNNN.bin."""
    directory, name = os.path.split(val_shard)
    head, sep, tail = name.rpartition("_val_")
    if not sep:
        raise GolfError(f"{val_shard}: not a val shard name (*_val_NNNNNN.bin)")
    return os.path.join(directory, head + SIDECAR_TAG + tail)


def val_byte_sidecar_paths(data_path: str) -> list[str]:
    """The val shards' byte sidecars in shard order, [] when the data has none (file names only, nothing is read).

    Some val shards with a sidecar and some without is an error: the byte counts would mix two rules.
    """
    paths = [sidecar_path(p) for p in shard_paths(data_path, "val")]
    present = [os.path.isfile(p) for p in paths]
    if any(present) and not all(present):
        raise GolfError(f"{paths[present.index(False)]}: byte sidecar missing while other val shards have one; "
                        f"rebuild the data ({MAKE_DATA_HINT})")
    return paths if all(present) else []


def load_val_byte_sidecar(data_path: str, max_tokens: int = 0) -> torch.Tensor | None:
    """The val shards' byte sidecars concatenated as int64[N] (cut like load_val_tokens), or None when there are none.

    Each sidecar is verified like a shard, and its count must equal its val shard's token count.
    """
    sidecars = val_byte_sidecar_paths(data_path)
    if not sidecars:
        return None
    shard_of = dict(zip(sidecars, shard_paths(data_path, "val")))

    def same_count(path: str, counts: np.ndarray) -> None:
        shard = shard_of[path]
        if len(counts) != shard_token_count(shard):
            raise GolfError(f"{path}: {len(counts)} byte counts for the {shard_token_count(shard)} tokens of "
                            f"{os.path.basename(shard)}; rebuild the data ({MAKE_DATA_HINT})")

    return torch.from_numpy(read_first_tokens(sidecars, max_tokens, same_count).astype(np.int64))


def data_fingerprint(paths: list[str]) -> str:
    """First 16 hex chars of sha256 over each shard's file name and bytes, in path order.

    Hashes raw bytes without parsing tokens, so it is not a token read and skips SHARD_READS.
    """
    digest = hashlib.sha256()
    for path in paths:
        digest.update(os.path.basename(path).encode("utf-8") + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
