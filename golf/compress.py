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


CODECS = {
    "zlib": (zlib_compress, zlib_decompress),
    "lzma": (lzma_compress, lzma_decompress),
    "zstd": (zstd_compress, zstd_decompress),
    "brotli": (brotli_compress, brotli_decompress),
    "ans": (ans_compress, ans_decompress),
}


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


def similarity_order(rows: numpy.ndarray) -> numpy.ndarray:
    """(n, cols) int8 symbols -> a row order in which each row is followed by its nearest unvisited row in
    L1 (greedy, from row 0; the record's "simsort", PR #1855): a context coder then sees similar rows in a
    row. O(n^2 cols): seconds for a few thousand rows. Differences in int16, sums in int32 (exact)."""
    n = rows.shape[0]
    data = rows.astype(numpy.int16)
    left = numpy.ones(n, dtype=bool)
    order = numpy.empty(n, dtype=numpy.int64)
    current = 0
    for i in range(n):
        order[i] = current
        left[current] = False
        candidates = numpy.flatnonzero(left)
        if candidates.size == 0:
            break
        dist = numpy.abs(data[candidates] - data[current]).sum(axis=1, dtype=numpy.int32)
        current = candidates[numpy.argmin(dist)]  # ties: the lowest index, so the order is deterministic
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
