import math

import pytest
import torch

from dlm.diffusion.schedules import Cosine, LogLinear, get_schedule, sample_t


@pytest.mark.parametrize("sched", [LogLinear(1e-3), Cosine(1e-3)])
def test_endpoints_and_derivative(sched):
    t = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
    a = sched.alpha(t)
    assert a[0].item() == pytest.approx(1.0)
    assert a[-1].item() == pytest.approx(1e-3)
    assert torch.all(a[1:] < a[:-1])  # strictly decreasing
    h = 1e-6
    tt = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    fd = (sched.alpha(tt + h) - sched.alpha(tt - h)) / (2 * h)
    assert torch.allclose(sched.dalpha(tt), fd, atol=1e-6)
    assert torch.allclose(sched.sigma(tt), -torch.log(sched.alpha(tt)))


def test_mdlm_weights_closed_forms():
    t = torch.linspace(0.05, 1.0, 20, dtype=torch.float64)
    ll = LogLinear(1e-3)  # -alpha'/(1-alpha) = 1/t exactly (MDLM Sec. 3.4)
    assert torch.allclose(-ll.dalpha(t) / (1 - ll.alpha(t)), 1 / t)
    cos = Cosine(1e-3)  # (pi/2) cot(pi t / 4), independent of eps
    assert torch.allclose(-cos.dalpha(t) / (1 - cos.alpha(t)), math.pi / 2 / torch.tan(math.pi * t / 4))


def test_low_discrepancy_sampler_strata():
    g = torch.Generator().manual_seed(0)
    n, eps = 64, 1e-3
    t = sample_t(n, eps, antithetic=True, generator=g)
    u = (t - eps) / (1 - eps)
    # exactly one draw per stratum [i/n, (i+1)/n)
    assert sorted((u * n).floor().long().tolist()) == list(range(n))
    assert t.min() >= eps and t.max() <= 1.0


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown noise schedule"):
        get_schedule("linear-ish")
