"""Uniform-state discrete diffusion (UDLM, Schiff et al. 2025) with the Rao-Blackwellised NELBO of
DUO's base model (Sahoo et al. 2025, arXiv 2506.10892, Sec. 3 and eq. 7 / App. A).

Forward process: q(z_t | x) = Cat(alpha_t x + (1 - alpha_t) / K 1). Denoiser: mean parameterisation,
x_theta = softmax over all K ids. With  xbar = K alpha x + (1 - alpha) 1  (vector over the vocabulary),
xbar_theta = K alpha x_theta + (1 - alpha) 1 and i = z_t, the continuous-time NELBO per token is

    (alpha' / (K alpha)) [ K / xbar_i - K / xbar_theta_i
                           - sum_j (xbar_j / xbar_i) log( xbar_theta_i xbar_j / (xbar_theta_j xbar_i) ) ]

(UDLM eq. 49 as written in the DUO appendix). Because xbar takes only two values, the sum is O(K)
with one log over the vocabulary:  sum_j xbar_j = K,
sum_j xbar_j log xbar_theta_j = (1 - alpha) sum_j log xbar_theta_j + K alpha log xbar_theta_x,
sum_j xbar_j log xbar_j = (K - 1)(1 - alpha) log(1 - alpha) + (K alpha + 1 - alpha) log(K alpha + 1 - alpha).
"""

from __future__ import annotations


import torch

from dlm.algos.base import Method


def forward_uniform(x: torch.Tensor, alpha: torch.Tensor, vocab_size: int, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
    """Sample z_t ~ Cat(alpha x + (1 - alpha)/K): with prob. 1 - alpha replace x by a uniform id (maybe x itself)."""
    alpha = alpha.reshape(-1, 1)  # (B, 1)
    u = torch.rand(x.shape, generator=generator, device=x.device)  # (B, L)
    noise = torch.randint(0, vocab_size, x.shape, generator=generator, device=x.device)
    return torch.where(u < 1.0 - alpha, noise, x)


def udlm_nelbo(log_x_theta: torch.Tensor, x: torch.Tensor, z: torch.Tensor, alpha: torch.Tensor,
               dalpha: torch.Tensor) -> torch.Tensor:
    """Per-token uniform-state NELBO integrand (B, L); >= 0, and 0 iff x_theta = onehot(x).

    log_x_theta: (B, L, K) normalised log-probs; x, z: (B, L) clean and noisy ids; alpha, dalpha: (B,).
    """
    K = log_x_theta.shape[-1]
    a = alpha.double()[:, None]  # (B, 1)
    da = dalpha.double()[:, None]
    # log xbar_theta = log(K a x_theta + (1 - a)), computed stably over the vocabulary in the input
    # precision; only the (B, L) reductions below are carried out in float64
    a_in = alpha.to(log_x_theta.dtype)[:, None, None]  # (B, 1, 1)
    log_xbar_theta = torch.logaddexp(torch.log(K * a_in) + log_x_theta, torch.log1p(-a_in))  # (B, L, K)
    lxt_z = log_xbar_theta.gather(-1, z[..., None]).squeeze(-1).double()  # (B, L) log xbar_theta_i
    lxt_x = log_xbar_theta.gather(-1, x[..., None]).squeeze(-1).double()  # (B, L) at the clean id
    sum_lxt = log_xbar_theta.sum(-1, dtype=torch.float64)  # (B, L)
    is_x = (z == x).double()
    xbar_i = (1 - a) + K * a * is_x  # (B, L) true xbar at the observed token
    sum_xbar_log_xbar = (K - 1) * (1 - a) * torch.log1p(-a) + (K * a + 1 - a) * torch.log(K * a + 1 - a)
    sum_xbar_log_xt = (1 - a) * sum_lxt + K * a * lxt_x
    s = (K * (lxt_z - torch.log(xbar_i)) - sum_xbar_log_xt + sum_xbar_log_xbar) / xbar_i
    bracket = K / xbar_i - K * torch.exp(-lxt_z) - s
    return (da / (K * a) * bracket).float()


class UDLM(Method):
    algo = "udlm"

    def output_log_probs(self, logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Log-softmax over all K ids (mean parameterisation)."""
        return torch.log_softmax(logits.float(), dim=-1)

    def token_nll(self, batch, t, generator=None):
        x = batch["input_ids"]  # (B, L)
        alpha, dalpha = self.schedule.alpha(t), self.schedule.dalpha(t)  # (B,)
        z = forward_uniform(x, alpha, self.hparams.vocab_size, generator)
        return udlm_nelbo(self.denoise(z, t), x, z, alpha, dalpha)


