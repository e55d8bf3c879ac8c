"""Ancestral and greedy-tail sampling for uniform-state models (UDLM / DUO; DUO arXiv 2506.10892,
Sec. 3.3 and App. B).

Posterior for s < t, with alpha_{t|s} = alpha_t / alpha_s, e_z the one-hot of the current token and
x_theta the denoiser's distribution (computed in float64):
  q(z_s | z_t, x_theta) ∝ K alpha_t x_theta ⊙ e_z + (alpha_{t|s} - alpha_t) e_z
                          + (alpha_s - alpha_t) x_theta + (1 - alpha_{t|s})(1 - alpha_s)/K 1.
The chain starts from the uniform prior. Final step at t_min:
  "ancestral":   one more posterior step to alpha_s = 1:  x ∝ x_theta ⊙ (K alpha_t e_z + 1 - alpha_t);
  "greedy":      Greedy-Tail (DUO Sec. 3.3), x = argmax x_theta(z_{t_min}).
"""

from __future__ import annotations

import torch

from dlm.sampling.common import Conditioning, Denoiser, sample_categorical, time_grid


def uniform_posterior(probs: torch.Tensor, z: torch.Tensor, a_t: torch.Tensor, a_s: torch.Tensor) -> torch.Tensor:
    """Unnormalised q(z_s | z_t, x_theta): probs (n, L, K) float64, z (n, L), scalars a_t < a_s.

    Written as (alpha_s - alpha_t) x_theta + (1 - alpha_{t|s})(1 - alpha_s)/K everywhere, plus
    K alpha_t x_theta[z] + alpha_{t|s} - alpha_t at the current token (no one-hot materialised).
    """
    K = probs.shape[-1]
    a_ts = a_t / a_s
    w = probs * (a_s - a_t) + (1 - a_ts) * (1 - a_s) / K  # (n, L, K)
    at_z = K * a_t * probs.gather(-1, z[..., None]) + (a_ts - a_t)  # (n, L, 1)
    return w.scatter_add_(-1, z[..., None], at_z)


@torch.no_grad()
def sample_duo(module, n: int, steps: int, generator: torch.Generator, cond: Conditioning,
               nucleus_p: float = 1.0, nucleus_rule: str = "keep_crossing", final: str = "ancestral", **_) -> dict:
    if final not in ("ancestral", "greedy"):
        raise ValueError(f"final step must be 'ancestral' or 'greedy', got {final!r}")
    L, K = module.hparams.block_length, module.hparams.vocab_size
    device = module.device
    z = cond.apply(torch.randint(0, K, (n, L), generator=generator, device=device))  # (n, L) uniform prior
    ts = time_grid(steps, device=device)
    x_theta = Denoiser(module, nucleus_p, nucleus_rule)

    for i in range(steps):
        t, s = ts[i], ts[i + 1]
        a_t, a_s = module.schedule.alpha(t), module.schedule.alpha(s)
        z = cond.apply(sample_categorical(uniform_posterior(x_theta(z, t), z, a_t, a_s), generator))
    pre_final = z  # (n, L) the state the final step starts from (greedy-tail and ancestral share it)
    probs = x_theta(z, ts[-1])
    if final == "greedy":
        z = probs.argmax(-1)
    else:
        a_t = module.schedule.alpha(ts[-1])
        w = probs * (1 - a_t)  # x ∝ x_theta ⊙ (K alpha_t e_z + 1 - alpha_t)
        w.scatter_add_(-1, z[..., None], K * a_t * probs.gather(-1, z[..., None]))
        z = sample_categorical(w, generator)
    return {"tokens": cond.apply(z), "nfe": x_theta.nfe, "pre_final": pre_final}
