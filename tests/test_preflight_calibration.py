"""Preflight's predictors held to what the 1.0611 record measured (issue 24): on the record's configuration each
predicted figure is within 5% of its logs (train_seed{0,42,1234}.log), the artifact within 1% by the record-relative
prediction. Facts: golf/budget.py (RECORD_*, PHASED_TTT_RECORD, CALIBRATION_RECORD), golf/size_predict.py."""

import dataclasses
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from golf import budget as facts
from golf.recipes import PR1855_VALUES
from golf.size_predict import RECORD_MODEL_BYTES, RECORD_QUANT, record_dir
from tools import preflight as pf

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.05
CASEOPS = "./data/datasets/fineweb10B_sp8192_lossless_caps_caseops_v1_reserved"
# ms/step of each seed: `stopping_early: wallclock_cap train_time: 599433ms step: 4932` (seed 0), 599592 / 4945 (42),
# 599544 / 4917 (1234).
RECORD_MS_PER_STEP = (599433 / 4932, 599592 / 4945, 599544 / 4917)


@pytest.fixture(scope="module")
def shipped():
    """(the shipped file as preflight loads it, the record's Config in it, an attention backend)."""
    ns = pf.load_training_file(ROOT / "train_gpt.py")
    # The shipped default is PR #2101's stack; the 1.0611 record's is recipe pr1855 (PR1855_VALUES). The record's
    # values of every field these predictors read (its log header): quantiser, phased per-document TTT on CaseOps
    # val, GPTQ calibration on 16 batches of train_batch_tokens (R:2133).
    cfg = dataclasses.replace(ns.from_env({}), **facts.RECORD_SHAPE, **{**RECORD_QUANT, **PR1855_VALUES},
                              ttt_enabled=True, ttt_mode="doc", gptq_calib_batches=16, gptq_calib_tokens=786432,
                              data_path=CASEOPS)
    return ns, cfg, ns.select_attention("cpu", "sdpa")[1]


def figure(result: dict) -> float:
    return float(re.match(r"[\d.]+", result["figure"]).group())


def test_train_ms_per_step_within_5_percent_of_each_seed(shipped):
    ns, cfg, attention = shipped
    ms = figure(pf.check_train(ns, cfg, attention, {}))
    for logged in RECORD_MS_PER_STEP:
        assert abs(ms / logged - 1) <= TOLERANCE, (ms, logged)


def test_gptq_reserve_within_5_percent_of_the_logged_hessians(shipped):
    ns, cfg, attention = shipped
    seconds = figure(pf.check_reserve(ns, cfg, attention, 8, {})[0])
    assert abs(seconds / facts.CALIBRATION_RECORD["seconds"] - 1) <= TOLERANCE, seconds


def test_peak_memory_within_5_percent_of_the_logged_peak(shipped):
    ns, cfg, attention = shipped
    torch.manual_seed(0)
    model = ns.GPT(cfg, attention)
    for p in model.parameters():  # the optimisers keep state only for parameters with a gradient
        p.grad = torch.zeros_like(p)
    result = pf.check_memory(ns, cfg, attention, 8, {"model": model})
    mib = figure(result) * 1e9 / 2**20
    assert abs(mib / facts.RECORD_PEAK_MEMORY_MIB - 1) <= TOLERANCE, result["detail"]


def test_gpu_kernel_stand_ins_are_undone(shipped):
    ns, _, _ = shipped
    before = (dict(ns.MLP_ACTIVATIONS), ns.softcap_cross_entropy, torch.nn.functional.rms_norm)
    with pf.gpu_kernels_saved(ns):
        assert ns.softcap_cross_entropy is not before[1] and torch.nn.functional.rms_norm is not before[2]
    assert (dict(ns.MLP_ACTIVATIONS), ns.softcap_cross_entropy, torch.nn.functional.rms_norm) == before


def test_val_documents_reproduce_the_logged_phases():
    # The document-length model (30 logged batches) against what the logs say the phases trained on: of the pd
    # documents scored, the gd in the shortest batches, in chunks of 32768 tokens (`tttg: c1/131` ...).
    rec = facts.PHASED_TTT_RECORD
    lengths = sorted(facts.record_val_doc_lengths(rec["val_tokens"] - 1), reverse=True)
    assert len(lengths) == rec["docs"] and sum(lengths) == rec["val_tokens"] - 1
    for pd, gd, chunks in zip(rec["phase_scored_docs"], rec["phase_docs"], rec["phase_chunks"]):
        tokens = sum(n + 1 for n in lengths[pd - gd : pd])
        assert abs(tokens / 32768 / chunks - 1) <= TOLERANCE, (gd, tokens / 32768, chunks)


def test_record_schedule_replay_scores_the_logged_documents_before_each_phase():
    # Which documents are scored when each phase starts depends on batch costs and the queue, not on the rates.
    rec = facts.PHASED_TTT_RECORD
    _, phases = pf.record_doc_ttt_schedule(facts.record_val_doc_lengths(rec["val_tokens"] - 1),
                                           lambda fwd, bwd: fwd + 3 * bwd)
    assert [pd for _, pd in phases] == list(rec["phase_scored_docs"])


def test_phased_ttt_eval_within_5_percent_of_the_logged_eval(shipped):
    ns, cfg, attention = shipped
    rec = facts.PHASED_TTT_RECORD
    lora_rate, phase_rate = pf.doc_ttt_rates(ns, cfg, attention)
    fwd_token, train_token = pf.record_token_flops(ns, cfg, attention)
    flops, phases = pf.record_doc_ttt_schedule(facts.record_val_doc_lengths(rec["val_tokens"] - 1),
                                               lambda fwd, bwd: fwd * fwd_token + bwd * train_token)
    phase_tokens = rec["phase_steps"] * rec["phase_rows_per_rank"] * rec["seq_len"]
    seconds = flops / lora_rate + phase_tokens * train_token / phase_rate
    mean = sum(rec["eval_seconds"]) / len(rec["eval_seconds"])
    assert abs(seconds / mean - 1) <= TOLERANCE, seconds
    assert min(rec["eval_seconds"]) * (1 - TOLERANCE) <= seconds <= max(rec["eval_seconds"]) * (1 + TOLERANCE)
    # The first phase waits for the rank holding the longest batch (30k-97k tokens): its start, predicted from the
    # rates, is within 10% of every seed's (`ttpp: phase:1/3 ... t:202.7s` / 209.3 / 207.7).
    assert all(abs(phases[0][0] / lora_rate / t - 1) <= 0.10 for t in (202.7, 209.3, 207.7)), phases[0][0] / lora_rate


def test_golf_eval_plan_on_the_record_config_within_5_percent(shipped):
    ns, cfg, attention = shipped
    lines = {r["check"]: r for r in pf.check_eval(ns, cfg, attention, 8, {})}
    ttt = figure(lines["eval.ttt"])
    mean = sum(facts.PHASED_TTT_RECORD["eval_seconds"]) / 3
    assert abs(ttt / mean - 1) <= TOLERANCE, ttt


def test_golf_eval_plan_on_pr2101s_config_within_5_percent_of_its_logs(shipped):
    # Out of sample: the rates come from the 1.0611 record alone; PR #2101 runs the same phased TTT at 2560-token
    # windows without Q/V adapters and logs 508.0 / 520.0 / 510.2 s.
    from golf.recipes import PR2101_SOURCES

    ns, cfg, attention = shipped
    pr2101 = dataclasses.replace(cfg, **{name: source.value for name, source in PR2101_SOURCES.items()})
    ttt = figure({r["check"]: r for r in pf.check_eval(ns, pr2101, attention, 8, {})}["eval.ttt"])
    logged = facts.PHASED_TTT_PR2101["eval_seconds"]
    assert abs(ttt / (sum(logged) / len(logged)) - 1) <= TOLERANCE, ttt


def test_record_clips_fit_with_20_kb_to_spare_by_the_record_relative_prediction(shipped):
    # Issue 24 part 4: at the record's Config (clips MLP 11.5 / embedding 14.0) the prediction is the logged
    # artifact x golf/record on the same symbols (this Config's bytes over the record settings' are one ratio), and
    # with its error and the shipped file's code it leaves >= 20 KB. Another shape gets no such prediction.
    import math

    from golf.size_predict import GOLF_OVER_RECORD, RECORD_RELATIVE_ERROR

    ns, cfg, _ = shipped
    predicted, how = pf.record_relative_bytes(ns, cfg, None, ({}, {}), 16_000_950)
    assert predicted == round(RECORD_MODEL_BYTES * GOLF_OVER_RECORD), how
    bound = math.ceil(predicted * (1 + RECORD_RELATIVE_ERROR)) + (ROOT / "train_gpt.py").stat().st_size
    assert pf.SIZE_LIMIT - bound >= 20_000, bound
    assert pf.record_relative_bytes(ns, dataclasses.replace(cfg, model_dim=640), None, ({}, {}), 1)[0] is None


def test_awq_lite_anchors_on_pr2101s_logged_artifact(shipped):
    # Gaussian rows put AWQ-lite's group where training does not: a Config with #2101's quantisation scales from
    # #2101's own logged artifact (15,944,405 B, its group in the embedding), not from the record's.
    from golf.size_predict import PR2101_ANCHOR, RECORD_ANCHOR, nearest_anchor

    ns, cfg, _ = shipped
    assert nearest_anchor(cfg) is RECORD_ANCHOR
    pr2101 = dataclasses.replace(cfg, awq_top_k=1)
    assert nearest_anchor(pr2101) is PR2101_ANCHOR and nearest_anchor(ns.from_env({})) is PR2101_ANCHOR
    predicted, how = pf.record_relative_bytes(ns, pr2101, None, ({}, {}), 16_000_950)
    assert predicted == round(15_944_405 * PR2101_ANCHOR.golf_over) and "PR #2101" in how, how
    assert max(PR2101_ANCHOR.seed_bytes) / min(PR2101_ANCHOR.seed_bytes) - 1 < 0.001  # its seeds: 0.07% apart


@pytest.mark.slow
@pytest.mark.skipif(record_dir() is None or shutil.which("lrzip") is None,
                    reason="needs the 1.0611 record's folder (GOLF_RECORD_DIR or shared/upstream) and lrzip")
@pytest.mark.skipif(os.environ.get("GOLF_HEAVY") != "1",
                    reason="GOLF_HEAVY=1: the record's serializer at record dims takes ~25 min on 2 cores, past the "
                           "suite's budget; `python -m golf.bench quant --vs-record` is the same measurement")
def test_record_relative_artifact_within_1_percent_of_the_logged_artifact():
    # golf's codec and the record's serializer on the same record-dims symbols at the record's settings (minutes:
    # lrzip -L 9 over 36 M symbols, the record's similarity sort of 8192 embedding rows): the record-relative
    # prediction for the record's own Config is the logged artifact x golf / record; and GOLF_OVER_RECORD, the
    # ratio preflight uses, is this measurement's.
    from golf.bench.quant import record_dims_entries, vs_record
    from golf.config import Config
    from golf.size_predict import GOLF_OVER_RECORD, record_serializer

    cfg = dataclasses.replace(Config(), **RECORD_QUANT)
    entries, groups = record_dims_entries(cfg, 0)
    total = vs_record(entries, groups, cfg, record_serializer())[-1]
    ratio = total["golf"] / total["record"]
    assert abs(RECORD_MODEL_BYTES * ratio / RECORD_MODEL_BYTES - 1) <= 0.01, total
    assert abs(ratio / GOLF_OVER_RECORD - 1) <= 0.001, (ratio, GOLF_OVER_RECORD)


@pytest.mark.slow
@pytest.mark.skipif(record_dir() is None or shutil.which("lrzip") is None,
                    reason="needs the 1.0611 record's folder (GOLF_RECORD_DIR or shared/upstream) and lrzip")
@pytest.mark.skipif(os.environ.get("GOLF_HEAVY") != "1",
                    reason="GOLF_HEAVY=1: the record's serializer at record dims takes ~25 min on 2 cores, past the "
                           "suite's budget; `AWQ_TOP_K=1 python -m golf.bench quant --vs-record` is the same "
                           "measurement")
def test_pr2101_anchor_ratio_and_the_awq_group_priced_from_the_record_within_1_percent():
    # The same measurement with AWQ-lite's group in the embedding (#2101's placement): golf / record is
    # GOLF_OVER_PR2101; and the record's serializer's bytes over its bytes without the group (RECORD_GAUSSIAN_BYTES)
    # scale the 1.0611 record's logged artifact to within 1% of #2101's logged one (out of sample: 0.02% measured).
    from golf.bench.quant import record_dims_entries, vs_record
    from golf.config import Config
    from golf.size_predict import GOLF_OVER_PR2101, PR2101_ANCHOR, RECORD_GAUSSIAN_BYTES, record_serializer

    cfg = dataclasses.replace(Config(), **PR2101_ANCHOR.quant)
    entries, groups = record_dims_entries(cfg, 0)
    total = vs_record(entries, groups, cfg, record_serializer())[-1]
    assert abs(total["golf"] / total["record"] / GOLF_OVER_PR2101 - 1) <= 0.001, total
    scaled = RECORD_MODEL_BYTES * total["record"] / RECORD_GAUSSIAN_BYTES
    assert abs(scaled / PR2101_ANCHOR.model_bytes - 1) <= 0.01, scaled
