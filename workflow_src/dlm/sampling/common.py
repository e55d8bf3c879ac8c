"""Shared sampling primitives: float64 categorical draws and nucleus filtering."""

from __future__ import annotations

import torch


def sample_categorical(weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one id per row from unnormalised non-negative weights (..., K) -> (...).

    Inverse-CDF sampling in float64: one uniform per row against the float64 cumulative sum. This is
    exact up to float64 rounding, so, like the papers' float64 Gumbel-max, it does not truncate the
    tail (fp32 noise does, silently lowering the temperature; ReMDM, Wang et al. 2025, and Zheng et
    al. 2024), and it needs no transcendental function per vocabulary entry. Zero weights are never
    drawn.
    """
    cdf = weights.double().cumsum(dim=-1)  # (..., K)
    u = torch.rand((*cdf.shape[:-1], 1), dtype=torch.float64, device=cdf.device, generator=generator)
    idx = torch.searchsorted(cdf, u * cdf[..., -1:], right=True)  # first id whose cdf exceeds u * total
    return idx.squeeze(-1).clamp_max(cdf.shape[-1] - 1)


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
        return top_p_filter(log_x.exp().double(), self.nucleus_p)  # float64 from here on
