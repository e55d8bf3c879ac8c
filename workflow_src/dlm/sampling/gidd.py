"""GIDD's ancestral sampler (von Ruette et al. 2025, arXiv 2503.04482; brief
/work/shared/reference/gidd_sedd.md Sec. 1.2 and 1.8) for the hybrid mask + uniform process.

Reverse step from t to s < t: the posterior of the forward process with x replaced by x_theta(z_t, t),
    p(z_s = j | z_t = z) = q_{t|s}(z | j) q_s(j | x_theta) / q_t(z | x_theta),                       (1.8)
    q_s(. | x_theta) = α_s x_theta + β_s π_s,
    q_{t|s}(z | j) = α_{t|s} 1[z = j] + (β_{t|s} π_{t|s})_z,   α_{t|s} = α_t / α_s,
    β_{t|s} π_{t|s} = β_t π_t - α_{t|s} β_s π_s                                                     (1.2)
(`HybridSchedule.transition_shares`). As a vector over j this is (β_{t|s} π_{t|s})_z q_s + α_{t|s} q_s(z) e_z,
normalised by q_t(z | x_theta) = (β_{t|s} π_{t|s})_z + α_{t|s} q_s(z). Every state, [MASK] included, may move
to any state, so decoded tokens can change again (or even return to [MASK]), as in the original. All of it
is float64; x_theta is nucleus-filtered (`nucleus_p`, default off) and the optional min-p filter zeroes
posterior entries below `min_p` and renormalises (as the original's eval scripts).

Grid: ts = t_eps + (1 - 2 t_eps) linspace(0, 1, T + 1) (t_eps = the module's, 1e-4), from the all-[MASK] prior.
Deviations from the original GiddSampler (all documented for the README):
  * Steps run ts[T] -> ts[T-1] -> ... -> ts[0]: the first network call is at t = 1 - t_eps (the original
    started at ts[T-1], skipping the first interval) and there is no identity last step (the original's
    last iteration had s = t, a wasted network call), so T network calls make T transitions (the original:
    T calls, T - 1 transitions).
  * A final step at t = ts[0] = t_eps replaces every [MASK] still present by argmax x_theta(z, t_eps) (one
    more call, only if some [MASK] remains); the original returned the [MASK]s and the decoder dropped them.
  * min-p keeps the largest entry of each row (the original produced NaN when every entry was below min_p).
  * Probabilities in float64 and inverse-CDF categorical draws (`sample_categorical`) instead of bf16 autocast;
    without min-p each step is drawn as the mixture the posterior is (`gidd_step`: which component, then a
    token), so x_theta is exponentiated only where a token is drawn from it.
  * Conditioning (fixed positions) is re-applied after every step (not in the original).
The prior is all-[MASK] as the original, although q_{1 - t_eps} puts a tiny uniform share c_t / C_t on tokens.
"""

from __future__ import annotations

import torch

from dlm.sampling.common import (Conditioning, Denoiser, DenoiserOutput, conditioning_or_none, draw_mixture,
                                 sample_categorical)
from dlm.sampling.mdlm import noise_removal


def gidd_time_grid(steps: int, t_eps: float = 1e-4, device: torch.device | str = "cpu") -> torch.Tensor:
    """GIDD's grid t_eps + (1 - 2 t_eps) linspace(0, 1, steps + 1), float64, increasing."""
    if steps < 1:
        raise ValueError(f"sampling steps must be >= 1, got {steps}")
    return t_eps + (1 - 2 * t_eps) * torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64, device=device)


def gidd_posterior(probs: torch.Tensor, z: torch.Tensor, schedule, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """p(z_s | z_t = z, x_theta) (n, L, K) float64, normalised, for x_theta probs (n, L, K) and z (n, L); s < t."""
    a_s, m_s, u_s = schedule.shares(s)  # scalars: α_s, mask share, per-token uniform share at s
    a_ts, m_ts, u_ts = schedule.transition_shares(s, t)
    q_s = a_s * probs.double() + u_s  # (n, L, K) α_s x_theta + β_s π_s ...
    q_s[..., schedule.mask_id] += m_s - u_s  # ... with the mask share on [MASK]
    f_z = torch.where(z == schedule.mask_id, m_ts, u_ts)[..., None]  # (n, L, 1) (β_{t|s} π_{t|s})_z
    q_s_z = q_s.gather(-1, z[..., None])  # (n, L, 1)
    w = (f_z * q_s).scatter_add_(-1, z[..., None], a_ts * q_s_z)  # (n, L, K) q_{t|s}(z | j) q_s(j)
    return w / (f_z + a_ts * q_s_z)  # divided by q_t(z | x_theta)


def gidd_step(x: DenoiserOutput, z: torch.Tensor, schedule, t: torch.Tensor, s: torch.Tensor, vocab_size: int,
              generator: torch.Generator | None) -> torch.Tensor:
    """z_s (n, L) ~ `gidd_posterior`, drawn as the mixture it is (`draw_mixture`, exact). With f_z =
    (β_{t|s} π_{t|s})_z, the posterior vector f_z q_s + α_{t|s} q_s(z) e_z has the components
      x_theta: f_z α_s,  Uniform over the K - 1 non-mask ids: f_z (K - 1) u_s,  e_[MASK]: f_z m_s,
      e_z: α_{t|s} q_s(z),  q_s(z) = α_s x_theta[z] + (m_s if z = [MASK] else u_s)
    (x_theta is 0 at [MASK]), so x_theta is read in full only where a token is drawn from it."""
    mask_id = schedule.mask_id
    a_s, m_s, u_s = (v.to(z.device) for v in schedule.shares(s))
    a_ts, m_ts, u_ts = (v.to(z.device) for v in schedule.transition_shares(s, t))
    is_mask = z == mask_id  # (n, L)
    f_z = torch.where(is_mask, m_ts, u_ts).double()  # (n, L)
    base = torch.where(is_mask, m_s, u_s)  # (n, L)

    def weights(x_z: torch.Tensor):
        q_s_z = a_s * x_z + base  # (n, L)
        return f_z * a_s, f_z * (vocab_size - 1) * u_s, [(f_z * m_s, mask_id), (a_ts * q_s_z, z)]

    return draw_mixture(x, z, weights, vocab_size, generator, exclude=mask_id)


def min_p_filter(probs: torch.Tensor, min_p: float) -> torch.Tensor:
    """Zero entries below min_p (always keeping each row's largest) and renormalise; probs (..., K)."""
    if min_p <= 0.0:
        return probs
    keep = (probs >= min_p) | (probs == probs.amax(-1, keepdim=True))
    kept = probs * keep
    return kept / kept.sum(-1, keepdim=True)


@torch.no_grad()
def sample_gidd(module, n: int, steps: int, generator: torch.Generator, cond: Conditioning | None = None,
                nucleus_p: float = 1.0, nucleus_rule: str = "keep_crossing", min_p: float = 0.0, **_) -> dict:
    """Draw n sequences with GIDD's ancestral sampler (module docstring). Returns {"tokens", "nfe"}."""
    if not 0.0 <= min_p < 1.0:
        raise ValueError(f"min_p must be in [0, 1), got {min_p}")
    L, schedule = module.hparams.block_length, module.schedule
    device = module.device
    cond = conditioning_or_none(cond, n, L, device)
    ts = gidd_time_grid(steps, float(getattr(module, "t_eps", 1e-4)), device)
    x_theta = Denoiser(module, nucleus_p, nucleus_rule)

    z = cond.apply(torch.full((n, L), module.mask_id, dtype=torch.long, device=device))  # (n, L) all [MASK]
    for i in range(steps, 0, -1):
        t, s = ts[i], ts[i - 1]
        if min_p > 0.0:  # the filter needs the whole posterior
            post = min_p_filter(gidd_posterior(x_theta(z, t), z, schedule, t, s), min_p)  # (n, L, K)
            z = sample_categorical(post, generator)
        else:
            z = gidd_step(x_theta.output(z, t), z, schedule, t, s, module.hparams.vocab_size, generator)
        z = cond.apply(z)
    z = noise_removal(z, module.mask_id, x_theta, ts[0])  # argmax wherever [MASK] remains, as MDLM's last step
    return {"tokens": cond.apply(z), "nfe": x_theta.nfe}
