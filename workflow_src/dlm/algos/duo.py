"""DUO: uniform-state diffusion trained with the Gaussian-relaxation curriculum (Sahoo et al. 2025,
"The Diffusion Duality", arXiv 2506.10892, Sec. 4), and DUO++'s efficient curriculum (Chapter II,
arXiv 2602.21185).

Validation bound and plain training loss: exactly UDLM's Rao-Blackwellised NELBO (DUO eq. 7 /
App. A) with the model's noise schedule over the whole t range (inherited from `UDLM`).

Curriculum loss (DUO Sec. 4.2, optimiser steps start <= step <= end):
  1. t ~ stratified in [eps, 1]; gamma_t = gamma_min + t (gamma_max - gamma_min).
  2. Gaussian latent over the vocabulary (variance preserving, eq. 9):
     w = alpha~ onehot(x0) + sigma~ eps,  eps ~ N(0, I_K),  alpha~^2 = sigmoid(-gamma), sigma~^2 = sigmoid(gamma).
  3. Discrete alpha_t = T(alpha~_t) by the Diffusion Transformation (eqs. 10-12), from the integral
     cache (`transform: cache`) or the DUO++ degree-9 fit (`transform: poly9`), with dalpha/dt.
  4. z_t = argmax(w) is an exact sample of the uniform-state process with parameter alpha_t.
  5. The denoiser sees the relaxed input softmax(w / tau) @ E (`input: softmax`), or DUO++'s top-k
     sparse approximation of it (`input: topk`), conditioned on sigma = -log alpha_t.
  6. Loss = udlm_nelbo(log x_theta, x0, z_t, alpha_t, dalpha_t).

Cache lookup (`lookup`): `nearest` is the original code's (nearest grid point, dalpha/dt from a
forward finite difference with step 1e-3 in gamma, O(1e-3) bias) and the default; `linear` is ours
(linear interpolation of the cache and its analytic dalpha/dgamma).

Deviations from the original code (s-sahoo/duo), all deliberate:
  * The cache must have the model's vocabulary size K (our `integral` rule computes it with the
    model's K); the original reused a K = 50257 cache for a K = 50258 model.
  * The curriculum runs for start <= step <= end; the original ran it for every step <= end
    (start only moved its tau schedule, which is constant with the scripts' settings).
  * Top-k input: ids of the slots are a uniformly random ordered k-tuple; the partition function keeps
    the k-th noise value exactly. The latent z_t follows the original DUO++ rule (x0 whenever the true
    coordinate is among the top k, `topk_latent: in_topk`, the default: no deviation); the setting
    `topk_latent: argmax` (ours: x0 iff the true coordinate beats the largest noise value, the exact
    argmax of w) is one, see `topk_soft_input`.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from dlm.algos.udlm import UDLM, udlm_nelbo
from dlm.diffusion.integral import IntegralTable, load_cache
from dlm.diffusion.transform_fit import PolyTransform

CURRICULUM_DEFAULTS: dict[str, Any] = {
    "input": "softmax",  # softmax | topk
    "transform": "cache",  # cache | poly9
    "top_k": 2,
    "topk_latent": "in_topk",  # in_topk (the original DUO++ code) | argmax (ours: the exact argmax of w)
    "lookup": "nearest",  # nearest + forward difference (the original DUO code) | linear (ours)
    "start": 0,
    "end": 500_000,
    "tau": 1e-3,
    "gamma_min": -3.55,
    "gamma_max": -1.85,
}


def resolve_curriculum(curriculum: dict | None) -> dict:
    """The curriculum settings with the schema's defaults filled in, validated."""
    cur = dict(CURRICULUM_DEFAULTS)
    unknown = sorted(set(curriculum or {}) - set(cur))
    if unknown:
        raise ValueError(f"unknown curriculum key(s) {unknown}; expected a subset of {sorted(cur)}")
    cur.update(curriculum or {})
    if cur["input"] not in ("softmax", "topk"):
        raise ValueError(f"curriculum.input must be 'softmax' or 'topk', got {cur['input']!r}")
    if cur["transform"] not in ("cache", "poly9"):
        raise ValueError(f"curriculum.transform must be 'cache' or 'poly9', got {cur['transform']!r}")
    if cur["topk_latent"] not in ("argmax", "in_topk"):
        raise ValueError(f"curriculum.topk_latent must be 'argmax' or 'in_topk', got {cur['topk_latent']!r}")
    if cur["lookup"] not in ("nearest", "linear"):
        raise ValueError(f"curriculum.lookup must be 'nearest' or 'linear', got {cur['lookup']!r}")
    if int(cur["top_k"]) < 1:
        raise ValueError(f"curriculum.top_k must be >= 1, got {cur['top_k']}")
    if not 0 <= int(cur["start"]) <= int(cur["end"]):
        raise ValueError(f"curriculum needs 0 <= start <= end, got start={cur['start']}, end={cur['end']}")
    if not float(cur["tau"]) > 0:
        raise ValueError(f"curriculum.tau must be > 0, got {cur['tau']}")
    if not float(cur["gamma_min"]) < float(cur["gamma_max"]):
        raise ValueError(f"curriculum needs gamma_min < gamma_max, got {cur['gamma_min']} >= {cur['gamma_max']}")
    return cur


# --- Gaussian latent (DUO Sec. 4.1) -----------------------------------------------------------------

def gaussian_scales(gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha~, sigma~) of the variance-preserving Gaussian process at log-SNR gamma (DUO eq. 9):
    alpha~^2 = sigmoid(-gamma), sigma~^2 = sigmoid(gamma), so alpha~^2 + sigma~^2 = 1."""
    return torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()


def gaussian_latent(x: torch.Tensor, gamma: torch.Tensor, vocab_size: int,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """w = alpha~ onehot(x) + sigma~ eps over the vocabulary (DUO Sec. 4.1): (B, L, K) float32.

    x: (B, L) clean ids; gamma: (B,) log-SNR. argmax(w) ~ Cat(T(alpha~) x + (1 - T(alpha~)) / K).
    """
    a, s = gaussian_scales(gamma.float())  # (B,) each
    eps = torch.randn((*x.shape, vocab_size), generator=generator, device=x.device)  # (B, L, K)
    w = eps * s[:, None, None]
    on = a[:, None, None].expand(*x.shape, 1)  # (B, L, 1)
    return w.scatter_add_(-1, x[..., None], on)


# --- DUO++ top-k sparse input (Chapter II; duo.md Sec. 4.5) -----------------------------------------

def top_order_statistics(shape: tuple[int, ...], k: int, n: int, generator: torch.Generator | None = None,
                         device: torch.device | str = "cpu") -> torch.Tensor:
    """The k largest of n iid N(0, 1) draws, descending: (*shape, k) float64, O(k) work per draw.

    Uniform order statistics from the top (Renyi): U_(1) = u_1^(1/n), U_(j) = U_(j-1) u_j^(1/(n-j+1)),
    accumulated in log space; then value = Phi^{-1}(U) = -Phi^{-1}(1 - U), with 1 - U = -expm1(log U)
    so values near the top (U ~ 1 - 1/n, n ~ 5e4) keep full precision.
    """
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    u = torch.rand((*shape, k), generator=generator, device=device, dtype=torch.float64)  # (..., k)
    u = u.clamp_min(torch.finfo(torch.float64).tiny)
    remaining = n - torch.arange(k, device=device, dtype=torch.float64)  # (k,) n, n-1, ..., n-k+1
    log_u = torch.cumsum(torch.log(u) / remaining, dim=-1)  # (..., k) log U_(j), decreasing
    return -torch.special.ndtri(-torch.expm1(log_u))  # (..., k)


def distinct_ids(shape: tuple[int, ...], k: int, n: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """A uniformly random ordered k-tuple of distinct ints in [0, n) per draw: (*shape, k) int64.

    Sequential sampling without replacement: the j-th draw r ~ U{0, ..., n-j-1} is mapped to the r-th
    id not yet taken by stepping over the taken ids in ascending order.
    """
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    out = torch.empty((*shape, k), dtype=torch.long, device=device)  # (..., k)
    for j in range(k):
        r = torch.randint(0, n - j, shape, generator=generator, device=device)  # (...)
        taken, _ = out[..., :j].sort(dim=-1)  # (..., j) ascending
        for i in range(j):
            r = r + (r >= taken[..., i]).long()
        out[..., j] = r
    return out


def log_truncated_mgf(beta: float, scale: torch.Tensor, cap: torch.Tensor) -> torch.Tensor:
    """log E[exp(beta X) | X < cap] for X ~ N(0, scale^2), in closed form (duo.md Sec. 4.5):

    with s = beta scale and c = cap / scale:  s^2 / 2 + log Phi(c - s) - log Phi(c).
    """
    s = beta * scale
    c = cap / scale
    return 0.5 * s * s + torch.special.log_ndtr(c - s) - torch.special.log_ndtr(c)


def topk_soft_input(x: torch.Tensor, true_val: torch.Tensor, noise_vals: torch.Tensor, noise_ids: torch.Tensor,
                    sigma: torch.Tensor, tau: float, num_noise: int, latent: str = "in_topk"
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sparse approximation of softmax(w / tau) and the discrete latent z_t (`latent`; DUO++ top-k curriculum).

    Args:
        x: (B, L) clean ids; true_val: (B, L) the true coordinate w[x] = alpha~ + sigma~ eps_x.
        noise_vals: (B, L, k) the k largest of the num_noise = K - 1 noise coordinates, descending.
        noise_ids: (B, L, k) their vocabulary ids (distinct, never x).
        sigma: (B,) sigma~ (the noise coordinates are N(0, sigma~^2)).
    Returns:
        ids (B, L, k), weights (B, L, k) float32 with weights_i ~= softmax(w / tau)[ids_i], and z_t (B, L).

    The kept slots are the k largest of the k + 1 known coordinates (the noise top-k and the true
    one): the true coordinate takes the last slot when it beats the k-th noise value. Conditionally on
    the top-k noise values the other K - 1 - k noise coordinates are iid N(0, sigma~^2) truncated
    below v_k, so the partition function is approximated (beta = 1 / tau) by

        Z ~= sum_{k+1 known} exp(beta v) + (K - 1 - k) E[exp(beta X) | X < v_k]

    (the tail replaced by its mean, `log_truncated_mgf`), all in log space. The weights do not sum
    to 1 (the mass of the dropped coordinates is left out); the largest weight is >= 1 / (K + 1),
    so they never all underflow.

    z_t (`latent`): "in_topk" (the original DUO++ code, the default) takes z_t = x whenever the true
    coordinate is among the top k, else the id of the largest noise value (slot 0); "argmax" (ours)
    takes z_t = x only if the true coordinate beats the LARGEST noise value: the exact argmax of w, so
    z_t ~ Cat(alpha_t x + (1 - alpha_t) / K). For k > 1 the original rule is not argmax(w) and biases
    P(z_t = x) upward (K = 50258, k = 2: 0.680 instead of 0.596 at gamma = -3), i.e. the loss is
    computed for a latent that does not follow the process with parameter alpha_t.
    """
    k = noise_vals.shape[-1]
    beta = 1.0 / tau
    true_val = true_val.double()
    noise_vals = noise_vals.double()
    kept = true_val > noise_vals[..., -1]  # (B, L) the true coordinate displaces the k-th noise value
    vals = noise_vals.clone()
    vals[..., -1] = torch.where(kept, true_val, noise_vals[..., -1])
    ids = noise_ids.clone()
    ids[..., -1] = torch.where(kept, x, noise_ids[..., -1])
    # partition function in log space: the k + 1 known coordinates, then the truncated-normal tail
    known = torch.cat([beta * noise_vals, beta * true_val[..., None]], dim=-1)  # (B, L, k + 1)
    n_tail = num_noise - k
    if n_tail > 0:
        scale = sigma.double()[:, None].expand_as(true_val)  # (B, L)
        tail = math.log(n_tail) + log_truncated_mgf(beta, scale, noise_vals[..., -1])  # (B, L)
        known = torch.cat([known, tail[..., None]], dim=-1)  # (B, L, k + 2)
    log_z = torch.logsumexp(known, dim=-1, keepdim=True)  # (B, L, 1)
    weights = torch.exp(beta * vals - log_z).float()  # (B, L, k)
    if latent == "argmax":
        z = torch.where(true_val > noise_vals[..., 0], x, noise_ids[..., 0])  # (B, L) exact argmax
    elif latent == "in_topk":
        z = torch.where(kept, x, noise_ids[..., 0])  # (B, L) the original code's rule
    else:
        raise ValueError(f"latent must be 'argmax' or 'in_topk', got {latent!r}")
    return ids, weights, z


def sample_topk_input(x: torch.Tensor, gamma: torch.Tensor, vocab_size: int, k: int, tau: float,
                      generator: torch.Generator | None = None, latent: str = "in_topk"
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw the DUO++ sparse input without materialising w: (ids, weights, z_t) as `topk_soft_input`.

    The K - 1 noise coordinates enter only through their top-k order statistics and k distinct
    random non-true ids (exchangeability), the true coordinate through one Gaussian draw.
    """
    shape, device = tuple(x.shape), x.device
    a, s = gaussian_scales(gamma.double())  # (B,) each
    n = vocab_size - 1
    noise_vals = s[:, None, None] * top_order_statistics(shape, k, n, generator, device)  # (B, L, k)
    eps = torch.randn(shape, generator=generator, device=device, dtype=torch.float64)  # (B, L)
    true_val = a[:, None] + s[:, None] * eps  # (B, L)
    raw = distinct_ids(shape, k, n, generator, device)  # (B, L, k) in [0, K - 1)
    noise_ids = raw + (raw >= x[..., None]).long()  # skip the true id
    return topk_soft_input(x, true_val, noise_vals, noise_ids, s, tau, n, latent)


# --- the Diffusion Transformation on the curriculum range --------------------------------------------

class CacheTransform:
    """alpha(t), dalpha/dt from the cached integral (DUO Sec. 4.2; duo.md Sec. 4.2), t the curriculum time.

    lookup "nearest" (the original code): alpha at the nearest grid point, and
        dalpha/dt = (gamma_max - gamma_min) (alpha(gamma + h) - alpha(gamma)) / h,  h = 1e-3,
    both values looked up the same way. lookup "linear" (ours): linear interpolation of the cached
    alpha(gamma) and of its analytic dalpha/dgamma, times dgamma/dt = gamma_max - gamma_min.
    """

    FD_STEP = 1e-3  # the original's forward-difference step in gamma

    def __init__(self, table: IntegralTable, gamma_min: float, gamma_max: float, lookup: str = "nearest"):
        if lookup not in ("nearest", "linear"):
            raise ValueError(f"lookup must be 'nearest' or 'linear', got {lookup!r}")
        self.table = table
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)
        self.lookup = lookup

    def alpha_dalpha(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        span = self.gamma_max - self.gamma_min
        gamma = self.gamma_min + t.double() * span  # (B,)
        if self.lookup == "linear":
            return self.table.alpha(gamma), self.table.dalpha_dgamma(gamma) * span
        h = self.FD_STEP
        alpha = self.table.alpha_nearest(gamma)
        return alpha, (self.table.alpha_nearest(gamma + h) - alpha) / h * span


def load_cache_transform(path: str | os.PathLike | None, vocab_size: int, gamma_min: float,
                         gamma_max: float, lookup: str = "nearest") -> CacheTransform:
    """Read and check the integral cache: its K must be the model's, its gamma grid must cover the curriculum."""
    if path is None:
        raise ValueError("curriculum.transform 'cache' needs integral_path (the `integral` rule's .npz); "
                         "use transform 'poly9' to train without a cache")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"integral cache {os.fspath(path)!r} not found (it is produced by the `integral` rule)")
    cache = load_cache(path)
    if cache["vocab_size"] != vocab_size:
        raise ValueError(f"integral cache {os.fspath(path)!r} was computed for vocab_size {cache['vocab_size']}, "
                         f"but the model has vocab_size {vocab_size} (K must match)")
    table = IntegralTable(cache)
    if not (table.gamma_min <= gamma_min and gamma_max <= table.gamma_max):
        raise ValueError(f"curriculum gamma range [{gamma_min}, {gamma_max}] is not inside the integral cache's "
                         f"range [{table.gamma_min}, {table.gamma_max}] ({os.fspath(path)!r})")
    return CacheTransform(table, gamma_min, gamma_max, lookup)


# --- the method -------------------------------------------------------------------------------------

class DUO(UDLM):
    """UDLM's bound for evaluation; the Gaussian curriculum loss for training steps start..end."""

    algo = "duo"

    def __init__(self, *, curriculum: dict | None = None, integral_path: str | os.PathLike | None = None,
                 **kw: Any):
        cur = resolve_curriculum(curriculum)
        super().__init__(curriculum=cur, integral_path=None if integral_path is None else os.fspath(integral_path),
                         **kw)
        if cur["input"] == "topk" and not int(cur["top_k"]) <= self.hparams.vocab_size - 1:
            raise ValueError(f"curriculum.top_k={cur['top_k']} exceeds the {self.hparams.vocab_size - 1} noise "
                             "coordinates")
        self._transform = None  # built at the first curriculum step: evaluation never reads the cache

    def in_curriculum(self, step: int) -> bool:
        cur = self.hparams.curriculum
        return int(cur["start"]) <= step <= int(cur["end"])

    def transform(self) -> CacheTransform | PolyTransform:
        """The Diffusion Transformation on the curriculum range, built lazily."""
        if self._transform is None:
            cur = self.hparams.curriculum
            lo, hi = float(cur["gamma_min"]), float(cur["gamma_max"])
            if cur["transform"] == "poly9":
                self._transform = PolyTransform(self.hparams.vocab_size, lo, hi, degree=9)
            else:
                self._transform = load_cache_transform(self.hparams.integral_path, self.hparams.vocab_size, lo, hi,
                                                       cur["lookup"])
        return self._transform

    def denoise_relaxed(self, inp: torch.Tensor | tuple[torch.Tensor, torch.Tensor], alpha: torch.Tensor
                        ) -> torch.Tensor:
        """log x_theta (B, L, K) for a relaxed input, conditioned on sigma = -log alpha_t (discrete alpha)."""
        if self.hparams.time_conditioning:
            sigma = -torch.log(alpha).float()  # (B,)
        else:
            sigma = torch.zeros_like(alpha, dtype=torch.float32)
        logits = self.backbone(inp, sigma).float()  # (B, L, K)
        return torch.log_softmax(logits, dim=-1)

    def curriculum_token_nll(self, batch: dict, t: torch.Tensor, generator: torch.Generator | None = None
                             ) -> torch.Tensor:
        """Per-token curriculum loss (B, L) at curriculum times t (B,) (DUO Sec. 4.2; DUO++ top-k input)."""
        x = batch["input_ids"]  # (B, L)
        cur = self.hparams.curriculum
        K = self.hparams.vocab_size
        gamma = float(cur["gamma_min"]) + t.double() * (float(cur["gamma_max"]) - float(cur["gamma_min"]))  # (B,)
        alpha, dalpha = self.transform().alpha_dalpha(t)  # (B,) float64
        alpha, dalpha = alpha.to(x.device), dalpha.to(x.device)
        if cur["input"] == "softmax":
            w = gaussian_latent(x, gamma, K, generator)  # (B, L, K)
            z = w.argmax(dim=-1)  # (B, L)
            inp = torch.softmax(w / float(cur["tau"]), dim=-1)  # (B, L, K)
        else:
            ids, weights, z = sample_topk_input(x, gamma, K, int(cur["top_k"]), float(cur["tau"]), generator,
                                                cur["topk_latent"])
            inp = (ids, weights)  # (B, L, k) each
        return udlm_nelbo(self.denoise_relaxed(inp, alpha), x, z, alpha, dalpha)

    def loss(self, batch: dict, step: int = 0, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training objective: the curriculum loss for start <= step <= end, the plain DUO bound otherwise."""
        if not self.in_curriculum(step):
            return self.nelbo(batch, generator)
        ids = batch["input_ids"]
        t = self.sample_times(ids.shape[0], generator, ids.device)  # (B,)
        nll = self.curriculum_token_nll(batch, t, generator)  # (B, L)
        mask = self.loss_mask(batch).to(nll.dtype)  # (B, L)
        return (nll * mask).sum(), mask.sum()
