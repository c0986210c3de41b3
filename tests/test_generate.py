"""sample_next's distribution: top-k and top-p never leave their set, temperature 0 is argmax,
temperature 1 reproduces softmax(logits); and generation reads the model's softcapped head."""

import dataclasses

import pytest
import torch

from golf.config import Config
from golf.generate import generate, next_token_logits, sample_next
from golf.model.gpt import GPT

DRAWS = 4000


def draw_counts(logits, n=DRAWS, seed=0, **kw) -> torch.Tensor:
    settings = dict(temperature=1.0, top_k=0, top_p=1.0) | kw
    g = torch.Generator().manual_seed(seed)
    counts = torch.zeros(logits.numel())
    for _ in range(n):
        counts[sample_next(logits, settings["temperature"], settings["top_k"], settings["top_p"], g)] += 1
    return counts


def test_temperature_one_matches_softmax_chi_square():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    expected = torch.softmax(logits, 0) * DRAWS
    counts = draw_counts(logits)
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 20.5  # chi-square, 5 degrees of freedom: p = 0.001
    # and it is not merely argmax or uniform: the low-probability tokens do appear
    assert counts[4] > 0 and counts[0] < 0.6 * DRAWS


@pytest.mark.parametrize("temperature", [0.0, 1e-6])
def test_temperature_to_zero_is_argmax(temperature):
    logits = torch.tensor([0.3, 2.5, 2.4, -1.0])
    assert (draw_counts(logits, n=200, temperature=temperature) == torch.tensor([0, 200, 0, 0])).all()


def test_top_k_never_leaves_the_k_most_likely():
    logits = torch.tensor([0.0, 3.0, -2.0, 2.9, 2.8, 1.0, 0.5])  # top-3: ids 1, 3, 4
    counts = draw_counts(logits, n=1500, top_k=3, temperature=5.0)  # hot: outside tokens would show
    assert set(counts.nonzero().flatten().tolist()) == {1, 3, 4}


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([0.05, 0.4, 0.25, 0.2, 0.1])  # sorted: 0.4, 0.25, 0.2 | 0.1, 0.05
    logits = probs.log()
    counts = draw_counts(logits, n=1500, top_p=0.8)  # 0.4+0.25 = 0.65 < 0.8 <= 0.85: ids 1, 2, 3
    assert set(counts.nonzero().flatten().tolist()) == {1, 2, 3}
    renormalised = torch.tensor([0.4, 0.25, 0.2]) / 0.85 * 1500
    assert torch.allclose(counts[[1, 2, 3]], renormalised, rtol=0.2)
    # a tiny p still keeps the most likely token (and only it)
    assert set(draw_counts(logits, n=100, top_p=1e-3).nonzero().flatten().tolist()) == {1}


def test_top_k_then_top_p_on_the_kept_mass():
    logits = torch.tensor([0.05, 0.4, 0.25, 0.2, 0.1]).log()
    counts = draw_counts(logits, n=800, top_k=2, top_p=0.5)  # top-2 renormalised: 0.615, 0.385 -> id 1 alone
    assert set(counts.nonzero().flatten().tolist()) == {1}


def tiny_model(**fields):
    cfg = dataclasses.replace(Config(), vocab_size=64, model_dim=32, num_heads=2, num_kv_heads=1, num_layers=1,
                              loop_start=0, loop_end=0, lane_layers=0, rope_dims=8, **fields)
    torch.manual_seed(0)
    return GPT(cfg).eval()


def test_next_token_logits_are_the_softcapped_head_over_the_window():
    model = tiny_model(logit_softcap=2.0)
    with torch.no_grad():
        model.tok_emb.weight.mul_(400.0)  # raw logits far beyond the cap
    ids = list(range(1, 40))
    z = next_token_logits(model, ids, window=16, device=torch.device("cpu"))
    raw = model.logits(torch.tensor([ids[-16:]]))[0, -1]
    assert raw.abs().max() > 2.0 and z.abs().max() <= 2.0
    assert torch.allclose(z, 2.0 * torch.tanh(raw / 2.0), atol=1e-6)


def test_generate_stops_at_a_stop_id_and_is_seeded():
    model = tiny_model()
    device = torch.device("cpu")
    runs = [generate(model, [1, 5, 6], 30, 8, device, 1.0, 0, 1.0, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 30
    first = runs[0][4]
    stopped = generate(model, [1, 5, 6], 30, 8, device, 1.0, 0, 1.0, torch.Generator().manual_seed(3),
                       stop_ids=(first,))
    assert stopped[-1] == first and len(stopped) <= 5
