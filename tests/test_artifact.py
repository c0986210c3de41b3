import dataclasses
import hashlib
import json
import os
import pickle
import random
import struct

import brotli
import numpy
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import golf.artifact
from golf.artifact import (ARTIFACT_VERSION, CHECKSUM_BYTES, FLOAT_CODEC, PREAMBLE, artifact_report, decode_artifact,
                           dequantize_entries, encode_artifact, read_artifact, read_header, write_artifact)
from golf.compress import CODECS, TRANSFORMS
from golf.config import GolfError
from golf.quant.lowrank import lqer_factors
from golf.quant.rtn import QuantTensor, dequantize_rows, quantize_rtn
from golf.size_predict import HEADER_BYTES_FIXED, fit_dims, predict_shapes_bytes, predict_state_bytes


def with_lqer(w, bits, clip_k, rank=2, group=8):
    qt = quantize_rtn(w, bits, clip_k)
    return dataclasses.replace(qt, lqer=lqer_factors(w, qt, rank, 2, 4, group))


def sample_entries(seed=0):
    g = torch.Generator().manual_seed(seed)
    entries = {
        "embed": quantize_rtn(torch.randn(12, 8, generator=g), 8, 14.0),
        "attn.q": with_lqer(torch.randn(8, 8, generator=g), 6, 13.0),
        "mlp.fc": quantize_rtn(torch.randn(16, 8, generator=g).to(torch.bfloat16), 5, 11.5),
        "mlp.proj": quantize_rtn(torch.randn(8, 4, 4, generator=g), 4, None),
        "gain16": torch.randn(8, generator=g).half(),
        "gain_bf16": torch.randn(3, 2, generator=g).bfloat16(),
        "gain32": torch.randn(5, generator=g),
        "scalar": torch.tensor(2.5),
        "step": torch.tensor([7], dtype=torch.int64),
    }
    groups = {"embed": "embed", "attn.q": "attn", "mlp.fc": "mlp", "mlp.proj": "mlp", "gain16": "scalars",
              "gain_bf16": "scalars", "gain32": "scalars", "scalar": "scalars", "step": "scalars"}
    return entries, groups


def assert_same(a, b):
    if isinstance(a, QuantTensor):
        assert isinstance(b, QuantTensor)
        assert torch.equal(a.q, b.q) and torch.equal(a.scale, b.scale)
        assert (a.bits, a.shape, a.dtype) == (b.bits, b.shape, b.dtype)
        assert (a.lqer is None) == (b.lqer is None)
        if a.lqer is not None:
            for field in ("qa", "a_scale", "qb", "b_scale", "a_bits", "b_bits", "group"):
                x, y = getattr(a.lqer, field), getattr(b.lqer, field)
                assert torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y, field
            assert torch.equal(dequantize_rows(a), dequantize_rows(b))
    else:
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a.view(torch.uint8) if a.dim() else a.reshape(1).view(torch.uint8),
                           b.view(torch.uint8) if b.dim() else b.reshape(1).view(torch.uint8))


@settings(max_examples=12, deadline=None)
@given(codec=st.sampled_from(sorted(CODECS)),
       transform=st.sampled_from(sorted(TRANSFORMS) + ["simsort+none", "simsort+transpose", "auto"]),
       seed=st.integers(0, 99))
def test_round_trip_is_bit_exact_for_every_codec_and_transform(codec, transform, seed):
    entries, groups = sample_entries(seed)
    meta = {"config": {"model_dim": 512, "codec": codec}, "seed": seed}
    blob = encode_artifact(entries, groups, meta, codecs=codec, transforms=transform)
    back, back_meta = decode_artifact(blob, "mem")
    assert list(back) == list(entries) and back_meta == meta
    for name in entries:
        assert_same(entries[name], back[name])


def test_per_group_codecs_and_file_round_trip(tmp_path):
    entries, groups = sample_entries()
    codecs = {"embed": "lzma", "attn": "zstd", "mlp": "brotli", "scalars": "zlib"}
    transforms = {"embed": "transpose", "attn": "bitpack", "mlp": "none", "scalars": "none"}
    path = tmp_path / "final_model.golf"
    write_artifact(path, encode_artifact(entries, groups, {}, codecs, transforms))
    back, meta = read_artifact(path)
    header, _ = read_header(path.read_bytes(), str(path))
    blocks = header["blocks"].values()
    symbol_parts = ("q", "lqer_a", "lqer_b")
    assert {(b["group"], b["codec"]) for b in blocks if b["part"] in symbol_parts} == {
        (g, codecs[g]) for g in ("embed", "attn", "mlp")}
    assert {b["codec"] for b in blocks if b["part"] not in symbol_parts} == {FLOAT_CODEC}
    for name in entries:
        assert_same(entries[name], back[name])
    deq = dequantize_entries(back)
    assert deq["mlp.proj"].shape == (8, 4, 4) and deq["mlp.proj"].dtype == torch.float32
    assert torch.equal(deq["mlp.fc"], dequantize_rows(entries["mlp.fc"]))
    assert deq["gain_bf16"].dtype == torch.bfloat16


def test_every_flipped_byte_and_every_truncation_is_detected():
    entries, groups = sample_entries()
    blob = encode_artifact({n: entries[n] for n in ("attn.q", "gain16")}, groups, {"run": "x"},
                           transforms="simsort+transpose")  # every kind of block: symbols, scales, LQER, perm
    assert {b["part"] for b in read_header(blob, "x")[0]["blocks"].values()} == {
        "q", "scale", "perm", "lqer_a", "lqer_a_scale", "lqer_b", "lqer_b_scale", "data"}
    rng = random.Random(0)
    for i in range(len(blob)):
        corrupt = bytearray(blob)
        corrupt[i] ^= rng.randrange(1, 256)
        with pytest.raises(GolfError, match="^art.golf: "):
            decode_artifact(bytes(corrupt), "art.golf")
    for n in range(len(blob)):
        with pytest.raises(GolfError, match="^art.golf: "):
            decode_artifact(blob[:n], "art.golf")
    with pytest.raises(GolfError, match="checksum"):
        decode_artifact(blob + b"\0", "art.golf")


def resealed(body: bytes) -> bytes:
    return body + hashlib.sha256(body).digest()


def test_a_resealed_corrupt_context_block_is_one_golf_error_or_decodes():
    """Past the checksum (a resealed file), a flipped byte in a context-coded block's head, side info or count
    table is a GolfError naming the file, never another exception; words decode to other symbols."""
    rng = numpy.random.default_rng(0)
    cluster = numpy.sort(rng.integers(0, 4, 48))
    w = torch.tensor(rng.standard_normal((4, 32))[cluster] + 0.1 * rng.standard_normal((48, 32)), dtype=torch.float32)
    entries = {"emb": quantize_rtn(w, 6, 3.0)}
    blob = encode_artifact(entries, {"emb": "embed"}, {}, codecs="ctx")
    header, start = read_header(blob, "x")
    block = header["blocks"]["embed/q"]
    at = start + block["offset"]
    assert blob[at] == 1  # the context mode, not the plain fallback
    picks = random.Random(1)
    for i in list(range(at, at + 120)) + [picks.randrange(at, at + block["length"]) for _ in range(40)]:
        body = bytearray(blob[:-CHECKSUM_BYTES])
        body[i] ^= picks.randrange(1, 256)
        try:
            decode_artifact(resealed(bytes(body)), "art.golf")
        except GolfError as e:
            assert str(e).startswith("art.golf: ")


def test_each_bad_input_names_its_problem():
    entries, groups = sample_entries()
    blob = encode_artifact({"gain16": entries["gain16"]}, groups, {})
    body = blob[:-CHECKSUM_BYTES]
    header_len = struct.unpack_from("<I", body, 8)[0]
    with pytest.raises(GolfError, match="not a golf artifact"):
        decode_artifact(b"PK\x03\x04" + blob[4:], "f")
    with pytest.raises(GolfError, match=f"^f: artifact format version {ARTIFACT_VERSION + 1}; this build reads "):
        decode_artifact(resealed(body[:4] + struct.pack("<I", ARTIFACT_VERSION + 1) + body[8:]), "f")
    bad_json = brotli.compress(b"{" * 40)
    with pytest.raises(GolfError, match="not valid JSON"):
        decode_artifact(resealed(body[:8] + struct.pack("<I", len(bad_json)) + bad_json + body[12 + header_len:]), "f")
    with pytest.raises(GolfError, match="does not decompress with brotli"):
        decode_artifact(resealed(body[:12] + b"\xff" * header_len + body[12 + header_len:]), "f")
    with pytest.raises(GolfError, match="runs past"):
        decode_artifact(resealed(body[:8] + struct.pack("<I", 10 ** 6) + body[12:]), "f")
    with pytest.raises(GolfError, match="truncated"):
        decode_artifact(b"GOLF", "f")


def test_loading_never_unpickles(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the loader must not unpickle")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    entries, groups = sample_entries()
    back, _ = decode_artifact(encode_artifact(entries, groups, {}), "mem")
    assert set(back) == set(entries)


def test_encode_errors_and_atomic_write(tmp_path):
    entries, groups = sample_entries()
    with pytest.raises(GolfError, match="no group"):
        encode_artifact(entries, {}, {})
    with pytest.raises(GolfError, match="codecs has no entry"):
        encode_artifact(entries, groups, {}, codecs={"embed": "zlib"})
    with pytest.raises(GolfError, match="meta"):
        encode_artifact(entries, groups, {"bad": object()})
    with pytest.raises(GolfError, match="not available"):
        encode_artifact(entries, groups, {}, codecs="lz4")
    path = tmp_path / "a.golf"
    path.write_bytes(b"previous")
    with pytest.raises(TypeError):
        write_artifact(path, "not bytes")
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["a.golf"]
    with pytest.raises(GolfError, match="missing.golf: cannot read"):
        read_artifact(tmp_path / "missing.golf")


def test_report_rows_sum_to_the_file_size(tmp_path):
    entries, groups = sample_entries()
    path = tmp_path / "a.golf"
    write_artifact(path, encode_artifact(entries, groups, {}))
    rows = artifact_report(path)
    assert sum(r["compressed_bytes"] for r in rows) == os.path.getsize(path)
    by_group = {r["group"]: r for r in rows}
    assert by_group["mlp"]["params"] == 16 * 8 + 8 * 16 and by_group["mlp"]["bits"] == [4, 5]
    assert by_group["scalars"]["bits"] == [16, 32, 64]
    assert by_group["attn"]["bits_per_param"] == 8 * by_group["attn"]["compressed_bytes"] / 64


def gaussian_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = {"attn": (256, 256), "fc": (512, 256), "proj": (256, 512), "norm": (256,)}
    return {n: torch.randn(*s, generator=g) * 0.02 for n, s in shapes.items()}


PLAN = {"attn": {"bits": 6, "clip_k": 13.0}, "fc": {"bits": 6, "clip_k": 11.5},
        "proj": {"bits": 7, "clip_k": None}, "norm": {"bits": None}}


def test_size_prediction_within_5_percent_of_the_encoded_artifact():
    state = gaussian_state()
    entries = {n: quantize_rtn(w, PLAN[n]["bits"], PLAN[n]["clip_k"]) if PLAN[n]["bits"] else w.half()
               for n, w in state.items()}
    real = len(encode_artifact(entries, {n: n for n in state}, {}))
    predicted = HEADER_BYTES_FIXED + sum(predict_state_bytes(state, PLAN).values())
    from_shapes = HEADER_BYTES_FIXED + sum(predict_shapes_bytes({n: tuple(w.shape) for n, w in state.items()},
                                                                PLAN).values())
    assert abs(predicted / real - 1) < 0.05
    assert abs(from_shapes / real - 1) < 0.05


def test_fit_dims_returns_the_largest_dim_that_fits():
    def shapes(dim):
        return {"attn": (dim, dim), "fc": (2 * dim, dim), "proj": (dim, 2 * dim), "norm": (dim,)}

    best, rows = fit_dims(shapes, PLAN, code_bytes=50_000, limit=600_000)
    assert best is not None and rows[-1]["total_bytes"] > 600_000 and not rows[-1]["fits"]
    assert rows[-2]["model_dim"] == best and rows[-2]["total_bytes"] <= 600_000
    assert all(a["total_bytes"] < b["total_bytes"] for a, b in zip(rows, rows[1:]))
    with pytest.raises(GolfError, match="norm"):
        fit_dims(shapes, {k: v for k, v in PLAN.items() if k != "norm"}, 0)


def version_1_blob(entries: dict, group: str = "all") -> bytes:
    """A version-1 artifact as the previous build wrote it: plain JSON header, one brotli block per group."""
    records, raw = [], b""
    for name, e in entries.items():
        parts = [("q", e.q), ("scale", e.scale)] if isinstance(e, QuantTensor) else [("data", e)]
        rec = {"name": name, "group": group, "kind": "quant" if isinstance(e, QuantTensor) else "raw",
               "shape": list(e.shape), "dtype": str(e.dtype).removeprefix("torch."),
               "bits": e.bits if isinstance(e, QuantTensor) else 16, "scale_layout": None, "parts": []}
        for part, t in parts:
            data = t.contiguous().view(torch.uint8).numpy().tobytes()
            rec["parts"].append({"part": part, "transform": "none", "offset": len(raw), "length": len(data)})
            raw += data
        records.append(rec)
    payload = brotli.compress(raw)
    header = json.dumps({"groups": {group: {"codec": "brotli", "offset": 0, "length": len(payload),
                                            "raw_length": len(raw)}},
                         "tensors": records, "meta": {"old": True}}).encode()
    return resealed(PREAMBLE.pack(b"GOLF", 1, len(header)) + header + payload)


def test_a_version_1_artifact_still_loads(tmp_path):
    g = torch.Generator().manual_seed(3)
    entries = {"w": quantize_rtn(torch.randn(6, 5, generator=g), 6, 12.0), "b": torch.randn(4, generator=g).half()}
    back, meta = decode_artifact(version_1_blob(entries), "old.golf")
    assert meta == {"old": True}
    assert_same(entries["w"], back["w"])
    assert_same(entries["b"], back["b"])
    path = tmp_path / "old.golf"
    path.write_bytes(version_1_blob(entries))
    rows = artifact_report(path)
    assert sum(r["compressed_bytes"] for r in rows) == os.path.getsize(path)


def test_lqer_factors_round_trip_and_bad_factor_records_name_the_problem():
    entries, groups = sample_entries()
    blob = encode_artifact({"attn.q": entries["attn.q"]}, groups, {})
    header, start = read_header(blob, "f")
    assert {b["part"] for b in header["blocks"].values()} == {"q", "scale", "lqer_a", "lqer_a_scale", "lqer_b",
                                                              "lqer_b_scale"}
    back, _ = decode_artifact(blob, "f")
    assert_same(entries["attn.q"], back["attn.q"])
    assert not torch.equal(dequantize_rows(back["attn.q"]), dequantize_rows(dataclasses.replace(back["attn.q"], lqer=None)))
    payload = blob[start:-CHECKSUM_BYTES]

    def resealed_header(edit):
        h = json.loads(json.dumps(header))
        edit(h)
        text = brotli.compress(json.dumps(h).encode())
        return resealed(PREAMBLE.pack(b"GOLF", ARTIFACT_VERSION, len(text)) + text + payload)

    def set_rank(h):
        h["tensors"][0]["lqer"]["rank"] = 3

    def set_group(h):
        h["tensors"][0]["lqer"]["group"] = 7

    def drop_factor(h):
        h["tensors"][0]["parts"] = [p for p in h["tensors"][0]["parts"] if p["part"] != "lqer_b"]

    def short_block(h):
        h["blocks"]["attn/lqer_a"]["raw_length"] += 1

    for edit, needle in ((set_rank, "expected"), (set_group, "does not fit"), (drop_factor, "lqer_b"),
                         (short_block, "attn/lqer_a decompressed to")):
        with pytest.raises(GolfError, match=f"^f: .*{needle}"):
            decode_artifact(resealed_header(edit), "f")


def test_a_stored_row_order_must_be_a_permutation(monkeypatch):
    entries, groups = sample_entries()
    one = {"mlp.fc": entries["mlp.fc"]}
    blob = encode_artifact(one, groups, {}, transforms="simsort+none")
    assert read_header(blob, "f")[0]["tensors"][0]["row_order"] == "simsort"
    assert_same(one["mlp.fc"], decode_artifact(blob, "f")[0]["mlp.fc"])
    monkeypatch.setitem(golf.artifact.ROW_ORDERS, "simsort", lambda rows: numpy.zeros(rows.shape[0], dtype=numpy.int64))
    with pytest.raises(GolfError, match="^f: mlp.fc: stored row order is not a permutation of 16 rows"):
        decode_artifact(encode_artifact(one, groups, {}, transforms="simsort+none"), "f")


def test_auto_layout_keeps_the_smallest_candidate():
    g = torch.Generator().manual_seed(1)
    # Columns of very different scale: transposed, each column's run is uniform, which a context coder exploits.
    w = torch.randn(256, 32, generator=g) * torch.logspace(-3, 0, 32)
    entries = {"w": quantize_rtn(w, 6, None)}
    sizes = {t: len(encode_artifact(entries, {"w": "m"}, {}, "brotli", t)) for t in golf.artifact.AUTO_LAYOUTS}
    auto = encode_artifact(entries, {"w": "m"}, {}, "brotli", "auto")
    assert len(auto) == min(sizes.values()) and sizes["transpose"] < sizes["none"]
    assert_same(entries["w"], decode_artifact(auto, "f")[0]["w"])


def test_per_group_settings_parse_and_bad_ones_are_one_line():
    from golf.artifact import check_symbol_settings, per_group

    groups = ["embed", "attn", "mlp"]
    assert per_group("embed=zpaq,ctx", groups, "codecs") == {"embed": "zpaq", "attn": "ctx", "mlp": "ctx"}
    assert per_group("brotli", groups, "codecs") == {g: "brotli" for g in groups}
    assert per_group("mlp=simsort+transpose, embed=none,auto", groups, "transforms") == {
        "embed": "none", "attn": "auto", "mlp": "simsort+transpose"}
    for bad, match in (("embd=zpaq,ctx", "no group 'embd'"), ("ans,ctx", "two choices"), ("embed=,ctx", "is not"),
                       ("embed=zpaq", "no entry for group")):
        with pytest.raises(GolfError, match=match):
            per_group(bad, groups, "codecs")
    check_symbol_settings("embed=zpaq,ctx", "embed=simsort+transpose,auto", groups)
    with pytest.raises(GolfError, match="CODEC='lz4'"):
        check_symbol_settings("embed=lz4,ctx", "auto", groups)
    with pytest.raises(GolfError, match="SYMBOL_LAYOUT row order='sorted': not available here"):
        check_symbol_settings("ctx", "embed=sorted+none,auto", groups)
    # The per-group string reaches the artifact as it is written: each group's blocks carry their own codec.
    entries, groups_of = sample_entries()
    blob = encode_artifact(entries, groups_of, {}, codecs="embed=zpaq,ctx", transforms="embed=simsort+transpose,none")
    blocks = read_header(blob, "x")[0]["blocks"]
    assert blocks["embed/q"]["codec"] == "zpaq" and blocks["attn/q"]["codec"] == "ctx"
    back = decode_artifact(blob, "x")[0]
    for name in entries:
        assert_same(entries[name], back[name])
