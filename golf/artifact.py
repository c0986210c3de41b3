"""The model artifact (`final_model.golf`): a versioned, checksummed, no-pickle container.

Layout (integers little-endian):

    b"GOLF" | version uint32 | header_len uint32 | header (UTF-8 JSON, header_len bytes)
    | payload: each group's compressed bytes, back to back | sha256 of everything before (32 bytes)

The JSON header holds `groups` {name: {codec, offset, length (compressed, from the payload's
start), raw_length (decompressed)}}, `tensors` [{name, group, kind 'quant'|'raw', shape, dtype,
bits, scale_layout, parts: [{part 'q'|'scale'|'data', transform, offset, length}]}] where offsets
index the group's decompressed payload, and `meta` (free-form run info). A group is compressed as
one stream, so tensors of a kind (attn, mlp, embed, scalars: the caller names them) share a codec.

Loading parses JSON and raw bytes only: no pickle, no torch.load, no eval. Any flipped or missing
byte fails the sha256 (or, earlier, the magic/version/length checks) and raises GolfError.
"""
import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path

import numpy
import torch

from golf.compress import CODECS, TRANSFORMS, matrix_dims
from golf.config import GolfError, pick
from golf.quant.rtn import QuantTensor, dequantize_rows

ARTIFACT_MAGIC = b"GOLF"
ARTIFACT_VERSION = 1
PREAMBLE = struct.Struct("<4sII")  # magic, version, header_len
CHECKSUM_BYTES = 32  # full sha256: any changed byte is caught, for 32 bytes of a 16 MB budget
# From the figures in golf/compress.py's docstring: brotli-11 over int8 symbols as they are lands
# ~0.8% above their order-0 entropy (zstd-22 ~1.1%); no transform of the symbols did better.
DEFAULT_CODEC = "brotli"
DEFAULT_QUANT_TRANSFORM = "none"
# Float bytes (raw tensors, fp16 scales) go through byte planes: 4-7% smaller with every codec.
FLOAT_TRANSFORM = "shuffle"

DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int8, torch.uint8, torch.int16, torch.int32,
    torch.int64, torch.bool)}


def dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise GolfError(f"artifact: dtype {name} cannot be stored (choices: {', '.join(DTYPES)})")
    return name


def tensor_bytes(t: torch.Tensor) -> numpy.ndarray:
    """Any stored dtype (bf16 included, which numpy lacks) -> its raw bytes as a uint8 array."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


def bytes_tensor(data: numpy.ndarray, dtype: torch.dtype, shape) -> torch.Tensor:
    """Inverse of tensor_bytes; copies, so the tensor owns writable memory."""
    return torch.frombuffer(bytearray(data.tobytes()), dtype=torch.uint8).view(dtype).reshape(shape).clone()


def per_group(setting, groups_used, name: str) -> dict:
    """A str applies to every group; a dict must name each group in use."""
    if isinstance(setting, str):
        return {g: setting for g in groups_used}
    missing = [g for g in groups_used if g not in setting]
    if missing:
        raise GolfError(f"artifact: {name} has no entry for group(s) {', '.join(missing)}")
    return {g: setting[g] for g in groups_used}


def tensor_parts(entry) -> list[tuple[str, numpy.ndarray, int, int | None, tuple]]:
    """(part, bytes, itemsize, bits, shape) of each array an entry is stored as."""
    if isinstance(entry, QuantTensor):
        return [("q", tensor_bytes(entry.q), 1, entry.bits, tuple(entry.q.shape)),
                ("scale", tensor_bytes(entry.scale), 2, None, tuple(entry.scale.shape))]
    return [("data", tensor_bytes(entry), entry.element_size(), None, tuple(entry.shape))]


def tensor_record(name: str, group: str, entry) -> dict:
    if isinstance(entry, QuantTensor):
        return {"name": name, "group": group, "kind": "quant", "shape": list(entry.shape),
                "dtype": dtype_name(entry.dtype), "bits": entry.bits, "scale_layout": "row_fp16"}
    if not isinstance(entry, torch.Tensor):
        raise GolfError(f"artifact: entry {name} is a {type(entry).__name__}, not a Tensor or QuantTensor")
    return {"name": name, "group": group, "kind": "raw", "shape": list(entry.shape),
            "dtype": dtype_name(entry.dtype), "bits": entry.element_size() * 8, "scale_layout": None}


def encode_artifact(entries: dict, groups: dict[str, str], meta: dict,
                    codecs: dict[str, str] | str = DEFAULT_CODEC,
                    transforms: dict[str, str] | str = DEFAULT_QUANT_TRANSFORM) -> bytes:
    """{name: QuantTensor | Tensor} -> artifact bytes. groups maps every name to its group;
    codecs and transforms (for quantised symbols) are one name for all groups or one per group.
    Raw tensors are stored in the dtype given; float bytes always use FLOAT_TRANSFORM."""
    missing = [n for n in entries if n not in groups]
    if missing:
        raise GolfError(f"artifact: no group for tensor(s) {', '.join(missing)}")
    groups_used = list(dict.fromkeys(groups[n] for n in entries))
    records, chunks = lay_out_tensors(entries, groups, per_group(transforms, groups_used, "transforms"))
    group_records, payload = compress_groups(chunks, per_group(codecs, groups_used, "codecs"))
    try:
        header = json.dumps({"groups": group_records, "tensors": records, "meta": meta},
                            sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise GolfError(f"artifact: meta is not plain JSON: {e}") from None
    body = PREAMBLE.pack(ARTIFACT_MAGIC, ARTIFACT_VERSION, len(header)) + header + payload
    return body + hashlib.sha256(body).digest()


def lay_out_tensors(entries: dict, groups: dict[str, str], transform_of: dict[str, str]) -> tuple[list, dict]:
    """Transform every part of every entry; return (tensor records with their parts' offsets into
    the group's uncompressed payload, {group: [part bytes in order]})."""
    chunks = {g: [] for g in transform_of}
    records = []
    for name, entry in entries.items():
        group = groups[name]
        record = tensor_record(name, group, entry)
        record["parts"] = []
        for part, data, itemsize, bits, shape in tensor_parts(entry):
            transform = transform_of[group] if part == "q" else FLOAT_TRANSFORM
            packed = pick(TRANSFORMS, transform, f"transform of group {group}")[0](data, shape, itemsize, bits)
            offset = sum(len(c) for c in chunks[group])
            record["parts"].append({"part": part, "transform": transform, "offset": offset, "length": packed.size})
            chunks[group].append(packed.tobytes())
        records.append(record)
    return records, chunks


def compress_groups(chunks: dict[str, list], codec_of: dict[str, str]) -> tuple[dict, bytes]:
    """Compress each group's parts as one stream; return (group records, the payload)."""
    group_records, payload = {}, b""
    for g, parts in chunks.items():
        raw = b"".join(parts)
        compressed = pick(CODECS, codec_of[g], f"codec of group {g}")[0](raw)
        group_records[g] = {"codec": codec_of[g], "offset": len(payload), "length": len(compressed),
                            "raw_length": len(raw)}
        payload += compressed
    return group_records, payload


def read_header(blob: bytes, source: str) -> tuple[dict, int]:
    """Check magic, version, length and checksum; return (header, offset of the payload)."""
    minimum = PREAMBLE.size + CHECKSUM_BYTES
    if len(blob) >= 4 and blob[:4] != ARTIFACT_MAGIC:
        raise GolfError(f"{source}: not a golf artifact (starts {blob[:4]!r}, expected {ARTIFACT_MAGIC!r})")
    if len(blob) < minimum:
        raise GolfError(f"{source}: truncated ({len(blob)} bytes; an artifact has at least {minimum})")
    _, version, header_len = PREAMBLE.unpack_from(blob)
    if version != ARTIFACT_VERSION:
        raise GolfError(f"{source}: artifact format version {version}; this build reads version "
                        f"{ARTIFACT_VERSION}")
    if hashlib.sha256(blob[:-CHECKSUM_BYTES]).digest() != blob[-CHECKSUM_BYTES:]:
        raise GolfError(f"{source}: checksum mismatch: the file is corrupt or truncated")
    if PREAMBLE.size + header_len > len(blob) - CHECKSUM_BYTES:
        raise GolfError(f"{source}: header length {header_len} runs past the end of the file")
    try:
        header = json.loads(blob[PREAMBLE.size:PREAMBLE.size + header_len].decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise GolfError(f"{source}: header is not valid JSON: {e}") from None
    if not isinstance(header, dict) or not {"groups", "tensors", "meta"} <= header.keys():
        raise GolfError(f"{source}: header lacks groups/tensors/meta")
    return header, PREAMBLE.size + header_len


def decompress_groups(blob: bytes, header: dict, payload_start: int) -> dict[str, numpy.ndarray]:
    """{group: decompressed payload bytes}, each checked against the header's lengths."""
    payload_end = len(blob) - CHECKSUM_BYTES
    out = {}
    for g, rec in header["groups"].items():
        start = payload_start + rec["offset"]
        if not payload_start <= start <= start + rec["length"] <= payload_end:
            raise GolfError(f"group {g} lies outside the payload")
        decompress = pick(CODECS, rec["codec"], f"codec of group {g}")[1]
        try:
            raw = decompress(blob[start:start + rec["length"]])
        except Exception as e:  # each codec raises its own error type on bad input
            raise GolfError(f"group {g} does not decompress with {rec['codec']}: {e}") from None
        if len(raw) != rec["raw_length"]:
            raise GolfError(f"group {g} decompressed to {len(raw)} bytes, header says "
                            f"{rec['raw_length']}")
        out[g] = numpy.frombuffer(raw, dtype=numpy.uint8)
    return out


def part_array(raw: numpy.ndarray, part: dict, shape, itemsize: int, bits) -> numpy.ndarray:
    """One part's bytes out of its group's decompressed payload, un-transformed."""
    inverse = pick(TRANSFORMS, part["transform"], "transform")[1]
    return inverse(raw[part["offset"]:part["offset"] + part["length"]], shape, itemsize, bits)


def decode_entry(record: dict, raw: numpy.ndarray):
    """One header record + its group's payload -> QuantTensor or Tensor."""
    shape = tuple(record["shape"])
    parts = {p["part"]: p for p in record["parts"]}
    dtype = DTYPES[record["dtype"]]
    if record["kind"] == "quant":
        rows, cols = matrix_dims(shape)
        q = part_array(raw, parts["q"], (rows, cols), 1, record["bits"])
        scale = part_array(raw, parts["scale"], (rows,), 2, None)
        return QuantTensor(bytes_tensor(q, torch.int8, (rows, cols)), bytes_tensor(scale, torch.float16, (rows,)),
                           record["bits"], shape, dtype)
    itemsize = torch.empty(0, dtype=dtype).element_size()
    return bytes_tensor(part_array(raw, parts["data"], shape, itemsize, None), dtype, shape)


def decode_artifact(blob: bytes, source: str) -> tuple[dict, dict]:
    """Artifact bytes -> ({name: QuantTensor | Tensor}, meta). source names the file in errors."""
    header, payload_start = read_header(blob, source)
    try:
        raws = decompress_groups(blob, header, payload_start)
        entries = {r["name"]: decode_entry(r, raws[r["group"]]) for r in header["tensors"]}
    except GolfError as e:
        raise GolfError(f"{source}: {e}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise GolfError(f"{source}: malformed header: {type(e).__name__}: {e}") from None
    return entries, header["meta"]


def write_artifact(path, blob: bytes) -> None:
    """Write atomically: a temp file in the same folder, then rename over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_file_bytes(path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise GolfError(f"{path}: cannot read: {e.strerror or e}") from None


def read_artifact(path) -> tuple[dict, dict]:
    return decode_artifact(read_file_bytes(path), str(path))


def dequantize_entries(entries: dict) -> dict[str, torch.Tensor]:
    """QuantTensors -> fp32 tensors of their original shape; raw tensors as stored."""
    return {n: dequantize_rows(e) if isinstance(e, QuantTensor) else e for n, e in entries.items()}


def artifact_report(path) -> list[dict]:
    """Per-group size rows of an artifact file, plus a last row for header and checksum, so the
    compressed_bytes column sums to the file's size. Reads the header only (checksum verified)."""
    blob = read_file_bytes(path)
    header, payload_start = read_header(blob, str(path))
    try:
        rows = [group_row(g, rec, [t for t in header["tensors"] if t["group"] == g])
                for g, rec in header["groups"].items()]
    except (KeyError, TypeError, ValueError) as e:
        raise GolfError(f"{path}: malformed header: {type(e).__name__}: {e}") from None
    overhead = payload_start + CHECKSUM_BYTES
    rows.append({"group": "(header+checksum)", "tensors": 0, "params": 0, "bits": [], "raw_bytes": overhead,
                 "compressed_bytes": overhead, "bits_per_param": None})
    return rows


def group_row(group: str, rec: dict, tensors: list[dict]) -> dict:
    params = sum(int(numpy.prod(t["shape"], dtype=numpy.int64)) for t in tensors)
    return {"group": group, "tensors": len(tensors), "params": params,
            "bits": sorted({t["bits"] for t in tensors}), "raw_bytes": rec["raw_length"],
            "compressed_bytes": rec["length"],
            "bits_per_param": 8 * rec["length"] / params if params else None}
