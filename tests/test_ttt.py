import dataclasses
import time

import pytest
import torch
import torch.multiprocessing as mp

from golf.evaluate import eval_bpb
from golf.tokenizer import SP_BOS_ID, build_byte_luts, decoded_byte_count, load_tokenizer
from golf.ttt import TTT_TARGETS, eval_plan_lines, score_first_ttt, ttt_chunk_bounds, ttt_model
from tests.leaky_ttt import leaky_ttt
from tests.tiny_eval import TINY_EVAL, tiny_model, ttt_rank_worker, val_stream


@pytest.fixture(scope="module")
def sp(sample_tokenizer):
    return load_tokenizer(sample_tokenizer)


@pytest.fixture(scope="module")
def luts(sp):
    return build_byte_luts(sp, TINY_EVAL.vocab_size)


@pytest.fixture(scope="module")
def val(sp, sample_docs):
    return val_stream(sp, sample_docs[:4])  # 4 documents, ~590 tokens: ~9 chunks of 64


def per_target(ttt_fn, model, val, luts, cfg):
    losses = torch.zeros(val.numel() - 1)
    result = ttt_fn(model, val, luts, cfg, target_losses=losses)
    return result, losses


@pytest.mark.parametrize("params", list(TTT_TARGETS))
def test_adapted_model_starts_exactly_at_the_artifact_model(params, val):
    model = tiny_model()
    adapted, trainable = ttt_model(model, dataclasses.replace(TINY_EVAL, ttt_params=params))
    x = val[:64].view(2, 32)
    assert torch.equal(adapted.token_losses(x, x), model.token_losses(x, x))
    assert trainable and all(p.requires_grad for p in trainable)
    assert {id(p) for p in adapted.parameters() if p.requires_grad} == {id(p) for p in trainable}
    if params == "lora":  # A and B on q, k, v, attn.proj, fc, mlp.proj of each block, nothing else
        assert len(trainable) == 2 * 6 * TINY_EVAL.num_layers


def test_ttt_covers_every_target_once_and_counts_decoded_bytes(sp, val, luts):
    result, losses = per_target(score_first_ttt, tiny_model(), val, luts, TINY_EVAL)
    assert result.tokens == val.numel() - 1
    assert result.bytes == decoded_byte_count(sp, val.tolist())
    assert (losses > 0).all()


def test_ttt_without_learning_equals_sliding_window_eval(val, luts):
    # Chunks cut windows but keep each target's window: with lr 0 the scores are those of plain eval.
    cfg = dataclasses.replace(TINY_EVAL, ttt_lr=0.0)
    model = tiny_model()
    ttt, ttt_losses = per_target(score_first_ttt, model, val, luts, cfg)
    plain_losses = torch.zeros_like(ttt_losses)
    plain = eval_bpb(model, val, luts, cfg.sw_seq_len, cfg.sw_stride, cfg.val_batch_tokens, target_losses=plain_losses)
    assert torch.allclose(ttt_losses, plain_losses, atol=1e-5)
    assert (ttt.tokens, ttt.bytes) == (plain.tokens, plain.bytes)


def test_stream_guard_stops_adapting_when_the_deadline_is_at_risk_and_keeps_scoring(val, luts):
    # A deadline already passed: the guard stops before the first update, so every target is still scored, by
    # the unadapted model (lr 0's scores); with time to spare the same run adapts and scores differently.
    model, cfg, lines = tiny_model(), TINY_EVAL, []
    frozen = torch.zeros(val.numel() - 1)
    score_first_ttt(model, val, luts, dataclasses.replace(cfg, ttt_lr=0.0), target_losses=frozen)
    guarded = torch.zeros_like(frozen)
    result = score_first_ttt(model, val, luts, cfg, target_losses=guarded, deadline=time.perf_counter() - 1,
                             log=lines.append)
    assert result.tokens == val.numel() - 1 and torch.equal(guarded, frozen)
    assert len(lines) == 1 and lines[0].startswith("ttt_guard: stream TTT stopped adapting after chunk 1/")
    free = torch.zeros_like(frozen)
    score_first_ttt(model, val, luts, cfg, target_losses=free, deadline=time.perf_counter() + 3600, log=lines.append)
    assert len(lines) == 1 and not torch.equal(free, frozen)


def test_ttt_learns_a_repeated_document(luts):
    # The same 64-token text over and over: adapting on what was scored must help score what follows.
    val = torch.randint(4, 1024, (64,), generator=torch.Generator().manual_seed(1)).repeat(8)
    model = tiny_model()
    plain = eval_bpb(model, val, luts, 32, 8, 256)
    for params in TTT_TARGETS:
        ttt = score_first_ttt(model, val, luts, dataclasses.replace(TINY_EVAL, ttt_params=params, ttt_steps=4))
        assert ttt.val_loss < plain.val_loss - 0.1, params


def perturbed(val, t):
    changed = val.clone()
    changed[t] = 5 if val[t] != 5 else 6
    return changed


# Token t is perturbed; targets j < t - 1 (tokens 1..t-1) must score bit for bit the same.
@pytest.mark.parametrize("params", ["lora", "mlp_proj", "off"])
def test_scores_before_a_perturbed_token_do_not_change(params, val, luts):
    cfg = dataclasses.replace(TINY_EVAL, ttt_params="lora" if params == "off" else params)
    model = tiny_model()

    def losses_of(tokens):
        out = torch.zeros(tokens.numel() - 1)
        if params == "off":
            eval_bpb(model, tokens, luts, cfg.sw_seq_len, cfg.sw_stride, cfg.val_batch_tokens, target_losses=out)
        else:
            score_first_ttt(model, tokens, luts, cfg, target_losses=out)
        return out

    for t in (100, 301):  # mid-chunk positions (chunks of 64 targets)
        a, b = losses_of(val), losses_of(perturbed(val, t))
        assert torch.equal(a[: t - 1], b[: t - 1]), (params, t)
        assert not torch.equal(a[t - 1 :], b[t - 1 :])  # the perturbation does reach later scores


def test_a_ttt_that_learns_before_scoring_fails_the_perturbation_check(val, luts):
    model, t = tiny_model(), 301
    _, a = per_target(leaky_ttt, model, val, luts, TINY_EVAL)
    _, b = per_target(leaky_ttt, model, perturbed(val, t), luts, TINY_EVAL)
    assert not torch.equal(a[: t - 1], b[: t - 1])
    first_changed = (a != b).nonzero().min().item()
    assert first_changed < t - 1 and first_changed >= 256  # it leaks inside t's chunk (targets 256..319)


def test_chunk_bounds_and_resets_per_document():
    val = torch.tensor([SP_BOS_ID, 7, 8, 9, 10, SP_BOS_ID, 11, 12, SP_BOS_ID, 13, 14])  # 10 targets
    assert ttt_chunk_bounds(val, 3, False) == ([0, 3, 6, 9, 10], [False] * 4)
    # Documents start at targets 5 and 8 (their BOS is the input); chunks restart at each.
    assert ttt_chunk_bounds(val, 3, True) == ([0, 3, 5, 8, 10], [True, False, True, True])


def test_reset_per_doc_adapts_within_documents_only(val, luts):
    cfg = dataclasses.replace(TINY_EVAL, ttt_reset_per_doc=True)
    model = tiny_model()
    _, reset = per_target(score_first_ttt, model, val, luts, cfg)
    _, carried = per_target(score_first_ttt, model, val, luts, TINY_EVAL)
    frozen = torch.zeros_like(reset)
    eval_bpb(model, val, luts, 32, 8, 256, target_losses=frozen)
    second_doc = (val[1:] == SP_BOS_ID).nonzero()[0].item() + 1  # its first target
    # The first chunk of each document is scored by the unadapted model after a reset.
    assert torch.allclose(reset[second_doc : second_doc + 64], frozen[second_doc : second_doc + 64], atol=1e-5)
    assert not torch.allclose(carried[second_doc : second_doc + 64], frozen[second_doc : second_doc + 64], atol=1e-5)


def test_eval_plan_lines_name_windows_chunks_and_budget(val):
    cfg = dataclasses.replace(TINY_EVAL, ttt_mode="stream", eval_context="sliding")
    lines = eval_plan_lines(tiny_model(), val, cfg, 1, torch.device("cpu"), None)
    windows = len(range(0, val.numel() - 1 - 32 + 8, 8))  # starts 0, 8, ... until a window reaches the end
    assert f"sliding windows 32/8: {windows})" in lines[0] and lines[0].startswith("eval_plan pass:prequant")
    assert f"{-(-(val.numel() - 1) // 64)} chunks of 64" in lines[2] and "pass:ttt claimed:1" in lines[2]
    assert lines[-1].startswith("eval_plan eval_phase_est:") and "budget:600s" in lines[-1]


@pytest.mark.slow
def test_two_gloo_ranks_share_one_stream_and_match_one_process(tmp_path, sample_tokenizer, sample_docs, luts, sp):
    # Ranks score different windows of each chunk, then take the same step on the all-reduced gradient.
    out = tmp_path / "rank0.pt"
    mp.spawn(ttt_rank_worker, args=(2, str(tmp_path / "init"), sample_tokenizer, sample_docs[:4], str(out)), nprocs=2)
    two = torch.load(out)
    val = val_stream(sp, sample_docs[:4])
    one, one_losses = per_target(score_first_ttt, tiny_model(), val, luts, TINY_EVAL)
    assert (two["ttt"]["tokens"], two["ttt"]["bytes"]) == (one.tokens, one.bytes)
    assert abs(two["ttt"]["val_loss"] - one.val_loss) < 1e-5
    assert torch.allclose(two["ttt_losses"], one_losses, atol=1e-4)  # gradient sums differ only in rounding
    plain_losses = torch.zeros_like(one_losses)
    plain = eval_bpb(tiny_model(), val, luts, 32, 8, 256, target_losses=plain_losses)
    assert torch.allclose(two["plain_losses"], plain_losses, atol=1e-6) and two["plain"]["tokens"] == plain.tokens
