"""Ancestral sampling for absorbing D3PM in discrete time (Austin et al. 2021, eq. 4; brief mdlm_remdm.md 1.7;
the model: dlm.algos.d3pm).

Grid. The model is trained on t in {1/T, ..., 1} (module.T). A sampler with `steps` steps visits the grid
times k_i / T with k_i = round(T (steps - i) / steps), i = 0..steps: T, ..., 0. These are strictly
decreasing whenever steps <= T, equally spaced when steps divides T (steps = T is the full chain), and the
network is only ever evaluated at grid times it was trained on. steps > T is a ValueError (the grid has
no finer times). Each jump k_i/T -> k_{i+1}/T is an exact absorbing posterior (the absorbing transitions
compose), with the loss's keep-probability alpha_t = 1 - t (the KL the model was trained to match; the
forward masking used 1 - (1 - eps) t, which gives the same unmask probability (t - s)/t).

Mask mass. D3PM.denoise keeps the [MASK] logit, so x_theta(m) is "the clean token is [MASK]"; a clean
[MASK] stays [MASK] under the absorbing process. The reverse step is then exactly the distribution the
D3PM loss was trained on (p(z_s | z_t = m) ∝ sum_x' q(z_s, z_t = m | x') x_theta(x'), normaliser
t + alpha_t x_theta(m)):
    unmask to y != m:  x_theta(y) (alpha_s - alpha_t),    stay masked:  (1 - alpha_s) + alpha_s x_theta(m).
It is drawn in two stages (unmask with P = (t - s)(1 - x_m)/(t + alpha_t x_m), then the token from x_theta
renormalised over y != m), as `mdlm.masked_steps`. At the last step (s = 0) the data never contain
[MASK], so the mask column is dropped there (P = 1) and every position ends unmasked; no argmax noise
removal is needed. The reconstruction decoder p(x0 | z_0) (trained to copy) is not applied, as in the
MDLM code. Nucleus filtering applies to the clean-token distribution only and leaves P unchanged.
Unmasked tokens are carried over (absorbing: z_t != m implies z_s = z_t).
"""

from __future__ import annotations

import torch

from dlm.sampling.common import Conditioning, Denoiser, sample_categorical, top_p_filter


def d3pm_grid(T: int, steps: int) -> list[int]:
    """Grid indices k_0 = T > k_1 > ... > k_steps = 0 (times k/T) of a `steps`-step chain on a T-step model."""
    if not 1 <= steps <= T:
        raise ValueError(f"d3pm_ancestral samples on the model's discrete grid of T={T} steps: steps must be "
                         f"in [1, {T}], got {steps} (a divisor of T gives an equally spaced sub-grid)")
    return [(2 * T * (steps - i) + steps) // (2 * steps) for i in range(steps + 1)]  # round(T (steps - i)/steps)


def d3pm_split(log_probs: torch.Tensor, mask_id: int, nucleus_p: float = 1.0, nucleus_rule: str = "keep_crossing"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_theta(m) (...), clean-token distribution (..., K) renormalised over y != m, nucleus-filtered),
    float64, from log x_theta (..., K) with the mask logit kept."""
    lp = log_probs.double()
    x_m = lp[..., mask_id].exp()  # (n, L)
    lp = lp.clone()
    lp[..., mask_id] = -torch.inf
    tok = torch.softmax(lp, dim=-1)  # (n, L, K), stable even when x_m ~ 1
    return x_m, top_p_filter(tok, nucleus_p, nucleus_rule)


def d3pm_unmask_probability(x_m: torch.Tensor, t: float, s: float) -> torch.Tensor:
    """P(z_s != m | z_t = m) = (alpha_s - alpha_t)(1 - x_m) / (t + alpha_t x_m), alpha = 1 - t (n, L)."""
    if s <= 0.0:
        return torch.ones_like(x_m)  # last step: mask column dropped
    return (t - s) * (1 - x_m) / (t + (1 - t) * x_m)


@torch.no_grad()
def sample_d3pm(module, n: int, steps: int, generator: torch.Generator, cond: Conditioning,
                nucleus_p: float = 1.0, nucleus_rule: str = "keep_crossing", **_) -> dict:
    """D3PM absorbing ancestral sampling on `d3pm_grid(module.T, steps)`. Returns {"tokens": (n, L), "nfe"}."""
    T = int(module.T)
    grid = d3pm_grid(T, steps)
    L, mask_id, device = module.hparams.block_length, module.mask_id, module.device
    z = cond.apply(torch.full((n, L), mask_id, dtype=torch.long, device=device))  # (n, L)
    x_theta = Denoiser(module, nucleus_p, nucleus_rule)  # used for its counted network call only
    for k_t, k_s in zip(grid[:-1], grid[1:]):
        t, s = k_t / T, k_s / T
        masked = (z == mask_id) & ~cond.fixed  # (n, L)
        if not masked.any():
            break  # nothing left to denoise (e.g. a fully conditioned batch)
        log_p = x_theta.log_probs(z, t)  # (n, L, K)
        x_m = log_p[..., mask_id].double().exp()  # (n, L) x_theta(m), as d3pm_split
        u = torch.rand(z.shape, dtype=torch.float64, device=device, generator=generator)  # (n, L)
        unmask = masked & (u < d3pm_unmask_probability(x_m, t, s))
        if unmask.any():  # the clean-token distribution only where a token is drawn
            _, tok = d3pm_split(log_p[unmask], mask_id, nucleus_p, nucleus_rule)  # (m, K)
            z = z.masked_scatter(unmask, sample_categorical(tok, generator))
        z = cond.apply(z)
    return {"tokens": cond.apply(z), "nfe": x_theta.nfe}
