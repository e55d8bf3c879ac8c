"""SEDD: score entropy discrete diffusion (Lou, Meng & Ermon 2024, arXiv 2310.16834), with the absorbing graph
(`graph: absorb`, the default: the baseline of the MDLM and DUO code) or the uniform graph (`graph: uniform`:
"SEDD Uniform" of DUO Tables 1, 2 and 5; louaaron/Score-Entropy-Discrete-Diffusion `graph_lib.Uniform`).

Forward process: every token jumps to [MASK] at rate sigma'(t); over the total noise
sigma_t = -log alpha_t it survives with probability e^{-sigma_t} = alpha_t (SEDD Sec. 3.3, "absorb"
graph), i.e. the same marginal q(z_t | x) = Cat(alpha_t x + (1 - alpha_t) m) as MDLM.

Network output (SEDD Sec. 3.5 / MDLM brief 1.8, `scale_by_sigma`): the DiT, conditioned on the total
noise sigma_t, returns raw values that are turned into log concrete scores
log s_theta(z_t, t)_y ~ log p_t(y) / p_t(z_t) by

    log s_y = raw_y - log(e^sigma - 1) - log(K - 1),    log s_{z_t} := 0,

K counting the [MASK] column. At a masked position the true score of a clean token y is
p0(y | context) alpha_t / (1 - alpha_t) = p0(y | context) / (e^sigma - 1), so raw_y = log p0(y) + log(K - 1)
is the exact score; in particular the zero-initialised head (raw = 0) starts at the uniform p0.

Loss: the diffusion-weighted denoising score entropy (DWDSE, SEDD eq. 10 with the absorb graph's
Q(x <- y) = 1 for x = mask), which is nonzero only where z_t = m. With r = 1 / (e^sigma - 1) = p_t(x0 | x0) /
p_t(m | x0) and dsigma = sigma'(t) = -alpha'_t / alpha_t, per token

    dsigma * [ sum_{y != m} s_y - r log s_{x0} + r (log r - 1) ]

It upper-bounds -log p(x0) (SEDD Thm. 3.6, up to the prior term, which the code drops as in MDLM), so its
token mean on the validation split is the reported bound (val PPL = exp of it).

Uniform graph (SEDD Sec. 3.3 "uniform"; the original's `Uniform` graph, normalised by the vocabulary size):
Q = (1/K) 1 1^T - I, so over the total noise sigma a token stays with probability e^{-sigma} + (1 - e^{-sigma})/K
and moves to each other id with (1 - e^{-sigma})/K: with alpha = e^{-sigma} the marginal is
Cat(alpha x + (1 - alpha)/K 1), UDLM's uniform-state process over all K ids. The network's raw output is the
log score itself (`scale_by_sigma` off, as the original requires for this graph), 0 at the current token.
DWDSE per token, with Q(z, y) = 1/K for y != z and r_y = p_sigma(y | x0) / p_sigma(z | x0):

    dsigma * (1/K) sum_{y != z} [ s_y - r_y log s_y + r_y (log r_y - 1) ],

where with e = e^sigma - 1 and rho = e / (e + K): z = x0 gives r_y = rho for every y != z; z != x0 gives
r_{x0} = 1/rho and r_y = 1 for the other K - 2 ids (the original's `Uniform.score_entropy`, in closed form).
With the scores of a denoiser, s_y = xbar_theta_y / xbar_theta_z (xbar = K alpha x_theta + 1 - alpha), it equals
the UDLM NELBO integrand term by term (udlm.py; tests/test_sedd_uniform.py checks it).
"""

from __future__ import annotations

import math

import torch

from dlm.algos.base import Method
from dlm.algos.mdlm import forward_mask
from dlm.algos.udlm import forward_uniform

GRAPHS = ("absorb", "uniform")


def log_expm1(sigma: torch.Tensor) -> torch.Tensor:
    """log(e^sigma - 1), with torch.expm1 below sigma = 0.5 for precision (as in the SEDD / MDLM code)."""
    small = torch.expm1(sigma)
    large = torch.exp(sigma) - 1.0
    return torch.log(torch.where(sigma < 0.5, small, large))


def absorb_log_score(raw: torch.Tensor, z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """SEDD Sec. 3.5 absorb scaling: log s (B, L, K) = raw - log(e^sigma - 1) - log(K - 1), and 0 at z_t.

    raw: (B, L, K) network output (K includes the [MASK] column); z: (B, L) noisy ids;
    sigma: (B,) total noise -log alpha_t. Also row-wise: raw (m, K), z (m,), sigma (m,).
    """
    K = raw.shape[-1]
    sig = log_expm1(sigma.to(raw.dtype))
    sig = sig.reshape(sig.shape + (1,) * (raw.dim() - sig.dim()))  # (B, 1, 1) or (m, 1)
    # subtract the two terms one after the other, in the original's order: bit-identical imported logits
    log_s = raw - sig - math.log(K - 1)  # (B, L, K)
    return log_s.scatter(-1, z[..., None], 0.0)  # the ratio p_t(z)/p_t(z) = 1


def sedd_absorb_loss(log_score: torch.Tensor, x0: torch.Tensor, z: torch.Tensor, sigma: torch.Tensor,
                     dsigma: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Per-token DWDSE (B, L) of the absorbing graph (SEDD eq. 10; MDLM brief 1.8), >= 0.

        dsigma * [ sum_{y != m} s_y - r log s_{x0} + r (log r - 1) ]  at z = m,  0 elsewhere,

    with r = 1 / expm1(sigma). Each y != m is a Bregman divergence of -log between s_y and its target
    (r at y = x0, 0 otherwise), so the loss is 0 exactly when s_{x0} = r and s_y = 0 for the other y.

    log_score: (B, L, K) log s_theta; x0, z: (B, L) clean and noisy ids; sigma, dsigma: (B,) total noise
    and its rate. Computed in log_score's precision (at least float32).
    """
    if log_score.dtype in (torch.float16, torch.bfloat16):
        log_score = log_score.float()
    K = log_score.shape[-1]
    masked = z == mask_id  # (B, L)
    keep = masked[..., None] & (torch.arange(K, device=z.device) != mask_id)  # (B, L, K): y != m, masked rows
    pos = torch.exp(torch.where(keep, log_score, float("-inf"))).sum(-1)  # (B, L) sum_{y != m} s_y
    log_s_x0 = log_score.gather(-1, x0[..., None]).squeeze(-1)  # (B, L)
    sigma = sigma.to(log_score.dtype)[:, None]  # (B, 1)
    r = 1.0 / torch.expm1(sigma)  # (B, 1) = alpha / (1 - alpha)
    dse = pos - r * log_s_x0 + r * (torch.log(r) - 1.0)  # (B, L)
    dse = torch.where(masked, dse, torch.zeros_like(dse))
    return dsigma.to(log_score.dtype)[:, None] * dse


def uniform_log_score(raw: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The uniform graph's log scores (..., K): the raw output with 0 at the current token z (...)
    (the original's transformer with scale_by_sigma off)."""
    return raw.scatter(-1, z[..., None], 0.0)


def sedd_uniform_loss(log_score: torch.Tensor, x0: torch.Tensor, z: torch.Tensor, sigma: torch.Tensor,
                      dsigma: torch.Tensor) -> torch.Tensor:
    """Per-token DWDSE (B, L) of the uniform graph (module docstring), >= 0 and 0 exactly at the true scores.

    log_score: (B, L, K) log s_theta (0 at z); x0, z: (B, L) clean and noisy ids; sigma, dsigma: (B,) total
    noise and its rate. The vocabulary sums run in log_score's precision (at least float32) with float64
    accumulators, and the per-token terms in float64 (the z != x0 constant and the log s_x0 / e term are both
    ~ log(K / e) / e and cancel)."""
    if log_score.dtype in (torch.float16, torch.bfloat16):
        log_score = log_score.float()
    K = log_score.shape[-1]
    sum_s = log_score.exp().sum(-1, dtype=torch.float64)  # (B, L) sum over all y (s_z = 1 included)
    sum_log = log_score.sum(-1, dtype=torch.float64)  # (B, L)
    log_s_z = log_score.gather(-1, z[..., None]).squeeze(-1).double()
    log_s_x0 = log_score.gather(-1, x0[..., None]).squeeze(-1).double()
    sig = sigma.double()[:, None]  # (B, 1)
    e = torch.where(sig < 0.5, torch.expm1(sig), torch.exp(sig) - 1.0)  # (B, 1) e^sigma - 1
    rho = e / (e + K)  # (B, 1) = p(y | x0) / p(x0 | x0) for y != x0
    pos = (sum_s - log_s_z.exp()) / K  # (1/K) sum_{y != z} s_y
    mean_log = (sum_log - log_s_z) / K  # (1/K) sum_{y != z} log s_y
    same = z == x0
    neg = torch.where(same, rho * mean_log, log_s_x0 / e + mean_log)
    const = torch.where(same, (K - 1) / K * rho * (torch.log(rho) - 1.0),
                        ((-torch.log(rho) - 1.0) / rho - (K - 2)) / K)
    return (dsigma.double()[:, None] * (pos - neg + const)).to(log_score.dtype)


class SEDD(Method):
    algo = "sedd"
    default_time_conditioning = True  # conditioned on the total noise sigma_t (the default sigma_input)

    def __init__(self, *, graph: str = "absorb", **kw):
        if graph not in GRAPHS:
            raise ValueError(f"unknown SEDD graph {graph!r}; expected one of {GRAPHS}")
        super().__init__(graph=graph, **kw)
        self.graph = graph

    def log_score(self, z: torch.Tensor, t: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """log s_theta(z_t, t): (B, L, K) log concrete scores (0 at the current token), for the samplers;
        with `rows` (B, L) bool only those positions, (m, K) row-major (as `Method.denoise`).

        The absorb scaling always uses the true total noise sigma_t, whatever the network is conditioned on."""
        raw = self.backbone(z, self.sigma_input(t)).float()  # (B, L, K)
        if self.graph == "uniform":
            return uniform_log_score(raw if rows is None else raw[rows], z if rows is None else z[rows])
        sigma = self.schedule.sigma(t)  # (B,)
        if rows is None:
            return absorb_log_score(raw, z, sigma)
        return absorb_log_score(raw[rows], z[rows], sigma[:, None].expand(z.shape)[rows])  # (m, K)

    def token_nll(self, batch, t, generator=None):
        x = batch["input_ids"]  # (B, L)
        alpha, dalpha = self.schedule.alpha(t), self.schedule.dalpha(t)  # (B,)
        sigma = self.schedule.sigma(t)  # (B,) total noise
        dsigma = -dalpha / alpha  # (B,) sigma'(t)
        if self.graph == "uniform":
            z = forward_uniform(x, alpha, self.hparams.vocab_size, generator)  # (B, L) e^{sigma Q} from x
            return sedd_uniform_loss(self.log_score(z, t), x, z, sigma, dsigma)
        z = forward_mask(x, alpha, self.mask_id, generator)  # (B, L)
        return sedd_absorb_loss(self.log_score(z, t), x, z, sigma, dsigma, self.mask_id)
