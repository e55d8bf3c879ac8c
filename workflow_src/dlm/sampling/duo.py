"""Ancestral and greedy-tail sampling for uniform-state models (UDLM / DUO; DUO arXiv 2506.10892,
Sec. 3.3 and App. B).

Posterior for s < t, with alpha_{t|s} = alpha_t / alpha_s, e_z the one-hot of the current token and
x_theta the denoiser's distribution (computed in float64):
  q(z_s | z_t, x_theta) ∝ K alpha_t x_theta ⊙ e_z + (alpha_{t|s} - alpha_t) e_z
                          + (alpha_s - alpha_t) x_theta + (1 - alpha_{t|s})(1 - alpha_s)/K 1.
Each step is drawn as the mixture it is (`common.draw_mixture`, exact): with x_z = x_theta[z],
  x_theta with weight alpha_s - alpha_t, Uniform(K) with (1 - alpha_{t|s})(1 - alpha_s), and e_z with
  K alpha_t x_z + alpha_{t|s} - alpha_t,
so x_theta is exponentiated in float64 only at the positions that draw from it (`uniform_posterior`
writes the dense (n, L, K) form; a test checks the two agree).
The chain starts from the uniform prior. Final step at t_min:
  "ancestral":   one more posterior step to alpha_s = 1:  x ∝ x_theta ⊙ (K alpha_t e_z + 1 - alpha_t);
  "greedy":      Greedy-Tail (DUO Sec. 3.3), x = argmax x_theta(z_{t_min}).
"""

from __future__ import annotations

import torch

from dlm.sampling.common import Conditioning, Denoiser, DenoiserOutput, draw_mixture, time_grid


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


def posterior_weights(x_z: torch.Tensor, a_t: torch.Tensor, a_s: torch.Tensor, vocab_size: int, kappa: float = 1.0
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mixture weights (w_x, w_u, w_z) (n, L) of a uniform-state reverse step, for x_z = x_theta[z_t] (n, L).

    kappa = 1: the posterior q(z_s | z_t, x_theta) (`uniform_posterior`). kappa < 1: the DUO++ Ψ-step
    κ q + (1 - κ) q_t(. | q_0) (psi.py's `uniform_psi_probs`), which with D = K α_t x_z + 1 - α_t is
      x_theta: κ(α_s - α_t) + (1 - κ) α_s (1 - α_t),
      uniform: κ(1 - α_{t|s})(1 - α_s) + (1 - κ)(1 - α_s) D,
      e_z:     κ(K α_t x_z + α_{t|s} - α_t) + (1 - κ) α_s K α_t x_z.
    alpha_s = 1 with kappa = 1 gives the final step x_theta ⊙ (K α_t e_z + 1 - α_t).
    """
    K = vocab_size
    a_ts = a_t / a_s
    w_x = torch.full_like(x_z, float(kappa * (a_s - a_t) + (1 - kappa) * a_s * (1 - a_t)))
    w_u = kappa * (1 - a_ts) * (1 - a_s) + (1 - kappa) * (1 - a_s) * (K * a_t * x_z + 1 - a_t)
    w_z = kappa * (K * a_t * x_z + a_ts - a_t) + (1 - kappa) * a_s * K * a_t * x_z
    return w_x, w_u.expand_as(x_z), w_z


def uniform_step(x: DenoiserOutput, z: torch.Tensor, a_t: torch.Tensor, a_s: torch.Tensor, vocab_size: int,
                 generator: torch.Generator | None, kappa: float = 1.0) -> torch.Tensor:
    """z_s (n, L) from z_t: one posterior (kappa = 1) or Ψ step, drawn as a mixture (`draw_mixture`)."""
    a_t, a_s = a_t.to(z.device), a_s.to(z.device)

    def weights(x_z: torch.Tensor):
        w_x, w_u, w_z = posterior_weights(x_z, a_t, a_s, vocab_size, kappa)
        return w_x, w_u, [(w_z, z)]

    return draw_mixture(x, z, weights, vocab_size, generator)


def final_step(x: DenoiserOutput, z: torch.Tensor, a_t: torch.Tensor, vocab_size: int, final: str,
               generator: torch.Generator | None) -> torch.Tensor:
    """The last step at t_min: argmax x_theta (greedy-tail) or x ∝ x_theta ⊙ (K α_t e_z + 1 - α_t) (ancestral)."""
    if final == "greedy":
        return x.argmax()
    return uniform_step(x, z, a_t, torch.ones_like(a_t), vocab_size, generator)


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
        z = cond.apply(uniform_step(x_theta.output(z, t), z, a_t, a_s, K, generator))
    pre_final = z  # (n, L) the state the final step starts from (greedy-tail and ancestral share it)
    z = final_step(x_theta.output(z, ts[-1]), z, module.schedule.alpha(ts[-1]), K, final, generator)
    return {"tokens": cond.apply(z), "nfe": x_theta.nfe, "pre_final": pre_final}
