"""Codecs and byte-layout transforms for the artifact's payloads.

CODECS: name -> (compress(data, level=None) -> bytes, decompress(data) -> bytes); level None
means the strongest setting we know (zlib 9, lzma preset 9|EXTREME, zstd 22 with long-distance
matching, brotli quality 11 with a 16 MiB window).

TRANSFORMS: name -> (forward, inverse), exact inverses of each other, on a tensor's raw bytes:
forward(data, shape, itemsize, bits) -> uint8 array, inverse(packed, shape, itemsize, bits) ->
the original uint8 array. `data` is the tensor's bytes in C order (prod(shape) * itemsize bytes);
`bits` is the symbol width of a quantised tensor (None for raw tensors). They reorder or pack bytes
so an entropy coder sees more regular input; none of them loses information.

Measured (one run, 2.9M int6 SDClip symbols of Gaussian rows, k 11.5 and 13; compressed bytes /
order-0 entropy bytes): none+brotli 1.008, none+zstd 1.011, none+lzma 1.059, none+zlib 1.153;
transpose and shuffle change nothing measurable on int8 symbols, bitpack makes every codec worse
(brotli 1.152, lzma 1.207: packed symbols straddle bytes and hide the symbol statistics),
nibble_split too (1.32-1.35). On float bytes shuffle saves 4-7% with every codec. The defaults
(golf/artifact.py) follow from this: brotli, int8 symbols as they are, floats shuffled.
"""
import lzma
import math
import struct
import zlib

import brotli
import numpy
import zstandard

from golf.config import GolfError

try:
    import constriction
except ImportError:  # only the "ans" codec needs it; ans_coder() says what to install
    constriction = None
try:
    import zpaq
except ImportError:  # only the "zpaq" codec needs it; zpaq_module() says what to install
    zpaq = None


def zlib_compress(data: bytes, level: int | None = None) -> bytes:
    return zlib.compress(data, 9 if level is None else level)


def zlib_decompress(data: bytes) -> bytes:
    return zlib.decompress(data)


def lzma_compress(data: bytes, level: int | None = None) -> bytes:
    # CHECK_NONE: the artifact's sha256 already covers every byte; xz's own CRC would be 8 more.
    preset = (9 | lzma.PRESET_EXTREME) if level is None else level
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, preset=preset)


def lzma_decompress(data: bytes) -> bytes:
    return lzma.decompress(data, format=lzma.FORMAT_XZ)


# zstd's largest window is 2^31 bytes; the decompressor must be told to accept what we write.
ZSTD_WINDOW_LOG = 27


def zstd_compress(data: bytes, level: int | None = None) -> bytes:
    params = zstandard.ZstdCompressionParameters.from_level(
        22 if level is None else level, window_log=ZSTD_WINDOW_LOG, enable_ldm=True)
    return zstandard.ZstdCompressor(compression_params=params).compress(data)


def zstd_decompress(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor(max_window_size=2 ** ZSTD_WINDOW_LOG).decompress(data)


def brotli_compress(data: bytes, level: int | None = None) -> bytes:
    # lgwin 24: brotli's largest standard window (16 MiB), about the whole int6 payload of a record.
    return brotli.compress(data, quality=11 if level is None else level, lgwin=24)


def brotli_decompress(data: bytes) -> bytes:
    return brotli.decompress(data)


def zpaq_module():
    if zpaq is None:
        raise GolfError("codec zpaq needs the zpaq package: pip install zpaq")
    return zpaq


def zpaq_compress(data: bytes, level: int | None = None) -> bytes:
    """ZPAQ context mixing (level 5, the strongest: lrzip -L 9's back end, which the record's per-group
    pipeline runs) in one block (threads=1: deterministic, and ~1-3% smaller than a threaded split). Decodes
    at ~0.4 M symbols/s here, ~10x slower than ctx: at record size ~90 s inside the eval budget."""
    return zpaq_module().compress(data, level=5 if level is None else level, threads=1)


def zpaq_decompress(data: bytes) -> bytes:
    return zpaq_module().decompress(data)


def ans_coder():
    if constriction is None:
        raise GolfError("codec ans needs the constriction package: pip install constriction")
    return constriction.stream.stack.AnsCoder


# Stream head: symbol count, then a 256-bit map of the byte values present; a uint32 count per value
# present follows, then the coder's uint32 words.
ANS_HEAD = struct.Struct("<I32s")


def ans_model(counts: numpy.ndarray):
    """The static model both sides build from the same stored integer counts (so the same model)."""
    return constriction.stream.model.Categorical(counts.astype(numpy.float64), perfect=False)


def ans_compress(data: bytes, level: int | None = None) -> bytes:
    """Bytes -> static order-0 range-ANS (constriction) with the stream's own byte histogram stored in
    front: within a few bytes of the order-0 entropy plus 4 bytes per distinct value (level unused)."""
    coder_class = ans_coder()
    symbols = numpy.frombuffer(data, dtype=numpy.uint8)
    counts = numpy.bincount(symbols, minlength=256)
    present = numpy.flatnonzero(counts)
    head = ANS_HEAD.pack(symbols.size, numpy.packbits(counts > 0).tobytes()) + counts[present].astype("<u4").tobytes()
    if present.size <= 1:
        return head  # zero or one distinct value: the counts say everything
    index = numpy.zeros(256, dtype=numpy.int32)
    index[present] = numpy.arange(present.size, dtype=numpy.int32)
    coder = coder_class()
    coder.encode_reverse(index[symbols], ans_model(counts[present]))
    return head + coder.get_compressed().astype("<u4").tobytes()


def ans_decompress(data: bytes) -> bytes:
    coder_class = ans_coder()
    if len(data) < ANS_HEAD.size:
        raise GolfError(f"ans stream of {len(data)} bytes is shorter than its {ANS_HEAD.size}-byte head")
    n, bitmap = ANS_HEAD.unpack_from(data)
    present = numpy.flatnonzero(numpy.unpackbits(numpy.frombuffer(bitmap, dtype=numpy.uint8)))
    words_at = ANS_HEAD.size + 4 * present.size
    if len(data) < words_at or (len(data) - words_at) % 4:
        raise GolfError(f"ans stream of {len(data)} bytes does not fit its head ({present.size} symbol counts)")
    counts = numpy.frombuffer(data[ANS_HEAD.size:words_at], dtype="<u4").astype(numpy.int64)
    if counts.sum() != n or (counts == 0).any():
        raise GolfError(f"ans stream: symbol counts sum to {counts.sum()}, the head says {n}")
    if present.size <= 1:
        return bytes(present.astype(numpy.uint8)) * n
    coder = coder_class(numpy.frombuffer(data[words_at:], dtype="<u4").astype(numpy.uint32))
    index = coder.decode(ans_model(counts), n)
    return present.astype(numpy.uint8)[index].tobytes()


# Context ANS ("ctx"): the symbols of a block's matrices, each coded under a context that both sides know
# before the symbol. Trained weights are not i.i.d.: input channels (columns) keep their own offset and spread
# after per-row scaling, and rows lie close to other rows (closer still after a similarity sort). Per matrix
# the coder stores each column's rounded mean (the shift, subtracted first), and log2 codes of each row's and
# each column's mean |residual| and of each row's mean distance to the row above. A symbol's context is
# (octave of its predicted spread: row code + column code) x (half octave of its row's distance to the row
# above) x (bucket of the residual above it, same column). One table of symbol counts per context serves the
# whole block. The encoder picks the grid (CTX_GRIDS) whose estimated bytes are smallest, or plain order-0
# ANS when that is smaller (i.i.d. rows), and says which in the stream's first byte.
# Stream: mode uint8 (0 plain ans | 1 context), then the ans stream, or CTX_HEAD (matrices, the grid's three
# sizes, lowest residual, alphabet size), the matrices' (rows, cols) as uint32, then two length-prefixed
# brotli parts (side info: only the codes the grid reads, see side_bytes; count table) and the coder's words.
CTX_HEAD = struct.Struct("<IBBBhH")
# (spread octaves, distance half-octaves, vertical buckets). Measured on the 56-step smoke artifact's
# similarity-sorted int7 embedding (residual entropy / order-0): spread 0.97, spread x vertical(9) 0.88,
# distance x vertical(15) 0.81; on the sorted rows transposed brotli reaches 0.82 and ZPAQ 0.79, which ctx does
# not (ZPAQ adapts along each column; python -m golf.bench quant --artifact has the table).
CTX_GRIDS = ((1, 1, 1), (8, 1, 1), (8, 1, 9), (1, 12, 15), (8, 12, 15))
CTX_CHUNK = 1 << 16  # symbols per coder call when no row depends on the one above
LOG_CODE_FLOOR = 1 / 16  # mean |residual| is coded as log2(x + floor): an all-zero row still has a code


def log2_code(x: numpy.ndarray) -> numpy.ndarray:
    """Mean |residual| -> uint8 code in quarter octaves (128 = 1 symbol step)."""
    return numpy.clip(numpy.round(4 * numpy.log2(x + LOG_CODE_FLOOR)) + 128, 0, 255).astype(numpy.uint8)


def rows_above(residual: numpy.ndarray) -> numpy.ndarray:
    above = numpy.zeros_like(residual)
    above[1:] = residual[:-1]
    return above


def ctx_side(q: numpy.ndarray) -> tuple[tuple, numpy.ndarray, numpy.ndarray]:
    """(rows, cols) int16 symbols -> (side info: column shift int8, row codes, column codes, whole-matrix code,
    row-distance codes; the residual q - shift; the residual of the row above each row)."""
    shift = numpy.clip(numpy.round(q.mean(axis=0)), -127, 127).astype(numpy.int8)
    residual = q - shift.astype(numpy.int16)
    above = rows_above(residual)
    spread = numpy.abs(residual)
    distance = numpy.abs(residual - above).mean(axis=1)
    side = (shift, log2_code(spread.mean(axis=1)), log2_code(spread.mean(axis=0)), int(log2_code(spread.mean())),
            log2_code(distance))
    return side, residual, above


def side_bytes(side: tuple, grid: tuple) -> bytes:
    """The side info the grid reads: the shift always, the spread codes only with spread classes, the
    row-distance codes only with distance classes."""
    shift, row_code, col_code, whole, dist_code = side
    spreads, distances, _ = grid
    return (shift.tobytes() + (row_code.tobytes() + col_code.tobytes() + bytes([whole]) if spreads > 1 else b"")
            + (dist_code.tobytes() if distances > 1 else b""))


def side_size(rows: int, cols: int, grid: tuple) -> int:
    return cols + (rows + cols + 1 if grid[0] > 1 else 0) + (rows if grid[1] > 1 else 0)


def parse_side(side: numpy.ndarray, rows: int, cols: int, grid: tuple) -> tuple:
    """Inverse of side_bytes; codes the grid does not read come back as zeros (static_contexts ignores them)."""
    shift, at = side[:cols].view(numpy.int8), cols
    row_code, col_code, whole = numpy.zeros(rows, numpy.uint8), numpy.zeros(cols, numpy.uint8), 0
    if grid[0] > 1:
        row_code, col_code, whole = side[at:at + rows], side[at + rows:at + rows + cols], int(side[at + rows + cols])
        at += rows + cols + 1
    dist_code = side[at:at + rows] if grid[1] > 1 else numpy.zeros(rows, numpy.uint8)
    return shift, row_code, col_code, whole, dist_code


def static_contexts(side: tuple, grid: tuple) -> numpy.ndarray:
    """(rows, cols) context base of each symbol from side info alone: (spread class x distance class) x buckets."""
    _, row_code, col_code, whole, dist_code = side
    spreads, distances, buckets = grid
    quarter = row_code.astype(numpy.int32)[:, None] + col_code.astype(numpy.int32)[None, :] - whole - 128
    spread = numpy.clip(numpy.floor_divide(quarter, 4) + spreads // 2, 0, spreads - 1)
    distance = numpy.clip(numpy.floor_divide(dist_code.astype(numpy.int32) - 128, 2) + 6, 0, distances - 1)
    return (spread * distances + distance[:, None]) * buckets


def vertical_bucket(above: numpy.ndarray, buckets: int) -> numpy.ndarray:
    half = buckets // 2
    return numpy.clip(above, -half, half) + half


def counts_table(contexts: numpy.ndarray, index: numpy.ndarray, n_ctx: int, alphabet: int) -> numpy.ndarray:
    """Counts per (context, symbol), each context's row scaled to fit uint16 (kept >= 1 where non-zero):
    the integer table both sides build their models from."""
    counts = numpy.bincount(contexts * alphabet + index, minlength=n_ctx * alphabet).reshape(n_ctx, alphabet)
    halvings = numpy.maximum(0, numpy.ceil(numpy.log2(numpy.maximum(counts.max(axis=1), 1) / 65535))).astype(numpy.int64)
    scaled = numpy.where(counts > 0, numpy.maximum(counts >> halvings[:, None], 1), 0)
    return scaled.astype("<u2")


def table_models(table: numpy.ndarray) -> numpy.ndarray:
    """uint16 counts (n_ctx, alphabet) -> float64 weights for constriction's per-symbol Categorical; an
    unused context gets a flat row (it codes nothing)."""
    weights = table.astype(numpy.float64)
    weights[weights.sum(axis=1) == 0] = 1.0
    return weights


def code_bytes(table: numpy.ndarray, contexts: numpy.ndarray, index: numpy.ndarray) -> float:
    """Bytes the coder needs for these symbols under the table's models (within ~0.01%)."""
    weights = table_models(table)
    logp = numpy.log2(numpy.maximum(weights, 1e-300)) - numpy.log2(weights.sum(axis=1, keepdims=True))
    return float(-logp[contexts, index].sum() / 8)


def ctx_chunks(shapes, vertical: bool) -> list[tuple[int, int, int]]:
    """(matrix, first row, row count) in coding order: one row at a time when a row's contexts need the row
    above decoded, else up to CTX_CHUNK symbols."""
    chunks = []
    for m, (rows, cols) in enumerate(shapes):
        step = 1 if vertical else max(1, CTX_CHUNK // max(cols, 1))
        chunks += [(m, r, min(step, rows - r)) for r in range(0, rows, step)]
    return chunks


def split_matrices(symbols: numpy.ndarray, shapes) -> list[numpy.ndarray]:
    out, at = [], 0
    for rows, cols in shapes:
        out.append(symbols[at:at + rows * cols].reshape(rows, cols))
        at += rows * cols
    return out


def ctx_compress(data: bytes, level: int | None = None, shapes=None) -> bytes:
    """int8 symbols of the matrices `shapes` (rows, cols), back to back -> context ANS stream (see CTX_HEAD).
    Without shapes the data is one row. level unused."""
    symbols = numpy.frombuffer(data, dtype=numpy.int8).astype(numpy.int16)
    shapes = [(1, symbols.size)] if shapes is None else [tuple(map(int, s)) for s in shapes]
    if sum(r * c for r, c in shapes) != symbols.size:
        raise GolfError(f"ctx codec: shapes hold {sum(r * c for r, c in shapes)} symbols, data has {symbols.size}")
    plain = b"\0" + ans_compress(data)
    if symbols.size == 0:
        return plain
    sides, residuals, aboves = zip(*(ctx_side(q) for q in split_matrices(symbols, shapes)))
    lowest = min(int(r.min()) for r in residuals)
    alphabet = max(int(r.max()) for r in residuals) - lowest + 1
    index = numpy.concatenate([r.ravel() for r in residuals]) - lowest
    best = None
    for grid in CTX_GRIDS:
        contexts = numpy.concatenate([(static_contexts(sd, grid) + vertical_bucket(above, grid[2])).ravel()
                                      for above, sd in zip(aboves, sides)])
        table = counts_table(contexts, index, math.prod(grid), alphabet)
        packed_table = brotli_compress(table.tobytes())
        side = brotli_compress(b"".join(side_bytes(sd, grid) for sd in sides))
        estimate = code_bytes(table, contexts, index) + len(packed_table) + len(side)
        if best is None or estimate < best[0]:
            best = (estimate, grid, contexts, table, packed_table, side)
    estimate, grid, contexts, table, packed_table, side = best
    if estimate + 8 * len(shapes) + 32 >= len(plain):
        return plain
    weights, family, coder = table_models(table), ctx_family(), ans_coder()()
    starts = numpy.cumsum([0] + [r * c for r, c in shapes])
    for m, row, n_rows in reversed(ctx_chunks(shapes, grid[2] > 1) if alphabet > 1 else []):  # 1 value: no words
        cols = shapes[m][1]
        span = slice(starts[m] + row * cols, starts[m] + (row + n_rows) * cols)
        coder.encode_reverse(index[span].astype(numpy.int32), family, weights[contexts[span]])
    head = CTX_HEAD.pack(len(shapes), *grid, lowest, alphabet) + numpy.array(shapes, dtype="<u4").tobytes()
    parts = b"".join(struct.pack("<I", len(p)) + p for p in (side, packed_table))
    return b"\1" + head + parts + coder.get_compressed().astype("<u4").tobytes()


def ctx_describe(stream: bytes) -> str:
    """What a ctx stream's encoder chose, from its head alone: "plain" or the context grid."""
    if stream[:1] == b"\1" and len(stream) >= 1 + CTX_HEAD.size:
        _, spreads, distances, buckets, _, _ = CTX_HEAD.unpack_from(stream, 1)
        return f"contexts {spreads}x{distances}x{buckets}"
    return "plain" if stream[:1] == b"\0" else "unreadable"


def ctx_family():
    ans_coder()  # says what to install when constriction is missing
    return constriction.stream.model.Categorical(perfect=False)


def ctx_decompress(data: bytes) -> bytes:
    if not data:
        raise GolfError("ctx stream is empty")
    if data[0] == 0:
        return ans_decompress(data[1:])
    if data[0] != 1 or len(data) < 1 + CTX_HEAD.size:
        raise GolfError(f"ctx stream: mode byte {data[0]} (expected 0 or 1) or {len(data)} bytes is too short")
    n, spreads, distances, buckets, lowest, alphabet = CTX_HEAD.unpack_from(data, 1)
    grid = (spreads, distances, buckets)
    at = 1 + CTX_HEAD.size
    if grid not in CTX_GRIDS or alphabet == 0 or len(data) < at + 8 * n:
        raise GolfError(f"ctx stream: bad head (grid {grid}, alphabet {alphabet}, {n} matrices)")
    shapes = [tuple(map(int, s)) for s in numpy.frombuffer(data, dtype="<u4", count=2 * n, offset=at).reshape(n, 2)]
    at += 8 * n
    parts = []
    for _ in range(2):
        if len(data) < at + 4:
            raise GolfError("ctx stream: truncated before a part length")
        (length,) = struct.unpack_from("<I", data, at)
        parts.append(brotli_decompress(data[at + 4:at + 4 + length]))
        at += 4 + length
    side = numpy.frombuffer(parts[0], dtype=numpy.uint8)
    table = numpy.frombuffer(parts[1], dtype="<u2")
    if side.size != sum(side_size(r, c, grid) for r, c in shapes) or table.size != math.prod(grid) * alphabet:
        raise GolfError(f"ctx stream: side info {side.size} B or count table {table.size} entries do not fit the head")
    if (len(data) - at) % 4:
        raise GolfError(f"ctx stream: {len(data) - at} coder bytes is not whole words")
    weights = table_models(table.reshape(math.prod(grid), alphabet))
    coder = ans_coder()(numpy.frombuffer(data, dtype="<u4", offset=at).astype(numpy.uint32))
    family = ctx_family()
    out, s_at = [], 0
    for rows, cols in shapes:
        sd = parse_side(side[s_at:s_at + side_size(rows, cols, grid)], rows, cols, grid)
        s_at += side_size(rows, cols, grid)
        base = static_contexts(sd, grid)
        residual = numpy.zeros((rows, cols), dtype=numpy.int16)
        for _, row, n_rows in ctx_chunks([(rows, cols)], buckets > 1):
            above = residual[row - 1] if row > 0 else numpy.zeros(cols, numpy.int16)
            contexts = base[row:row + n_rows] + vertical_bucket(above, buckets)[None]
            index = coder.decode(family, weights[contexts.ravel()]) if alphabet > 1 else numpy.zeros(contexts.size)
            residual[row:row + n_rows] = index.reshape(n_rows, cols).astype(numpy.int16) + lowest
        q = residual + sd[0].astype(numpy.int16)[None]
        if q.size and (q.min() < -128 or q.max() > 127):
            raise GolfError("ctx stream: a decoded symbol lies outside int8")
        out.append(q.astype(numpy.int8).tobytes())
    return b"".join(out)


CODECS = {
    "zlib": (zlib_compress, zlib_decompress),
    "lzma": (lzma_compress, lzma_decompress),
    "zstd": (zstd_compress, zstd_decompress),
    "brotli": (brotli_compress, brotli_decompress),
    "ans": (ans_compress, ans_decompress),
    "ctx": (ctx_compress, ctx_decompress),
    "zpaq": (zpaq_compress, zpaq_decompress),
}
# Codecs whose compress also takes the block's matrix shapes (shapes=[(rows, cols), ...]).
MATRIX_CODECS = {"ctx"}


def element_count(shape) -> int:
    return math.prod(shape)


def expect_bytes(packed: numpy.ndarray, length: int, transform: str) -> numpy.ndarray:
    """A payload slice of the wrong length cannot be inverted: say so instead of misreading it."""
    if packed.size != length:
        raise GolfError(f"transform {transform}: expected {length} bytes, got {packed.size}")
    return packed


def need_symbols(itemsize: int, bits: int | None, transform: str) -> int:
    """Transforms of int8 symbols need bytes of 1 and a symbol width 2..8."""
    if itemsize != 1 or bits is None or not 2 <= bits <= 8:
        raise GolfError(f"transform {transform}: needs int8 symbols with bits 2..8, "
                        f"got itemsize {itemsize} bits {bits}")
    return bits


def identity_forward(data, shape, itemsize, bits):
    return data


def identity_inverse(packed, shape, itemsize, bits):
    return expect_bytes(packed, element_count(shape) * itemsize, "none")


def bitpack_forward(data, shape, itemsize, bits):
    """int8 symbols -> their low `bits` bits packed densely (int6: 4 symbols in 3 bytes)."""
    need_symbols(itemsize, bits, "bitpack")
    low = data & numpy.uint8((1 << bits) - 1)
    if not numpy.array_equal(sign_extend(low, bits), data):
        raise GolfError(f"transform bitpack: a symbol does not fit in {bits} bits")
    planes = numpy.unpackbits(low[:, None], axis=1, count=bits, bitorder="little")  # (n, bits)
    return numpy.packbits(planes.ravel(), bitorder="little")


def bitpack_inverse(packed, shape, itemsize, bits):
    need_symbols(itemsize, bits, "bitpack")
    n = element_count(shape)
    expect_bytes(packed, (n * bits + 7) // 8, "bitpack")
    planes = numpy.unpackbits(packed, count=n * bits, bitorder="little").reshape(n, bits)
    return sign_extend(numpy.packbits(planes, axis=1, bitorder="little").ravel(), bits)


def sign_extend(low: numpy.ndarray, bits: int) -> numpy.ndarray:
    """uint8 holding a two's-complement `bits`-bit value -> that value as int8's byte."""
    sign = 1 << (bits - 1)
    return ((low.astype(numpy.int16) ^ sign) - sign).astype(numpy.int8).view(numpy.uint8)


def nibble_split_forward(data, shape, itemsize, bits):
    """Bytes -> plane of high nibbles then plane of low nibbles, two nibbles per byte."""
    if itemsize != 1:
        raise GolfError(f"transform nibble_split: needs 1-byte elements, got itemsize {itemsize}")
    padded = numpy.concatenate([data, numpy.zeros(data.size % 2, numpy.uint8)])
    high, low = padded >> 4, padded & numpy.uint8(15)
    return numpy.concatenate([(high[0::2] << 4) | high[1::2], (low[0::2] << 4) | low[1::2]])


def nibble_split_inverse(packed, shape, itemsize, bits):
    if itemsize != 1:
        raise GolfError(f"transform nibble_split: needs 1-byte elements, got itemsize {itemsize}")
    n = element_count(shape)
    half = (n + 1) // 2
    expect_bytes(packed, 2 * half, "nibble_split")
    high, low = numpy.empty(2 * half, numpy.uint8), numpy.empty(2 * half, numpy.uint8)
    high[0::2], high[1::2] = packed[:half] >> 4, packed[:half] & numpy.uint8(15)
    low[0::2], low[1::2] = packed[half:] >> 4, packed[half:] & numpy.uint8(15)
    return ((high << 4) | low)[:n]


def matrix_dims(shape) -> tuple[int, int]:
    """(rows, cols) of a tensor seen as rows; 0-d and 1-d tensors are one row."""
    if len(shape) <= 1:
        return 1, element_count(shape)
    return shape[0], element_count(shape[1:])


def transpose_forward(data, shape, itemsize, bits):
    """Row-major (rows, cols) -> column-major: a column's symbols share one input channel."""
    rows, cols = matrix_dims(shape)
    return data.reshape(rows, cols, itemsize).transpose(1, 0, 2).ravel()


def transpose_inverse(packed, shape, itemsize, bits):
    rows, cols = matrix_dims(shape)
    expect_bytes(packed, rows * cols * itemsize, "transpose")
    return packed.reshape(cols, rows, itemsize).transpose(1, 0, 2).ravel()


def shuffle_forward(data, shape, itemsize, bits):
    """Multi-byte elements -> byte planes (all first bytes, then all second bytes, ...): the
    exponent bytes of fp16/bf16/fp32 values are far more regular than their mantissa bytes."""
    return data.reshape(-1, itemsize).T.ravel()


def shuffle_inverse(packed, shape, itemsize, bits):
    expect_bytes(packed, element_count(shape) * itemsize, "shuffle")
    return packed.reshape(itemsize, -1).T.ravel()


SIMILARITY_GRAM_ROWS = 16384  # up to this many rows the n x n distance matrix (float64, 2 GB at the cap) is built


def similarity_order(rows: numpy.ndarray) -> numpy.ndarray:
    """(n, cols) int8 symbols -> a row order in which each row is followed by its nearest unvisited row
    (greedy from row 0, as the record's "simsort", PR #1855), in squared L2 rather than the record's L1: the
    distances then come from one matrix product, exact in float64 for int8 symbols, so the order is
    deterministic (ties: the lowest index). Measured on the smoke model's 8192x128 int7 embedding: the
    context coder's bytes within 0.1% of the L1 order's; 8192x512 sorts in ~1.3 s here against ~13 s for L1."""
    n = rows.shape[0]
    x = rows.reshape(n, -1).astype(numpy.float64)
    norms = numpy.einsum("ij,ij->i", x, x)
    dist = None
    if n <= SIMILARITY_GRAM_ROWS:
        dist = x @ x.T
        dist *= -2.0
        dist += norms[None, :]  # row i: |x_j|^2 - 2 x_i.x_j, the distance to j less the constant |x_i|^2
    visited = numpy.zeros(n)
    order = numpy.empty(n, dtype=numpy.int64)
    here = numpy.empty(n)
    current = 0
    for i in range(n):
        order[i] = current
        visited[current] = numpy.inf
        if i == n - 1:
            break
        numpy.add(dist[current] if dist is not None else norms - 2.0 * (x @ x[current]), visited, out=here)
        current = int(numpy.argmin(here))
    return order


def identity_order(rows: numpy.ndarray) -> numpy.ndarray:
    return numpy.arange(rows.shape[0], dtype=numpy.int64)


# Row orders of a quantised tensor's symbols: name -> (rows (n, cols) -> permutation of n). The artifact
# stores a non-identity order as the tensor's "perm" part, and un-permutes on load.
ROW_ORDERS = {"none": identity_order, "simsort": similarity_order}


def check_permutation(perm: numpy.ndarray, n: int, what: str) -> numpy.ndarray:
    """A stored row order must be a permutation of 0..n-1: anything else would silently scramble rows."""
    if perm.shape != (n,) or not numpy.array_equal(numpy.sort(perm), numpy.arange(n)):
        raise GolfError(f"{what}: stored row order is not a permutation of {n} rows")
    return perm


TRANSFORMS = {
    "none": (identity_forward, identity_inverse),
    "bitpack": (bitpack_forward, bitpack_inverse),
    "nibble_split": (nibble_split_forward, nibble_split_inverse),
    "transpose": (transpose_forward, transpose_inverse),
    "shuffle": (shuffle_forward, shuffle_inverse),
}
