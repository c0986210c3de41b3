"""The model artifact (`final_model.golf`): a versioned, checksummed, no-pickle container.

Layout (integers little-endian):

    b"GOLF" | version uint32 | header_len uint32 | header (header_len bytes)
    | payload: each block's compressed bytes, back to back | sha256 of everything before (32 bytes)

Version 2 (written): the header is brotli-compressed UTF-8 JSON (JSON alone was ~31 KB at record
size, mostly repeated keys). It holds `blocks` {"group/part": {group, part, codec, offset, length
(compressed, from the payload's start), raw_length}}, `tensors` [{name, group, kind 'quant'|'raw',
shape, dtype, bits, scale_layout, lqer (null or {rank, a_bits, b_bits, group}), optionally awq ({starts, size,
bits}: AWQ-lite column groups, their symbols up to `bits` wide in "q", their per-row steps in part "awq_scale"),
parts: [{part, block, transform, offset, length}]}] where offsets index the block's decompressed bytes, and `meta`
(free-form run info); a tensor stored in a row order (`row_order`, e.g. "simsort") has a "perm" part
(uint32 row indices: stored row i is row perm[i]). Each kind of part of a group is one block,
compressed on its own: the int8 symbols of the quantised matrices ("q", and the LQER factors "lqer_a",
"lqer_b") with the group's symbol codec (default context ANS: its models see symbols only, no scale
bytes), the float parts (scales, raw tensors, LQER steps, perms) byte-shuffled with FLOAT_CODEC.
Blocks compress in parallel.
Version 1 (read only): plain JSON header, one block per group holding all its parts (`groups`).

Loading parses JSON and raw bytes only: no pickle, no torch.load, no eval. Any flipped or missing
byte fails the sha256 (or, earlier, the magic/version/length checks) and raises GolfError.
"""
import hashlib
import json
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import brotli
import numpy
import torch

from golf.compress import (CODECS, MATRIX_CODECS, ROW_ORDERS, TRANSFORMS, check_permutation, ctx_describe,
                            matrix_dims)
from golf.config import GolfError, packed, pick
from golf.data import write_bytes_atomic
from golf.quant.awq import AwqGroups
from golf.quant.lowrank import LqerFactors
from golf.quant.rtn import QuantTensor, dequantize_rows

ARTIFACT_MAGIC = b"GOLF"
ARTIFACT_VERSION = 2
READABLE_VERSIONS = (1, 2)
PREAMBLE = struct.Struct("<4sII")  # magic, version, header_len
CHECKSUM_BYTES = 32  # full sha256: any changed byte is caught, for 32 bytes of a 16 MB budget
# Symbols: context ANS (golf/compress.py "ctx"): on i.i.d. rows it keeps plain order-0 ANS (within ~0.01% of
# the order-0 entropy, below brotli-11's ~0.8-1.1% above); on trained rows its contexts go below order-0
# (python -m golf.bench quant has the table).
DEFAULT_CODEC = "ctx"
DEFAULT_QUANT_TRANSFORM = "none"
# Float bytes (raw tensors, fp16 scales) go through byte planes: 4-7% smaller with every codec.
FLOAT_TRANSFORM = "shuffle"
FLOAT_CODEC = "brotli"
SYMBOL_PARTS = ("q", "lqer_a", "lqer_b")  # int8 symbols: the group's codec and transform
# transforms="auto" tries these symbol layouts per group (ROW_ORDER+TRANSFORM; golf/compress.py). With the
# order-0 ANS codec every layout codes to the same bytes (a permutation keeps the histogram), so "none"
# wins; context coders (ctx, brotli, zpaq) gain from transposition and the similarity sort.
AUTO_LAYOUTS = ("none", "transpose", "simsort+none", "simsort+transpose")
HEADER_CODEC = "brotli"

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
    """A dict must name each group in use. A str is one choice for every group, or comma-separated
    GROUP=CHOICE entries plus one bare CHOICE for the other groups (CODEC="embed=zpaq,ctx")."""
    if isinstance(setting, str):
        setting = parse_per_group(setting, groups_used, name)
    missing = [g for g in groups_used if g not in setting]
    if missing:
        raise GolfError(f"artifact: {name} has no entry for group(s) {', '.join(missing)}")
    return {g: setting[g] for g in groups_used}


def parse_per_group(text: str, groups_used, name: str) -> dict:
    default, chosen = None, {}
    for entry in text.split(","):
        group, has_group, choice = entry.strip().rpartition("=")
        if not choice or (has_group and not group):
            raise GolfError(f"artifact: {name} {text!r}: entry {entry!r} is not GROUP=CHOICE or CHOICE")
        if not has_group:
            if default is not None:
                raise GolfError(f"artifact: {name} {text!r}: two choices ({default}, {choice}) for the other groups")
            default = choice
        elif group not in groups_used:
            raise GolfError(f"artifact: {name} {text!r}: no group {group!r} here (groups: {', '.join(groups_used)})")
        else:
            chosen[group] = choice
    return {g: chosen.get(g, default) for g in groups_used if chosen.get(g, default) is not None}


def symbol_settings(codecs, transforms, groups_used, settings: tuple[str, str] | None = None) -> tuple[dict, dict]:
    """({group: codec}, {group: layout}) with every codec and layout checked to exist; a bad one's error names
    settings (the codec's and the layout's; default: "codec of group G", "layout of group G")."""
    codec_of = per_group(codecs, groups_used, "codecs")
    for g, codec in codec_of.items():
        pick(CODECS, codec, settings[0] if settings else f"codec of group {g}")
    layouts = per_group(transforms, groups_used, "transforms")
    for g, layout in layouts.items():
        if layout != "auto":
            layout_of(layout, settings[1] if settings else f"layout of group {g}")
    return codec_of, layouts


def check_symbol_settings(codecs: str, transforms: str, groups) -> None:
    """Before a run spends its training minutes: every group's codec and layout exist, and each codec chosen
    can compress (its optional package is installed). Raises the one-line GolfError the write would."""
    codec_of, _ = symbol_settings(codecs, transforms, list(dict.fromkeys(groups)), ("CODEC", "SYMBOL_LAYOUT"))
    for codec in set(codec_of.values()):
        CODECS[codec][0](b"\0\1")


def tensor_parts(entry) -> list[tuple[str, numpy.ndarray, int, int | None, tuple]]:
    """(part, bytes, itemsize, bits, shape) of each array an entry is stored as."""
    if not isinstance(entry, QuantTensor):
        return [("data", tensor_bytes(entry), entry.element_size(), None, tuple(entry.shape))]
    parts = [("q", tensor_bytes(entry.q), 1, symbol_bits(entry.bits, entry.awq and entry.awq.bits),
              tuple(entry.q.shape)),
             ("scale", tensor_bytes(entry.scale), 2, None, tuple(entry.scale.shape))]
    if packed("awq_top_k") and entry.awq is not None:
        parts.append(("awq_scale", tensor_bytes(entry.awq.scale), 2, None, tuple(entry.awq.scale.shape)))
    f = entry.lqer
    if f is not None:
        parts += [("lqer_a", tensor_bytes(f.qa), 1, f.a_bits, tuple(f.qa.shape)),
                  ("lqer_a_scale", tensor_bytes(f.a_scale), 2, None, tuple(f.a_scale.shape)),
                  ("lqer_b", tensor_bytes(f.qb), 1, f.b_bits, tuple(f.qb.shape)),
                  ("lqer_b_scale", tensor_bytes(f.b_scale), 2, None, tuple(f.b_scale.shape))]
    return parts


def symbol_bits(bits: int, awq_bits: int | None) -> int:
    """Width of a quantised tensor's stored symbols: its bits, or its AWQ-lite groups' where those are wider."""
    return max(bits, awq_bits or 0)


def tensor_record(name: str, group: str, entry) -> dict:
    if isinstance(entry, QuantTensor):
        f = entry.lqer
        lqer = None if f is None else {"rank": f.qa.shape[1], "a_bits": f.a_bits, "b_bits": f.b_bits,
                                       "group": f.group}
        record = {"name": name, "group": group, "kind": "quant", "shape": list(entry.shape),
                  "dtype": dtype_name(entry.dtype), "bits": entry.bits, "scale_layout": "row_fp16", "lqer": lqer}
        # AWQ-lite groups (golf/quant/awq.py); absent from artifacts without them
        if packed("awq_top_k") and entry.awq is not None:
            record["awq"] = {"starts": list(entry.awq.starts), "size": entry.awq.size, "bits": entry.awq.bits}
        return record
    if not isinstance(entry, torch.Tensor):
        raise GolfError(f"artifact: entry {name} is a {type(entry).__name__}, not a Tensor or QuantTensor")
    return {"name": name, "group": group, "kind": "raw", "shape": list(entry.shape),
            "dtype": dtype_name(entry.dtype), "bits": entry.element_size() * 8, "scale_layout": None, "lqer": None}


def encode_artifact(entries: dict, groups: dict[str, str], meta: dict,
                    codecs: dict[str, str] | str = DEFAULT_CODEC,
                    transforms: dict[str, str] | str = DEFAULT_QUANT_TRANSFORM) -> bytes:
    """{name: QuantTensor | Tensor} -> artifact bytes. groups maps every name to its group;
    codecs and transforms (for quantised symbols) are one name for all groups or one per group.
    Raw tensors are stored in the dtype given; float bytes always use FLOAT_TRANSFORM + FLOAT_CODEC."""
    missing = [n for n in entries if n not in groups]
    if missing:
        raise GolfError(f"artifact: no group for tensor(s) {', '.join(missing)}")
    codec_of, layouts = symbol_settings(codecs, transforms, list(dict.fromkeys(groups[n] for n in entries)))
    orders: dict = {}
    records, chunks = lay_out_tensors(entries, groups, choose_layouts(entries, groups, layouts, codec_of, orders),
                                      orders)
    block_records, payload = compress_blocks(chunks, codec_of)
    try:
        header = json.dumps({"blocks": block_records, "tensors": records, "meta": meta},
                            sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise GolfError(f"artifact: meta is not plain JSON: {e}") from None
    header = CODECS[HEADER_CODEC][0](header)
    body = PREAMBLE.pack(ARTIFACT_MAGIC, ARTIFACT_VERSION, len(header)) + header + payload
    return body + hashlib.sha256(body).digest()


def layout_of(setting: str, name: str = "layout") -> tuple[str, str]:
    """A symbol layout "TRANSFORM" or "ROW_ORDER+TRANSFORM" (e.g. "simsort+transpose") -> (row order, transform);
    `name` names the setting in the error for one this build lacks."""
    order, _, transform = setting.rpartition("+")
    pick(ROW_ORDERS, order or "none", f"{name} row order")
    pick(TRANSFORMS, transform, f"{name} transform")
    return order or "none", transform


def choose_layouts(entries: dict, groups: dict[str, str], layout_of_group: dict[str, str],
                   codec_of: dict[str, str], orders: dict) -> dict[str, str]:
    """Groups set to "auto" take the AUTO_LAYOUTS candidate whose q block (and row orders) compresses
    smallest with the group's codec; ties keep the earlier (simpler) candidate. Row orders computed here
    are memoised in `orders` for the final layout."""
    chosen = dict(layout_of_group)
    for g in [g for g, layout in layout_of_group.items() if layout == "auto"]:
        members = {n: e for n, e in entries.items() if groups[n] == g and isinstance(e, QuantTensor)}
        sizes = {}
        for layout in AUTO_LAYOUTS:
            _, chunks = lay_out_tensors(members, groups, {g: layout}, orders)
            sizes[layout] = sum(len(compress_chunks(block_codec(codec_of, g, part), c))
                                for (_, part), c in chunks.items() if part in ("q", "perm"))
        chosen[g] = min(AUTO_LAYOUTS, key=lambda layout: sizes[layout])
    return chosen


def ordered_symbols(entry: QuantTensor, order: str,
                    orders: dict | None = None) -> tuple[numpy.ndarray, numpy.ndarray | None]:
    """(the q rows in `order`, as bytes; the permutation as uint32 bytes, None for the identity). `orders`
    memoises permutations by (id(entry), order) across the layouts that choose_layouts tries."""
    rows = entry.q.numpy().reshape(entry.q.shape[0], -1)
    if order == "none":
        return tensor_bytes(entry.q), None
    orders = {} if orders is None else orders
    key = (id(entry), order)
    if key not in orders:
        orders[key] = ROW_ORDERS[order](rows)
    perm = orders[key]
    return numpy.ascontiguousarray(rows[perm]).reshape(-1).view(numpy.uint8), perm.astype("<u4").view(numpy.uint8)


def block_codec(codec_of: dict[str, str], group: str, part: str) -> str:
    return codec_of[group] if part in SYMBOL_PARTS else FLOAT_CODEC


def compress_chunks(codec: str, chunks: list[tuple[bytes, tuple[int, int]]]) -> bytes:
    """One block's parts (bytes, (rows, cols) as laid out) -> the codec's stream; matrix codecs get the shapes."""
    raw = b"".join(data for data, _ in chunks)
    if codec in MATRIX_CODECS:
        return CODECS[codec][0](raw, shapes=[shape for _, shape in chunks])
    return CODECS[codec][0](raw)


def laid_out_shape(transform: str, shape, packed_size: int) -> tuple[int, int]:
    """(rows, cols) of a part's bytes as its block stores them: transposed for "transpose", else the
    tensor's rows; a byte-packing transform leaves one row of packed bytes."""
    rows, cols = matrix_dims(shape)
    if transform == "transpose":
        return cols, rows
    return (rows, cols) if rows * cols == packed_size else (1, packed_size)


def lay_out_tensors(entries: dict, groups: dict[str, str], layout_of_group: dict[str, str],
                    orders: dict | None = None) -> tuple[list, dict]:
    """Transform every part of every entry; return (tensor records with their parts' offsets into
    their block's uncompressed bytes, {(group, part): [(part bytes, (rows, cols) as laid out)] in order})."""
    chunks: dict[tuple[str, str], list] = {}
    records = []
    for name, entry in entries.items():
        group = groups[name]
        record = tensor_record(name, group, entry)
        record["parts"] = []
        order, symbol_transform = layout_of(layout_of_group[group])
        parts = tensor_parts(entry)
        if isinstance(entry, QuantTensor) and order != "none":
            data, perm = ordered_symbols(entry, order, orders)
            parts = [(p, data if p == "q" else d, i, b, s) for p, d, i, b, s in parts]
            parts.append(("perm", perm, 4, None, (entry.q.shape[0],)))
            record["row_order"] = order
        for part, data, itemsize, bits, shape in parts:
            transform = symbol_transform if part in SYMBOL_PARTS else FLOAT_TRANSFORM
            packed = pick(TRANSFORMS, transform, f"transform of group {group}")[0](data, shape, itemsize, bits)
            block = chunks.setdefault((group, part), [])
            record["parts"].append({"part": part, "block": f"{group}/{part}", "transform": transform,
                                    "offset": sum(len(c) for c, _ in block), "length": packed.size})
            block.append((packed.tobytes(), laid_out_shape(transform, shape, packed.size)))
        records.append(record)
    return records, chunks


def compress_blocks(chunks: dict[tuple[str, str], list], codec_of: dict[str, str]) -> tuple[dict, bytes]:
    """Compress each block as one stream, all blocks at once on a thread pool (the codecs release the
    GIL); return (block records, the payload in block order)."""
    keys = list(chunks)
    codecs = [block_codec(codec_of, g, part) for g, part in keys]
    with ThreadPoolExecutor(max_workers=max(1, min(len(keys), os.cpu_count() or 1))) as pool:
        compressed = list(pool.map(lambda c, k: compress_chunks(c, chunks[k]), codecs, keys))
    block_records, offset = {}, 0
    for (g, part), codec, data in zip(keys, codecs, compressed):
        raw_length = sum(len(c) for c, _ in chunks[(g, part)])
        block_records[f"{g}/{part}"] = {"group": g, "part": part, "codec": codec, "offset": offset,
                                        "length": len(data), "raw_length": raw_length}
        offset += len(data)
    return block_records, b"".join(compressed)


def read_header(blob: bytes, source: str) -> tuple[dict, int]:
    """Check magic, version, length and checksum; return (header in version 2's form, offset of the payload)."""
    minimum = PREAMBLE.size + CHECKSUM_BYTES
    if len(blob) >= 4 and blob[:4] != ARTIFACT_MAGIC:
        raise GolfError(f"{source}: not a golf artifact (starts {blob[:4]!r}, expected {ARTIFACT_MAGIC!r})")
    if len(blob) < minimum:
        raise GolfError(f"{source}: truncated ({len(blob)} bytes; an artifact has at least {minimum})")
    _, version, header_len = PREAMBLE.unpack_from(blob)
    if version not in READABLE_VERSIONS:
        raise GolfError(f"{source}: artifact format version {version}; this build reads versions "
                        f"{', '.join(map(str, READABLE_VERSIONS))}")
    if hashlib.sha256(blob[:-CHECKSUM_BYTES]).digest() != blob[-CHECKSUM_BYTES:]:
        raise GolfError(f"{source}: checksum mismatch: the file is corrupt or truncated")
    if PREAMBLE.size + header_len > len(blob) - CHECKSUM_BYTES:
        raise GolfError(f"{source}: header length {header_len} runs past the end of the file")
    text = blob[PREAMBLE.size:PREAMBLE.size + header_len]
    try:
        header = json.loads(CODECS[HEADER_CODEC][1](text) if version >= 2 else text)
    except brotli.error as e:
        raise GolfError(f"{source}: header does not decompress with {HEADER_CODEC}: {e}") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise GolfError(f"{source}: header is not valid JSON: {e}") from None
    needs = {"groups", "tensors", "meta"} if version == 1 else {"blocks", "tensors", "meta"}
    if not isinstance(header, dict) or not needs <= header.keys():
        raise GolfError(f"{source}: header lacks {'/'.join(sorted(needs))}")
    return (upgrade_v1_header(header) if version == 1 else header), PREAMBLE.size + header_len


def upgrade_v1_header(header: dict) -> dict:
    """Version 1's one block per group, as version 2 blocks: the same bytes, read the same way."""
    blocks = {g: {**rec, "group": g, "part": "all"} for g, rec in header["groups"].items()}
    for record in header["tensors"]:
        for part in record["parts"]:
            part["block"] = record["group"]
    return {"blocks": blocks, "tensors": header["tensors"], "meta": header["meta"]}


def decompress_block(blob: bytes, key: str, rec: dict, payload_start: int) -> numpy.ndarray:
    """One block's decompressed bytes, checked against the header's lengths."""
    start = payload_start + rec["offset"]
    if not payload_start <= start <= start + rec["length"] <= len(blob) - CHECKSUM_BYTES:
        raise GolfError(f"block {key} lies outside the payload")
    decompress = pick(CODECS, rec["codec"], f"codec of block {key}")[1]
    try:
        raw = decompress(blob[start:start + rec["length"]])
    except Exception as e:  # each codec raises its own error type on bad input
        raise GolfError(f"block {key} does not decompress with {rec['codec']}: {e}") from None
    if len(raw) != rec["raw_length"]:
        raise GolfError(f"block {key} decompressed to {len(raw)} bytes, header says {rec['raw_length']}")
    return numpy.frombuffer(raw, dtype=numpy.uint8)


def decompress_blocks(blob: bytes, header: dict, payload_start: int) -> dict[str, numpy.ndarray]:
    """{block: decompressed bytes}, all blocks at once on a thread pool."""
    items = list(header["blocks"].items())
    with ThreadPoolExecutor(max_workers=max(1, min(len(items), os.cpu_count() or 1))) as pool:
        raws = list(pool.map(lambda kv: decompress_block(blob, kv[0], kv[1], payload_start), items))
    return {k: raw for (k, _), raw in zip(items, raws)}


def part_array(raws: dict, part: dict, shape, itemsize: int, bits) -> numpy.ndarray:
    """One part's bytes out of its block's decompressed bytes, un-transformed."""
    inverse = pick(TRANSFORMS, part["transform"], "transform")[1]
    return inverse(raws[part["block"]][part["offset"]:part["offset"] + part["length"]], shape, itemsize, bits)


def decode_entry(record: dict, raws: dict):
    """One header record + the decompressed blocks -> QuantTensor or Tensor."""
    shape = tuple(record["shape"])
    parts = {p["part"]: p for p in record["parts"]}
    dtype = DTYPES[record["dtype"]]
    if record["kind"] != "quant":
        itemsize = torch.empty(0, dtype=dtype).element_size()
        return bytes_tensor(part_array(raws, parts["data"], shape, itemsize, None), dtype, shape)
    rows, cols = matrix_dims(shape)
    awq = record.get("awq")
    q = part_array(raws, parts["q"], (rows, cols), 1, symbol_bits(record["bits"], awq and awq["bits"]))
    if record.get("row_order", "none") != "none":
        perm = part_array(raws, parts["perm"], (rows,), 4, None).view("<u4").astype(numpy.int64)
        unordered = numpy.empty((rows, cols), dtype=numpy.uint8)
        unordered[check_permutation(perm, rows, record["name"])] = q.reshape(rows, cols)
        q = unordered.reshape(-1)
    scale = part_array(raws, parts["scale"], (rows,), 2, None)
    lqer = record.get("lqer")
    factors = None if lqer is None else decode_lqer(raws, parts, lqer, rows, cols)
    groups = None if awq is None else decode_awq(raws, parts, awq, rows, cols)
    return QuantTensor(bytes_tensor(q, torch.int8, (rows, cols)), bytes_tensor(scale, torch.float16, (rows,)),
                       record["bits"], shape, dtype, factors, groups)


def decode_awq(raws: dict, parts: dict, awq: dict, rows: int, cols: int):
    """A record's AWQ groups (golf.quant.awq.AwqGroups); a file packed without AWQ_TOP_K refuses them."""
    if packed("awq_top_k"):
        starts, size, bits = awq["starts"], awq["size"], awq["bits"]
        if not (isinstance(size, int) and size > 0 and isinstance(bits, int) and 2 <= bits <= 8
                and all(isinstance(s, int) and 0 <= s <= cols - size for s in starts)):
            raise GolfError(f"awq record starts {starts!r} size {size!r} bits {bits!r} does not fit a ({rows}, "
                            f"{cols}) tensor")
        scale = part_array(raws, parts["awq_scale"], (rows,), 2, None)
        return AwqGroups(tuple(starts), size, bits, bytes_tensor(scale, torch.float16, (rows,)))
    raise GolfError("artifact: AWQ groups (AWQ_TOP_K): not available here; pack the recipe that has it")


def decode_lqer(raws: dict, parts: dict, lqer: dict, rows: int, cols: int) -> LqerFactors:
    rank, group = lqer["rank"], lqer["group"]
    if not (isinstance(rank, int) and isinstance(group, int) and rank > 0 and group > 0
            and (rank * cols) % group == 0):
        raise GolfError(f"lqer record rank {rank!r} group {group!r} does not fit a ({rows}, {cols}) tensor")
    qa = part_array(raws, parts["lqer_a"], (rows, rank), 1, lqer["a_bits"])
    a_scale = part_array(raws, parts["lqer_a_scale"], (1,), 2, None)
    qb = part_array(raws, parts["lqer_b"], (rank, cols), 1, lqer["b_bits"])
    b_scale = part_array(raws, parts["lqer_b_scale"], (rank * cols // group,), 2, None)
    return LqerFactors(bytes_tensor(qa, torch.int8, (rows, rank)), bytes_tensor(a_scale, torch.float16, (1,)),
                       bytes_tensor(qb, torch.int8, (rank, cols)),
                       bytes_tensor(b_scale, torch.float16, (rank * cols // group,)),
                       lqer["a_bits"], lqer["b_bits"], group)


def decode_artifact(blob: bytes, source: str) -> tuple[dict, dict]:
    """Artifact bytes -> ({name: QuantTensor | Tensor}, meta). source names the file in errors."""
    header, payload_start = read_header(blob, source)
    try:
        raws = decompress_blocks(blob, header, payload_start)
        entries = {r["name"]: decode_entry(r, raws) for r in header["tensors"]}
    except GolfError as e:
        raise GolfError(f"{source}: {e}") from None
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise GolfError(f"{source}: malformed header: {type(e).__name__}: {e}") from None
    return entries, header["meta"]


def write_artifact(path, blob: bytes) -> None:
    """Write atomically and durably (golf.data.write_bytes_atomic): never a half-written artifact."""
    write_bytes_atomic(str(path), blob, durable=True)


def read_file_bytes(path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise GolfError(f"{path}: cannot read: {e.strerror or e}") from None


def read_artifact(path) -> tuple[dict, dict]:
    return decode_artifact(read_file_bytes(path), str(path))


def read_artifact_meta(path) -> dict:
    """An artifact's meta (e.g. the run config) without decoding its tensors; checksum verified."""
    header, _ = read_header(read_file_bytes(path), str(path))
    return header["meta"]


def dequantize_entries(entries: dict) -> dict[str, torch.Tensor]:
    """QuantTensors -> fp32 tensors of their original shape; raw tensors as stored."""
    return {n: dequantize_rows(e) if isinstance(e, QuantTensor) else e for n, e in entries.items()}


def artifact_report(path) -> list[dict]:
    """Per-group size rows of an artifact file, plus a last row for header and checksum, so the
    compressed_bytes column sums to the file's size; `parts` gives each group's compressed bytes by
    part (q, scale, lqer_*, data). Reads the header only (checksum verified)."""
    blob = read_file_bytes(path)
    header, payload_start = read_header(blob, str(path))
    try:
        labels = {k: block_label(blob, payload_start, b) for k, b in header["blocks"].items()}
        rows = [group_row(g, header, labels) for g in dict.fromkeys(b["group"] for b in header["blocks"].values())]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise GolfError(f"{path}: malformed header: {type(e).__name__}: {e}") from None
    overhead = payload_start + CHECKSUM_BYTES
    rows.append({"group": "(header+checksum)", "tensors": 0, "params": 0, "bits": [], "raw_bytes": overhead,
                 "compressed_bytes": overhead, "bits_per_param": None, "parts": {}})
    return rows


def block_label(blob: bytes, payload_start: int, rec: dict) -> str:
    """A block's codec, and for the context coder what its encoder chose (read from the stream's head)."""
    if rec["codec"] != "ctx":
        return rec["codec"]
    start = payload_start + rec["offset"]
    return f"ctx {ctx_describe(blob[start:start + min(rec['length'], 16)])}"


def group_row(group: str, header: dict, labels: dict | None = None) -> dict:
    tensors = [t for t in header["tensors"] if t["group"] == group]
    blocks = {key: b for key, b in header["blocks"].items() if b["group"] == group}
    params = sum(int(numpy.prod(t["shape"], dtype=numpy.int64)) for t in tensors)
    compressed = sum(b["length"] for b in blocks.values())
    parts: dict[str, int] = {}
    codecs: dict[str, str] = {}
    for key, b in blocks.items():
        parts[b["part"]] = parts.get(b["part"], 0) + b["length"]
        codecs[b["part"]] = (labels or {}).get(key, b["codec"])
    return {"group": group, "tensors": len(tensors), "params": params,
            "bits": sorted({t["bits"] for t in tensors}), "raw_bytes": sum(b["raw_length"] for b in blocks.values()),
            "compressed_bytes": compressed, "bits_per_param": 8 * compressed / params if params else None,
            "parts": parts, "codecs": codecs}
