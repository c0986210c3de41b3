"""Read artifacts that are not ours: upstream's compressed `torch.save` state dicts.

Not part of the packed training file; used by tools/size_check.py for any file that is not a golf
artifact (no b"GOLF" magic). Upstream records write `final_model.int8.ptz`, `final_model.int6.ptz` and the
like: `torch.save(obj, buf)`, optionally byte-shuffled (b"BSHF" + a 2-byte little-endian stride, then the
bytes regrouped by stride), compressed with zlib, lzma/xz, zstd or brotli. The container is found from the
file's leading bytes (brotli has no magic: it is tried last), and the state dict is read with
`torch.load(weights_only=True)` only: tensors, containers and plain values, never a full unpickle
(no code in the file runs).
"""

import io
import lzma
import zlib

import brotli
import torch
import zstandard

from golf.config import GolfError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd7zXZ\x00"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's own (uncompressed) zip container
SHUFFLE_MAGIC = b"BSHF"


def looks_zlib(blob: bytes) -> bool:
    return len(blob) >= 2 and blob[0] & 0x0F == 8 and (blob[0] << 8 | blob[1]) % 31 == 0


def decompress(blob: bytes) -> tuple[bytes, str]:
    """(the torch.save bytes, the codec name) of an upstream artifact's bytes; ValueError if none fits."""
    if blob.startswith(ZIP_MAGIC):
        return blob, "none"
    if blob.startswith(ZSTD_MAGIC):
        return zstandard.ZstdDecompressor().decompressobj().decompress(blob), "zstd"
    if blob.startswith(XZ_MAGIC):
        return lzma.decompress(blob), "xz"
    if looks_zlib(blob):
        return zlib.decompress(blob), "zlib"
    if blob[:1] == b"\x5d":  # lzma 'alone' format: properties byte 0x5d (lc=3, lp=0, pb=2)
        try:
            return lzma.decompress(blob, format=lzma.FORMAT_ALONE), "lzma"
        except lzma.LZMAError:
            pass
    try:
        return brotli.decompress(blob), "brotli"
    except brotli.error:
        raise ValueError("not zlib, lzma, xz, zstd or brotli data, nor a torch.save file") from None


def unshuffle(data: bytes) -> tuple[bytes, int | None]:
    """Undo upstream's byte shuffle (b"BSHF" + stride): (the bytes, the stride or None when not shuffled)."""
    if not data.startswith(SHUFFLE_MAGIC):
        return data, None
    stride = int.from_bytes(data[4:6], "little")
    payload = data[6:]
    if stride < 1:
        raise ValueError(f"byte shuffle stride {stride}")
    out = bytearray(len(payload))
    src = 0
    for s in range(stride):
        part = len(range(s, len(payload), stride))
        out[s::stride] = payload[src:src + part]
        src += part
    return bytes(out), stride


def tensors_of(obj, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    """Every tensor in a loaded state dict, by its dotted path ('w.blocks.0.attn.c_q.weight')."""
    if isinstance(obj, torch.Tensor):
        return [(prefix or "(root)", obj)]
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return []
    found = []
    for key, value in items:
        found += tensors_of(value, f"{prefix}.{key}" if prefix else str(key))
    return found


def upstream_report(path: str) -> dict:
    """{codec, shuffle_stride, torch_bytes, tensors: [{name, dtype, shape, params, bytes}], by_dtype} of an
    upstream artifact; GolfError naming the file when it cannot be read that way."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise GolfError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        raw, codec = decompress(blob)
        raw, stride = unshuffle(raw)
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # any codec or unpickler refusal is the same verdict: not readable as a state dict
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GolfError(f"{path}: not a golf artifact, nor a readable compressed torch.save state dict "
                        f"({type(e).__name__}: {first[:160]})") from None
    rows = [{"name": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
             "params": t.numel(), "bytes": t.numel() * t.element_size()} for name, t in tensors_of(obj)]
    if not rows:
        raise GolfError(f"{path}: a torch.save file with no tensors in it")
    by_dtype = {}
    for r in rows:
        d = by_dtype.setdefault(r["dtype"], {"tensors": 0, "params": 0, "bytes": 0})
        d["tensors"] += 1
        d["params"] += r["params"]
        d["bytes"] += r["bytes"]
    return {"codec": codec, "shuffle_stride": stride, "torch_bytes": len(raw), "tensors": rows, "by_dtype": by_dtype}
