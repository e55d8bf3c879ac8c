"""Shared sampling primitives: float64 categorical draws and nucleus filtering."""

from __future__ import annotations

import torch


def sample_categorical(weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one id per row from unnormalised non-negative weights (..., K) -> (...).

    Exponential race in float64: argmax_v w_v / E_v with E_v ~ Exp(1), equivalent to Gumbel-max.
    The noise is drawn in float64 directly: fp32 noise truncates the tail and silently lowers the
    sampling temperature (the fix of ReMDM, Wang et al. 2025, and Zheng et al. 2024).
    """
    w = weights.double()
    u = torch.rand(w.shape, dtype=torch.float64, device=w.device, generator=generator)
    e = -torch.log1p(-u)  # Exp(1); u < 1 so e is finite, and e = 0 only with probability 2^-53
    return (w / e).argmax(dim=-1)


def top_p_filter(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter (Holtzman et al. 2020) on probabilities (..., K): keep the smallest prefix of the
    sorted distribution whose cumulative mass is <= p (always the top entry), renormalise."""
    if p >= 1.0:
        return probs
    sorted_p, idx = probs.sort(dim=-1, descending=True)
    cum = sorted_p.cumsum(-1)
    keep = (cum - sorted_p) < p  # mass strictly before this entry is < p -> include it
    keep[..., 0] = True
    filtered = torch.zeros_like(probs).scatter(-1, idx, sorted_p * keep)
    return filtered / filtered.sum(-1, keepdim=True)


def time_grid(steps: int, t_min: float = 1e-5, device: torch.device | str = "cpu") -> torch.Tensor:
    """The papers' sampling grid linspace(1, t_min, steps + 1) (MDLM/DUO `generate_samples`)."""
    if steps < 1:
        raise ValueError(f"sampling steps must be >= 1, got {steps}")
    return torch.linspace(1.0, t_min, steps + 1, dtype=torch.float64, device=device)


class Denoiser:
    """x_theta(z_t, t) of a diffusion module as float64 probabilities (nucleus-filtered), counting
    network calls (NFE). t is a scalar shared by the batch."""

    def __init__(self, module, nucleus_p: float = 1.0):
        self.module, self.nucleus_p, self.nfe = module, nucleus_p, 0

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        log_x = self.module.denoise(z, torch.full((z.shape[0],), float(t), device=z.device))  # (n, L, K)
        return top_p_filter(log_x.double().exp(), self.nucleus_p)
