"""GIDD's hybrid mask + uniform mixing schedule (von Ruette et al. 2025, arXiv 2503.04482; brief
/work/shared/reference/gidd_sedd.md Sec. 1.2 and 1.5), in the v1.1 parameterisation with gamma = 1.

Vocabulary of K ids, one of them [MASK] (m); N = K - 1 non-mask ids; u = (1 - m) / N. Per token

    q_t(z | x) = Cat(z; alpha_t x + beta_t pi_t),
    c_t = B sqrt(t (1 - t)),   C_t = 1 + c_t,   B = 2 p_u / (1 - p_u),
    alpha_t = (1 - t) / C_t,   beta_t pi_t = (t m + c_t u) / C_t.

So beta_t pi_t has only two distinct entries: the mask share t / C_t and, on every non-mask id, the
per-token uniform share c_t / (N C_t). Everything here is carried as those (B,) scalars; nothing of
shape (B, L, K) is built except by `marginal` / `log_marginal`, which exist for samplers and tests.
At t = 1/2 the total uniform mass N * c_t / (N C_t) is exactly p_u and alpha = mask share = (1 - p_u)/2.

p_u = 0: as in the original code, p_u is floored at e^-20 (and log B at -20), so the process is
masked diffusion with alpha_t = 1 - t up to O(e^-20); there is no separate exact p_u = 0 path.

All schedule quantities are returned in float64 (the brief's numerics, Sec. 1.5).
"""

from __future__ import annotations

import math

import torch

P_U_FLOOR = math.exp(-20.0)  # the original's floor on p_u
LOG_B_MIN = -20.0  # ... and on log B


def _f64(t: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(t).to(torch.float64)


class HybridSchedule:
    """The mask + uniform GIDD schedule for a vocabulary of `vocab_size` ids with [MASK] = `mask_id`.

    Methods take t as a tensor of any shape (usually (B,)) and return float64 tensors of that shape.
    """

    name = "gidd_hybrid"

    def __init__(self, vocab_size: int, mask_id: int, p_uniform: float = 0.0):
        if not 0.0 <= p_uniform < 1.0:
            raise ValueError(f"p_uniform must be in [0, 1), got {p_uniform}")
        if not 0 <= mask_id < vocab_size:
            raise ValueError(f"mask_id {mask_id} outside the vocabulary of {vocab_size}")
        self.vocab_size = int(vocab_size)  # K
        self.num_tokens = self.vocab_size - 1  # N, the ids uniform noise can land on
        self.mask_id = int(mask_id)
        self.p_uniform = float(p_uniform)
        p = max(self.p_uniform, P_U_FLOOR)
        self.log_B = max(math.log(2.0 * p) - math.log1p(-p), LOG_B_MIN)  # B = 2^gamma p_u / (1 - p_u)
        self.B = math.exp(self.log_B)

    # --- scalar schedule ----------------------------------------------------------------------------

    def c(self, t: torch.Tensor) -> torch.Tensor:
        """c_t = B sqrt(t (1 - t))  (gamma = 1)."""
        t = _f64(t)
        return self.B * torch.sqrt(t * (1.0 - t))

    def dc(self, t: torch.Tensor) -> torch.Tensor:
        """c'_t = (1/2) (1 - 2t) / (t (1 - t)) c_t."""
        t = _f64(t)
        return 0.5 * (1.0 - 2.0 * t) / (t * (1.0 - t)) * self.c(t)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_t = (1 - t) / (1 + c_t): the probability that a token is still clean (not re-drawn)."""
        t = _f64(t)
        return (1.0 - t) / (1.0 + self.c(t))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """-log alpha_t (for code written against `dlm.diffusion.schedules.Schedule`)."""
        return -torch.log(self.alpha(t))

    def mask_share(self, t: torch.Tensor) -> torch.Tensor:
        """(beta_t pi_t)[m] = t / C_t."""
        t = _f64(t)
        return t / (1.0 + self.c(t))

    def uniform_share(self, t: torch.Tensor) -> torch.Tensor:
        """(beta_t pi_t)[j] = c_t / (N C_t) for every non-mask id j (the per-token uniform share)."""
        c = self.c(t)
        return c / (self.num_tokens * (1.0 + c))

    def shares(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(alpha_t, mask share, per-token uniform share); alpha + mask + N * uniform = 1."""
        return self.alpha(t), self.mask_share(t), self.uniform_share(t)

    def dlog_alpha(self, t: torch.Tensor) -> torch.Tensor:
        """alpha'_t / alpha_t = -1/(1 - t) - c'_t / (1 + c_t)  (brief 1.5)."""
        t = _f64(t)
        return -1.0 / (1.0 - t) - self.dc(t) / (1.0 + self.c(t))

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """lambda_t = log(alpha_t / (1 - alpha_t)) = log((1 - t) / (t + c_t)), since 1 - alpha_t = (t + c_t)/C_t."""
        t = _f64(t)
        return torch.log1p(-t) - torch.log(t + self.c(t))

    # --- ELBO weights (brief 1.5) -----------------------------------------------------------------

    def omega(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """omega_t = (beta_t pi_t)' - (alpha'_t / alpha_t) beta_t pi_t as (mask entry, each non-mask entry).

        Closed forms (gamma = 1): omega[m] = mask_share / (t (1 - t)), omega[j] = uniform_share / (2 t (1 - t)).
        """
        t = _f64(t)
        g = t * (1.0 - t)
        return self.mask_share(t) / g, self.uniform_share(t) / (2.0 * g)

    def elbo_weights(self, t: torch.Tensor, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """w_t(z, x) = omega_t(z) / q_t(z | x), float64 (B, L), for t (B,), z and x (B, L).

        The three cases of brief 1.5, using c + (1 - t) c' = c / (2t) (gamma = 1):
            z = [MASK]:              1 / (t (1 - t))
            z non-mask, z != x:      (c + (1 - t) c') / ((1 - t) c)              = 1 / (2 t (1 - t))
            z = x:                   (c + (1 - t) c') / N / ((1 - t)(1 - t + c/N)) = c / (2 t (1 - t)(N (1 - t) + c))
        """
        t = _f64(t)
        g = (t * (1.0 - t))[:, None]  # (B, 1)
        c = self.c(t)[:, None]
        w_mask = 1.0 / g
        w_noise = 0.5 / g
        w_clean = c / (2.0 * g * (self.num_tokens * (1.0 - t[:, None]) + c))
        is_mask = z == self.mask_id  # (B, L)
        return torch.where(is_mask, w_mask, torch.where(z == x, w_clean, w_noise))  # (B, L)

    # --- conditionals, marginals and sampling -----------------------------------------------------

    def transition_shares(self, s: torch.Tensor, t: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q_{t|s}(z_t | z_s) = alpha_{t|s} 1[z_t = z_s] + (beta_{t|s} pi_{t|s})[z_t] for s < t (brief 1.2):
        returns (alpha_t / alpha_s, its mask share, its per-token uniform share), where
        beta_{t|s} pi_{t|s} = beta_t pi_t - (alpha_t / alpha_s) beta_s pi_s (entry-wise >= 0)."""
        a_s, m_s, u_s = self.shares(s)
        a_t, m_t, u_t = self.shares(t)
        a_ts = a_t / a_s
        return a_ts, m_t - a_ts * m_s, u_t - a_ts * u_s

    def _log_mixing(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """log(beta_t pi_t) as a (B, 1, K) vector."""
        _, m, u = self.shares(t)
        out = torch.log(u)[:, None, None].expand(-1, 1, self.vocab_size).clone()  # (B, 1, K)
        out[..., self.mask_id] = torch.log(m)[:, None]
        return out.to(dtype)

    def log_marginal(self, log_x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log(alpha_t x + beta_t pi_t) (B, L, K) for a distribution over clean ids given as log_x (B, L, K)
        (one-hot x or the denoiser's x_theta), in log_x's dtype."""
        log_a = torch.log(self.alpha(t)).to(log_x.dtype)[:, None, None]  # (B, 1, 1)
        return torch.logaddexp(log_a + log_x, self._log_mixing(t, log_x.dtype))  # (B, L, K)

    def marginal(self, x_probs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """alpha_t x + beta_t pi_t (B, L, K) for x_probs (B, L, K); float64."""
        a = self.alpha(t)[:, None, None]  # (B, 1, 1)
        return a * x_probs.to(torch.float64) + self._log_mixing(t, torch.float64).exp()

    def sample(self, x: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """z_t ~ Cat(alpha_t x + beta_t pi_t) per token, for x (B, L) and t (B,).

        One uniform draw u per token decides: u < mask share -> [MASK]; else u < mask share + N * uniform
        share -> a uniform non-mask id (possibly x itself); else x. Draws, in order: torch.rand (B, L),
        then torch.randint (B, L), both from `generator` (the first matches `dlm.algos.mdlm.forward_mask`).
        """
        _, m, u = self.shares(t)
        draw = torch.rand(x.shape, generator=generator, device=x.device).to(torch.float64)  # (B, L)
        noise = torch.randint(0, self.num_tokens, x.shape, generator=generator, device=x.device)  # (B, L)
        noise = noise + (noise >= self.mask_id).to(noise.dtype)  # skip over [MASK]
        m, mu = m[:, None], (m + self.num_tokens * u)[:, None]  # (B, 1)
        z = torch.where(draw < mu, noise, x)
        return torch.where(draw < m, torch.full_like(x, self.mask_id), z)

    def __repr__(self) -> str:
        return f"HybridSchedule(K={self.vocab_size}, mask_id={self.mask_id}, p_uniform={self.p_uniform})"
