"""size_check on artifacts that are not ours: upstream's compressed torch.save state dicts, made here with
torch.save + each codec (upstream's records folders ship no artifacts)."""

import collections
import io
import json
import lzma
import zlib

import brotli
import pytest
import torch
import zstandard

from golf.upstream_artifact import unshuffle
from tools.size_check import main


def shuffle(data: bytes, stride: int = 2) -> bytes:
    """Upstream's byte shuffle, written from its description: b"BSHF" + stride, then every stride-th byte."""
    return b"BSHF" + stride.to_bytes(2, "little") + b"".join(data[s::stride] for s in range(stride))


def state_bytes() -> bytes:
    g = torch.Generator().manual_seed(0)
    quant = {"blocks.0.attn.c_q.weight": torch.randint(-31, 32, (64, 32), dtype=torch.int8, generator=g),
             "blocks.0.attn.c_q.weight.scale": torch.rand(64, generator=g).half(),
             "tok_emb.weight": torch.randn(128, 32, generator=g).half()}
    buf = io.BytesIO()
    torch.save({"w": quant, "m": {"blocks.0.attn.c_q.weight": "int6", "passthrough": ["tok_emb.weight"]}}, buf)
    return buf.getvalue()


CODECS = {"final_model.int8.ptz": lambda raw: zlib.compress(raw, 9),
          "final_model.int6.ptz": lambda raw: lzma.compress(raw, format=lzma.FORMAT_ALONE, preset=9),
          "model.xz.ptz": lambda raw: lzma.compress(raw),
          "model.zst.ptz": lambda raw: zstandard.ZstdCompressor(level=22).compress(raw),
          "model.br.ptz": lambda raw: brotli.compress(shuffle(raw), quality=5)}


@pytest.mark.parametrize("name", CODECS)
def test_each_codec_gives_the_tensor_breakdown(tmp_path, capsys, name):
    raw = state_bytes()
    path = tmp_path / name
    path.write_bytes(CODECS[name](raw))
    code = tmp_path / "train_gpt.py"
    code.write_text("print('x')\n" * 100)
    assert main([str(path), "--code", str(code), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["artifact_bytes"] == path.stat().st_size and out["code_bytes"] == 1100  # exact file bytes
    assert out["total_bytes"] == path.stat().st_size + 1100 and out["fits"]
    assert out["torch_bytes"] == len(raw) and out["shuffle_stride"] == (2 if name == "model.br.ptz" else None)
    tensors = {t["name"]: (t["dtype"], t["shape"], t["params"], t["bytes"]) for t in out["tensors"]}
    assert tensors == {"w.blocks.0.attn.c_q.weight": ("int8", [64, 32], 2048, 2048),
                       "w.blocks.0.attn.c_q.weight.scale": ("float16", [64], 64, 128),
                       "w.tok_emb.weight": ("float16", [128, 32], 4096, 8192)}
    assert out["by_dtype"] == {"int8": {"tensors": 1, "params": 2048, "bytes": 2048},
                               "float16": {"tensors": 2, "params": 4160, "bytes": 8320}}
    assert main([str(path), "--limit", "100"]) == 1  # over a (tiny) limit: exit 1, the table still printed
    table = capsys.readouterr().out
    assert "w.tok_emb.weight" in table and "OVER LIMIT" in table


def test_unshuffle_inverts_any_stride():
    data = bytes(range(256)) * 3 + b"tail"
    for stride in (1, 2, 3, 4, 7):
        assert unshuffle(shuffle(data, stride)) == (data, stride)
    assert unshuffle(data) == (data, None)


def test_unreadable_artifacts_get_one_line_and_exit_2(tmp_path, capsys):
    noise = tmp_path / "noise.ptz"
    noise.write_bytes(bytes(range(7, 250)) * 4)
    # a pickle that needs a class to be built: weights_only refuses it, nothing in it runs
    buf = io.BytesIO()
    torch.save({"w": collections.Counter(a=1)}, buf)
    pickled = tmp_path / "final_model.int8.ptz"
    pickled.write_bytes(zlib.compress(buf.getvalue()))
    for path in (noise, pickled, tmp_path / "absent.ptz"):
        assert main([str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"size_check: {path}: ") and "Traceback" not in err
