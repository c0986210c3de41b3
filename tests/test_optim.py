import dataclasses

import torch

from golf.optim import (Lion, Muon, MuonEqR, WeightEMA, build_optimizers, lr_multiplier, newton_schulz,
                        polar_express)


def test_newton_schulz_singular_values_near_one():
    torch.manual_seed(0)
    for shape in [(32, 96), (96, 32), (64, 160)]:  # rectangular Gaussians are well-conditioned
        s = torch.linalg.svdvals(newton_schulz(torch.randn(shape), steps=5))
        # The quintic iteration is tuned for speed, not exactness: singular values land in ~[0.7, 1.2].
        assert s.min() > 0.6 and s.max() < 1.25, (shape, s.min(), s.max())


def test_muon_step_moves_by_lr_times_orthogonal_update():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.zeros(16, 16))
    opt = Muon([p], lr=0.1, momentum=0.0, ns_steps=5, weight_decay=0.0)
    p.grad = torch.randn(16, 16)
    opt.step()
    assert torch.allclose(p.detach(), -0.1 * newton_schulz(p.grad, 5), atol=1e-6)


def test_time_based_warmdown():
    assert lr_multiplier(100, 10.0, 100.0, 0, 0.5) == 1.0
    assert abs(lr_multiplier(100, 75.0, 100.0, 0, 0.5) - 0.5) < 1e-9
    assert lr_multiplier(100, 100.0, 100.0, 0, 0.5) == 0.0
    assert lr_multiplier(0, 0.0, 100.0, 4, 0.5) == 0.25


def test_polar_express_singular_values_near_one_and_tighter_than_newton_schulz():
    torch.manual_seed(0)
    for shape in [(32, 96), (96, 32), (64, 160)]:
        g = torch.randn(shape)
        s5 = torch.linalg.svdvals(polar_express(g, steps=5))
        assert s5.min() > 0.8 and s5.max() < 1.2, (shape, s5.min(), s5.max())
        s10 = torch.linalg.svdvals(polar_express(g, steps=10))  # the optimal polynomials converge; quintic NS does not
        assert (s10 - 1).abs().max() < 0.02, (shape, s10.min(), s10.max())


def test_muoneq_r_equalises_row_rms_before_orthogonalising():
    torch.manual_seed(0)
    seen = []

    def spy(update, steps):
        seen.append(update.clone())
        return newton_schulz(update, steps)

    p = torch.nn.Parameter(torch.zeros(8, 24))
    opt = MuonEqR([p], lr=0.1, momentum=0.95, ns_steps=5, weight_decay=0.0, orthogonalize=spy)
    p.grad = torch.randn(8, 24) * torch.logspace(-2, 2, 8)[:, None]  # rows 4 decades apart
    opt.step()
    rms = seen[0].square().mean(dim=1).sqrt()
    assert torch.allclose(rms, torch.ones(8), atol=1e-4)
    plain = Muon([torch.nn.Parameter(torch.zeros(8, 24))], lr=0.1, momentum=0.95, ns_steps=5, weight_decay=0.0,
                 orthogonalize=spy)
    plain.param_groups[0]["params"][0].grad = p.grad.clone()
    plain.step()
    assert seen[1].square().mean(dim=1).sqrt().max() > 10  # plain Muon keeps the row scales


def test_muon_weight_decay_is_decoupled():
    p = torch.nn.Parameter(torch.ones(4, 4))
    opt = MuonEqR([p], lr=0.1, momentum=0.0, ns_steps=5, weight_decay=0.5)
    p.grad = torch.zeros(4, 4)  # zero gradient: only decay moves the weights
    opt.step()
    assert torch.allclose(p.detach(), torch.full((4, 4), 0.95))


def test_lion_moves_every_coordinate_by_exactly_lr():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(50))
    start = p.detach().clone()
    opt = Lion([dict(params=[p], lr=0.01, weight_decay=0.0)])
    for _ in range(3):
        p.grad = torch.randn(50)
        before = p.detach().clone()
        opt.step()
        assert torch.allclose((p.detach() - before).abs(), torch.full((50,), 0.01))
    # First step: momentum is zero, so the step is -lr * sign(grad) of that step's gradient alone.
    q = torch.nn.Parameter(start.clone())
    g = torch.randn(50)
    q.grad = g
    Lion([dict(params=[q], lr=0.01, weight_decay=0.0)]).step()
    assert torch.equal(q.detach(), start - 0.01 * g.sign())


def test_weight_ema_math_and_export():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = WeightEMA(model, decay=0.9)
    for value in (2.0, 4.0):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update()
    # ema = 0.9 * (0.9 * 1 + 0.1 * 2) + 0.1 * 4 = 1.39
    assert torch.allclose(ema.shadow[0], torch.full((1, 2), 1.39))
    ema.copy_to_model()
    assert torch.allclose(model.weight.detach(), torch.full((1, 2), 1.39))


def test_build_optimizers_follows_the_slots():
    from golf.model.gpt import GPT
    from golf.params import assign_rules, param_rules
    from tests.test_model import TINY

    model = GPT(TINY)
    rules = assign_rules(model.named_parameters(), param_rules(TINY))
    assert [type(o) for o in build_optimizers(model, rules, TINY)] == [MuonEqR, torch.optim.AdamW]
    cfg = dataclasses.replace(TINY, matrix_optimizer="muon", orthogonalizer="polar_express",
                              embed_scalar_optimizer="lion")
    muon, lion = build_optimizers(model, rules, cfg)
    assert type(muon) is Muon and muon.orthogonalize is polar_express and type(lion) is Lion
