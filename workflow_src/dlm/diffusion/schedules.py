"""Noise schedules alpha(t) for discrete diffusion and the low-discrepancy time sampler.

alpha_t is the probability that a token is still clean at time t (t = 0 data, t = 1 noise), as in
MDLM (Sahoo et al. 2024, arXiv 2406.07524, Sec. 3) and DUO (arXiv 2506.10892, Sec. 2):

    loglinear: alpha_t = 1 - (1 - eps) t                 (MDLM Table 8 / DUO Sec. 3)
    cosine:    alpha_t = eps + (1 - eps) cos(pi t / 2)   (MDLM's `cosine` noise)

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


SCHEDULES = {cls.name: cls for cls in (LogLinear, Cosine)}


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
