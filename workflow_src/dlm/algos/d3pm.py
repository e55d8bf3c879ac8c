"""D3PM with the absorbing state in discrete time (Austin et al. 2021, arXiv 2107.03006), as the
baseline of the MDLM code (`parameterization=d3pm`, `T > 0`; MDLM brief 1.7, DUO brief 3.4).

Time grid: a continuous draw t in [eps, 1] (the shared sampler) is quantised to
t <- floor(t T)/T + 1/T in {1/T, ..., 1}; the previous step is s = t - 1/T.

Denoiser: mean parameterisation, x_theta = softmax over all K ids; the [MASK] logit is not suppressed,
so the model may put mass x_theta(m) on "the clean token is [MASK]".

Reverse step (D3PM eq. 4): p(z_s | z_t = m) ∝ sum_x' q(z_s, z_t = m | x') x_theta(x'), where a clean
[MASK] stays masked. With a linear keep-probability alpha_t = 1 - t, alpha_s = 1 - (t - dt), dt = 1/T,
its normaliser is t + alpha_t x_theta(m) and the KL to the true posterior (x0 w.p. dt/t, m w.p.
1 - dt/t) at a masked position is, times T (the sum over the T steps, estimated at one step),

    T [ (dt/t) (log(1 + alpha_t x_m / t) - log x_theta(x0))
        + (1 - dt/t) (log(1 + alpha_t x_m / t) - log(1 + alpha_s x_m / (t - dt))) ],   x_m = x_theta(m),

and 0 at unmasked positions (MDLM brief 1.7). The bound adds the reconstruction term
-log p_theta(x0 | z_0 = x0) = -log x_theta(x0; z = x0, sigma(0)) at every token.

Schedule (as in the MDLM code, not a deviation): the forward masking and the time conditioning use the
configured log-linear schedule at the grid time, alpha_t = 1 - (1 - eps) t, while the KL coefficients
above use alpha_t = 1 - t with t clamped to <= 1 - 1e-4 (MDLM `_d3pm_loss`). The two differ by eps t
(eps = 1e-3): the KL is computed for a process that masks with probability t while the data were masked
with probability (1 - eps) t. Only the log-linear schedule is accepted (the MDLM code asserts it).

Numerical guards (deviations only on inputs the original never reaches at T = 1000):
- at t = dt (the last step, reached for t < 1/T) the second term has coefficient 0 and 0/0 inside its log;
  the original returns NaN there when x_theta(m) > 0, here the term is 0, which is the exact KL of the
  step to s = 0;
- a draw of exactly t = 1 maps to the grid point 1 (the original gives 1 + 1/T, outside the grid).
"""

from __future__ import annotations

import torch

from dlm.algos.base import Method
from dlm.algos.mdlm import forward_mask

T_CLAMP = 1.0 - 1e-4  # upper clamp of t inside the loss (MDLM `_d3pm_loss`)


def quantise_time(t: torch.Tensor, T: int) -> torch.Tensor:
    """t (B,) in [0, 1] -> floor(t T)/T + 1/T on the grid {1/T, ..., 1} (MDLM brief 1.7)."""
    k = torch.floor(t * T).clamp(0, T - 1)  # (B,) step index; t = 1 exactly stays on the grid
    return (k + 1.0) / T


def d3pm_absorb_loss(log_x_theta: torch.Tensor, x0: torch.Tensor, z: torch.Tensor, t: torch.Tensor,
                     T: int, mask_id: int) -> torch.Tensor:
    """T x KL(q(z_s | z_t, x0) || p_theta(z_s | z_t)) per token (B, L), absorbing D3PM (MDLM brief 1.7).

    log_x_theta: (B, L, K) normalised log-probs over clean ids (mass on mask allowed); x0, z: (B, L);
    t: (B,) grid times in {1/T, ..., 1}. Assumes alpha_t = 1 - t, alpha_s = 1 - (t - 1/T); t is clamped
    to <= 1 - 1e-4 as in the MDLM code. >= 0, and 0 where z_t is unmasked or x_theta = onehot(x0).
    """
    dt = 1.0 / T
    t = t.double().clamp(0.0, T_CLAMP)[:, None]  # (B, 1)
    alpha_t, alpha_s = 1.0 - t, 1.0 - (t - dt)  # (B, 1)
    log_x0 = log_x_theta.gather(-1, x0[..., None]).squeeze(-1).double()  # (B, L) log x_theta(x0)
    x_m = log_x_theta[..., mask_id].double().exp()  # (B, L) x_theta(m)
    log_norm_t = torch.log1p(alpha_t * x_m / t)  # (B, L) log((t + alpha_t x_m) / t)
    # at t = dt the second coefficient is exactly 0; keep its log finite (0/0 otherwise)
    log_norm_s = torch.log1p(alpha_s * x_m / (t - dt).clamp_min(1e-12))  # (B, L)
    coef = dt / t  # (B, 1) true posterior probability of unmasking to x0
    kl = coef * (log_norm_t - log_x0) + (1.0 - coef) * (log_norm_t - log_norm_s)  # (B, L)
    kl = torch.where(z == mask_id, kl, torch.zeros_like(kl))
    return (T * kl).to(log_x_theta.dtype)


class D3PM(Method):
    algo = "d3pm"
    default_time_conditioning = True

    def __init__(self, **kw):
        super().__init__(**kw)
        self.T = int(self.hparams.get("T", 1000))
        if self.T < 1:
            raise ValueError(f"d3pm needs T >= 1 discrete steps, got {self.T}")
        if self.schedule.name != "loglinear":
            raise ValueError(f"d3pm assumes the loglinear noise schedule (MDLM code), got {self.schedule.name!r}")

    def output_log_probs(self, logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Log-softmax over all K ids, the mask logit kept (`denoise` takes t as given, i.e. already a
        grid time when called by a sampler)."""
        return torch.log_softmax(logits.float(), dim=-1)

    def reconstruction_nll(self, x: torch.Tensor) -> torch.Tensor:
        """-log p_theta(x | z_0 = x): (B, L), the model run on the clean input at t = 0 (sigma(0) = 0)."""
        log_p = self.denoise(x, torch.zeros(x.shape[0], device=x.device))  # (B, L, K)
        return -log_p.gather(-1, x[..., None]).squeeze(-1)

    def token_nll(self, batch, t, generator=None):
        """Reconstruction + T x KL at the grid time of the continuous t (B,) (MDLM brief 1.7)."""
        x = batch["input_ids"]  # (B, L)
        t = quantise_time(t, self.T)  # (B,) in {1/T, ..., 1}
        z = forward_mask(x, self.schedule.alpha(t), self.mask_id, generator)  # (B, L)
        diffusion = d3pm_absorb_loss(self.denoise(z, t), x, z, t, self.T, self.mask_id)
        return self.reconstruction_nll(x) + diffusion
