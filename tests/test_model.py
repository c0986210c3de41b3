import dataclasses

import torch

from golf.config import Config, smoke
from golf.model.attention import apply_partial_rope, rope_tables, sdpa_attention
from golf.model.blocks import BLOCKS
from golf.model.gpt import GPT, token_nll
from golf.params import assign_rules, param_rules

TINY = dataclasses.replace(smoke(Config()), vocab_size=64, model_dim=32, num_heads=4, num_kv_heads=2, num_layers=2,
                           rope_dims=4, train_seq_len=16, sw_seq_len=16)


def test_fresh_blocks_are_identity_on_the_residual():
    # Zero-initialised output projections and x0-mix (1, 0): a new block passes x through unchanged.
    for name, cls in BLOCKS.items():
        block = cls(TINY, sdpa_attention)
        x, x0 = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
        assert torch.equal(block(x, x0), x), name


def test_model_is_causal():
    torch.manual_seed(0)
    model = GPT(TINY)
    for p in model.parameters():  # make every branch live
        torch.nn.init.normal_(p, std=0.2)
    idx = torch.randint(0, 64, (1, 16))
    changed = idx.clone()
    changed[0, 10] = (idx[0, 10] + 1) % 64
    a, b = model.logits(idx), model.logits(changed)
    assert torch.equal(a[0, :10], b[0, :10])
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_partial_rope_rotates_only_leading_dims_and_keeps_norm():
    cos, sin = rope_tables(8, 4, 10000.0)
    x = torch.randn(1, 2, 8, 16)
    y = apply_partial_rope(x, cos, sin)
    assert torch.equal(y[..., 4:], x[..., 4:])
    assert torch.allclose(y[..., :4].norm(dim=-1), x[..., :4].norm(dim=-1), atol=1e-5)
    assert torch.equal(y[:, :, 0], x[:, :, 0])  # position 0: angle 0


def test_loss_starts_near_uniform_and_softcap_bounds_loss():
    torch.manual_seed(0)
    model = GPT(TINY)
    idx, targets = torch.randint(0, 64, (4, 16)), torch.randint(0, 64, (4, 16))
    loss = model(idx, targets)
    assert abs(loss.item() - torch.log(torch.tensor(64.0)).item()) < 0.1
    assert model.token_losses(idx, targets).shape == (4, 16)
    # Softcap 30 bounds every logit: a huge logit gap costs at most 2 * 30 nats.
    huge = torch.tensor([[1e4, -1e4]])
    assert token_nll(huge, torch.tensor([1]), 30.0).item() <= 60.0 + 1e-3


def test_every_parameter_matches_exactly_one_policy_row():
    for block in BLOCKS:
        cfg = dataclasses.replace(TINY, block=block)
        rules = assign_rules(GPT(cfg).named_parameters(), param_rules(cfg))
        assert {r.optim for r in rules.values()} == {"muon", "adam"}
        assert all(r.optim == "muon" for n, r in rules.items() if n.endswith(("q.weight", "fc.weight")))
