import torch

from golf.optim import Muon, lr_multiplier, newton_schulz


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
