"""Noise schedules alpha(t) for discrete diffusion and the low-discrepancy time sampler.

alpha_t is the probability that a token is still clean at time t (t = 0 data, t = 1 noise), as in
MDLM (Sahoo et al. 2024, arXiv 2406.07524, Sec. 3) and DUO (arXiv 2506.10892, Sec. 2):

    loglinear: alpha_t = 1 - (1 - eps) t                 (MDLM Table 8 / DUO Sec. 3)
    cosine:    alpha_t = eps + (1 - eps) cos(pi t / 2)   (MDLM's `cosine` noise)
    duo_cosine: alpha_t = 1 - sin(pi (1 - eps) t / 2)    (the DUO repository's `cosine`, its CIFAR-10 scripts)

Both keep alpha_1 = eps > 0 so that sigma_t = -log alpha_t stays finite; the NELBO weights
-alpha'_t / (1 - alpha_t) are 1/t (loglinear) and (pi/2) cot(pi t / 4) (cosine), independent of eps.
"""

from __future__ import annotations

import math

import torch


class Schedule:
    """alpha(t), its derivative and sigma(t) = -log alpha(t); t is a tensor in [0, 1]."""

    name = "base"

    def __init__(self, eps: float = 1e-3):
        if not 0.0 < eps < 1.0:
            raise ValueError(f"schedule eps must be in (0, 1), got {eps}")
        self.eps = eps

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.log(self.alpha(t))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps})"


class LogLinear(Schedule):
    """alpha_t = 1 - (1 - eps) t, i.e. sigma_t = -log(1 - (1 - eps) t) (MDLM eq. 10 family)."""

    name = "loglinear"

    def alpha(self, t):
        return 1.0 - (1.0 - self.eps) * t

    def dalpha(self, t):
        return torch.full_like(t, -(1.0 - self.eps))


class Cosine(Schedule):
    """alpha_t = eps + (1 - eps) cos(pi t / 2)."""

    name = "cosine"

    def alpha(self, t):
        return self.eps + (1.0 - self.eps) * torch.cos(0.5 * math.pi * t)

    def dalpha(self, t):
        return -(1.0 - self.eps) * 0.5 * math.pi * torch.sin(0.5 * math.pi * t)


class DuoCosine(Schedule):
    """The DUO repository's `cosine` noise (s-sahoo/duo trainer_base.Cosine, configs/noise/cosine.yaml; its
    CIFAR-10 scripts): with u = pi (1 - eps) t / 2,  alpha_t = 1 - cos(pi/2 - u) = 1 - sin(u), so alpha_0 = 1 and
    alpha_1 = 1 - cos(pi eps / 2) (~1.2e-6 for eps 1e-3). Not MDLM's `cosine`: alpha_{1/2} is 0.29 here, 0.71 there.

    For u > pi/4 alpha is computed as 2 sin^2(pi/4 - u/2) (the same number, without the cancellation of 1 - sin u
    near t = 1).
    The derivative is the exact -(1 - eps)(pi/2) cos(u); the original drops the chain factor (1 - eps) (its
    log-linear schedule keeps it), which scales its NELBO weight by 1/(1 - eps), +0.1% at eps 1e-3.
    NELBO weight -alpha'/(1 - alpha) = (1 - eps)(pi/2) cot(u).
    """

    name = "duo_cosine"

    def alpha(self, t):
        u = 0.5 * math.pi * (1.0 - self.eps) * t
        return torch.where(u < 0.25 * math.pi, 1.0 - torch.sin(u), 2.0 * torch.sin(0.25 * math.pi - 0.5 * u) ** 2)

    def dalpha(self, t):
        return -(1.0 - self.eps) * 0.5 * math.pi * torch.cos(0.5 * math.pi * (1.0 - self.eps) * t)


SCHEDULES = {cls.name: cls for cls in (LogLinear, Cosine, DuoCosine)}


def get_schedule(name: str, eps: float = 1e-3) -> Schedule:
    if name not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {name!r}; expected one of {sorted(SCHEDULES)}")
    return SCHEDULES[name](eps)


def sample_t(n: int, eps: float = 1e-3, antithetic: bool = True, generator: torch.Generator | None = None,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """Diffusion times for a batch of n sequences, in [eps, 1].

    With `antithetic` (MDLM's low-discrepancy sampler, Sec. 3.5 / Kingma et al. 2021) the i-th time
    is drawn from the stratum [i/n, (i+1)/n): u_i <- (u_i / n + i / n) mod 1; then t = (1 - eps) u + eps.
    """
    u = torch.rand(n, generator=generator, device=device)  # (n,)
    if antithetic:
        u = (u / n + torch.arange(n, device=device) / n) % 1.0
    return (1.0 - eps) * u + eps
