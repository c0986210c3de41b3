"""golf/equiv/quant.py against the 1.0611 record, the prior recipe, and copies of the record altered one piece at a
time. Each check quantises ~70 tensors twice (~20 s on one core): slow."""

import shutil

import pytest
import torch

from golf.equiv.quant import check
from golf.equiv.record import load_record
from golf.recipes import RECIPES
from tests.equiv_record import altered_copy, needs_record, record_dir, one_thread  # noqa: F401 (autouse: one intra-op thread)

pytestmark = [needs_record, pytest.mark.slow]



def statuses(rec, recipe="pr1855") -> dict[str, str]:
    return {p.name: p.status for p in check(rec, RECIPES[recipe])}


def altered(tmp_path, old: str, new: str):
    path = altered_copy(tmp_path, old, new)
    shutil.copyfile(record_dir() / "train_seed42.log", tmp_path / "train_seed42.log")
    return load_record(path)


def test_default_quantiser_equals_the_records_and_the_prior_does_not():
    rec = load_record(record_dir() / "train_gpt.py")
    assert set(statuses(rec).values()) == {"PASS"}
    prior = statuses(rec, "prior")
    # clips 12.0 / 15.0, fp16 gate, calibration within documents, fp32 embedding (prior's embed_bf16=False)
    for name in ("quant.gptq.mlp", "quant.gptq.embed", "quant.gate", "quant.hessians", "quant.dequantised"):
        assert prior[name] == "FAIL", name
    assert prior["quant.gptq.attn"] == "PASS"  # attention's clip 13.0 never changed


@pytest.mark.parametrize("old, new, piece", [
    ("cs = h.mlp_clip_sigmas", "cs = h.mlp_clip_sigmas + 0.5", "quant.gptq.mlp"),
    ("top = sorted(lqer_cands.items(), key=lambda kv: -kv[1][1])", "top = sorted(lqer_cands.items(), "
     "key=lambda kv: kv[1][1])", "quant.lqer.picks"),
    ("s = (row_max / 127.0).to(torch.float16)", "s = (row_max / 126.0).to(torch.float16)", "quant.gate"),
])
def test_an_altered_record_fails_that_piece(tmp_path, old, new, piece):
    assert statuses(altered(tmp_path, old, new))[piece] == "FAIL"
