"""The DUO "Diffusion Transformation" operator and a cached table of it.

Reference: Sahoo et al., "The Diffusion Duality", arXiv:2506.10892, the Diffusion Transformation
operator (eqs. 10-12).

Take a one-hot token x = e_k in a vocabulary of size K and the Gaussian latent
w = a * e_k + s * eps with a^2 + s^2 = 1, eps ~ N(0, I_K). Then argmax(w) is distributed as
Cat(alpha * x + (1 - alpha) / K), where, with mu = a / s = sqrt(SNR),

    p(mu)  = P(argmax w = k) = integral phi(z - mu) Phi(z)^(K-1) dz
    alpha  = (K p - 1) / (K - 1)

(phi / Phi: standard normal pdf / cdf). In the log-SNR parameterisation gamma,
SNR = exp(-gamma), so mu = exp(-gamma / 2), a = sqrt(sigmoid(-gamma)), and

    dp/dmu         = integral (z - mu) phi(z - mu) Phi(z)^(K-1) dz
    dmu/dgamma     = -mu / 2
    dalpha/dgamma  = K / (K - 1) * dp/dmu * dmu/dgamma.

Numerical method
----------------
Both integrands are smooth (entire), decay like a Gaussian on the right and faster than any
exponential on the left, so the trapezoidal rule on a uniform grid converges geometrically in
1/h. The factor F(z) = Phi(z)^(K-1) does not depend on mu; it is evaluated once per call in log
space (`scipy.special.log_ndtr`, so K up to 2e5 and beyond is exact to rounding) on a global grid
z_j = j * h that starts where (K-1) log Phi(z) = -_TAIL_LOG and ends where F == 1 in double
precision. For each mu only the window of grid nodes within +-_HALF_WIDTH of mu contributes
(the Gaussian factor is below 1e-17 outside it), so p and dp/dmu for a chunk of mus are two
weighted sums over a (chunk x window) array; dp/dmu uses the integrated-by-parts form (positive
integrand, see `_p_and_dp`). Very large mu (F == 1 on the whole window) uses the first-order
tail expansion 1 - p ~= (K-1) Phi(-mu/sqrt 2), whose value there is below 1e-40.
Against adaptive quadrature the absolute error is ~1e-15 on alpha and ~1e-14 on dalpha/dgamma
for K in 2..200000, gamma in [-10, 10] (tests/test_integral.py asserts 1e-6).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
from scipy.optimize import brentq
from scipy.special import log_ndtr, ndtr

from dlm.utils import atomic_path

__all__ = [
    "transformation",
    "compute_cache",
    "save_cache",
    "load_cache",
    "IntegralTable",
    "CACHE_KEYS",
]

CACHE_KEYS = ("gamma", "alpha", "dalpha_dgamma", "vocab_size", "gamma_min", "gamma_max")

# Trapezoid step in z. The sharpest feature of the integrand is the rise of Phi(z)^(K-1), of
# width ~1/sqrt(2 log K) (~0.2 at K=2e5). The trapezoid error decays like exp(-c/h): against
# h=0.01 it is at rounding level (~1e-15) for h <= 0.06 and up to 2e-9 (dalpha, K=1e6) at
# h=0.1, for K in 2..1e6 and gamma in [-12, 12]; h=0.05 leaves a wide margin.
_STEP = 0.05
# Gaussian window half width around mu: integral of phi beyond 9 is 1e-19, of |u| phi(u) 1e-18.
_HALF_WIDTH = 9.0
# Below z_lo with (K-1) log Phi(z_lo) = -_TAIL_LOG the factor Phi^(K-1) is < e^-50 and falls off
# faster than exponentially, so that part of the integral is negligible.
_TAIL_LOG = 50.0
# Above this z, (K-1) * (1 - Phi(z)) < 1e-27 for every K <= 1e6: Phi(z)^(K-1) == 1 in float64.
_Z_SATURATE = 12.0
# Number of mus processed at once (bounds memory to a few (chunk x window) float64 arrays).
_CHUNK = 2048

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _check_vocab_size(vocab_size: Any) -> int:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
        raise ValueError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
    return int(vocab_size)


def _check_gamma(gamma: Any) -> np.ndarray:
    try:
        g = np.asarray(gamma, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"gamma must be an array of real numbers, got {gamma!r}") from exc
    bad = ~np.isfinite(g)
    if bad.any():
        idx = np.argwhere(bad)[0]
        where = tuple(int(i) for i in idx)
        raise ValueError(f"gamma must be finite, got {g[where]!r} at index {where}")
    return g


def _lower_limit(k: int) -> float:
    """z with (K-1) log Phi(z) = -_TAIL_LOG (Phi^(K-1) is negligible to the left of it)."""
    target = -_TAIL_LOG / (k - 1)
    return float(brentq(lambda z: log_ndtr(z) - target, -60.0, 60.0, xtol=1e-12))


def _p_and_dp(mu: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """p(mu) and dp/dmu for a 1-d array of finite mu >= 0 (float64).

    dp/dmu is evaluated in the integrated-by-parts form
        dp/dmu = integral (z - mu) phi(z - mu) F(z) dz = integral phi(z - mu) F'(z) dz,
        F'(z) = (K-1) phi(z) Phi(z)^(K-2),
    whose integrand is positive, so the derivative has an exact sign and no cancellation.
    """
    h = _STEP
    half = _HALF_WIDTH
    width = int(math.ceil(2.0 * half / h)) + 1  # nodes per window

    j_lo = int(math.floor(_lower_limit(k) / h))
    j_hi = int(math.ceil(_Z_SATURATE / h))
    z_grid = np.arange(j_lo, j_hi + 1, dtype=np.float64) * h
    log_cdf = log_ndtr(z_grid)
    # F_j = Phi(z_j)^(K-1) and F'_j, in log space. One sentinel node past the end stands in for
    # every node beyond the grid (indices are clipped to it): there F == 1 and F' == 0 to double
    # precision ((K-1) phi(12) < 1e-25).
    f_grid = np.append(np.exp((k - 1) * log_cdf), 1.0)
    df_grid = np.append((k - 1) * np.exp((k - 2) * log_cdf - 0.5 * z_grid * z_grid - _LOG_SQRT_2PI), 0.0)
    last = f_grid.size - 1

    p = np.empty_like(mu)
    dp = np.empty_like(mu)

    big = mu > _Z_SATURATE + half  # F == 1 on the whole window
    if big.any():
        # first-order tail: 1 - p = (K-1) Phi(-mu/sqrt 2) + O(K^2 Phi(-mu/sqrt 2)^2), < 1e-40 here
        m = np.minimum(mu[big], 1e100) / math.sqrt(2.0)
        p[big] = 1.0 - (k - 1) * ndtr(-m)
        dp[big] = (k - 1) * np.exp(-0.5 * m * m - _LOG_SQRT_2PI) / math.sqrt(2.0)

    idx_small = np.flatnonzero(~big)
    offsets = np.arange(width)
    for start in range(0, idx_small.size, _CHUNK):
        sel = idx_small[start : start + _CHUNK]
        m = mu[sel]
        # first global node of each window, never below the start of the grid
        j0 = np.maximum(np.floor((m - half) / h).astype(np.int64), j_lo)
        j = j0[:, None] + offsets[None, :]
        u = j * h - m[:, None]  # z_j - mu
        gauss = np.exp(-0.5 * u * u - _LOG_SQRT_2PI)
        col = np.minimum(j - j_lo, last)
        p[sel] = h * np.einsum("ij,ij->i", gauss, f_grid[col])
        dp[sel] = h * np.einsum("ij,ij->i", gauss, df_grid[col])
    return p, dp


def transformation(gamma: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Diffusion Transformation alpha(gamma) and its derivative dalpha/dgamma.

    Args:
        gamma: log-SNR values (any shape, finite); SNR = exp(-gamma).
        vocab_size: K >= 2.

    Returns:
        (alpha, dalpha_dgamma), float64 arrays with the shape of `gamma`.
    """
    k = _check_vocab_size(vocab_size)
    g = _check_gamma(gamma)
    flat = g.reshape(-1)
    # below gamma = -1400 the operator is exactly 1 in float64; clipping keeps mu finite
    mu = np.exp(-0.5 * np.maximum(flat, -1400.0))
    p, dp = _p_and_dp(mu, k)
    scale = k / (k - 1)
    alpha = np.clip(scale * p - 1.0 / (k - 1), 0.0, 1.0)
    dalpha = -0.5 * scale * mu * dp  # dalpha/dgamma = K/(K-1) * dp/dmu * dmu/dgamma
    return alpha.reshape(g.shape), dalpha.reshape(g.shape)


def compute_cache(vocab_size: int, gamma_min: float, gamma_max: float, points: int) -> dict:
    """alpha and dalpha/dgamma on np.linspace(gamma_min, gamma_max, points)."""
    k = _check_vocab_size(vocab_size)
    lo = float(gamma_min)
    hi = float(gamma_max)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"gamma_min and gamma_max must be finite, got {gamma_min!r}, {gamma_max!r}")
    if not lo < hi:
        raise ValueError(f"gamma_min must be < gamma_max, got {gamma_min!r} >= {gamma_max!r}")
    if isinstance(points, bool) or not isinstance(points, (int, np.integer)) or points < 2:
        raise ValueError(f"points must be an integer >= 2, got {points!r}")
    gamma = np.linspace(lo, hi, int(points))
    alpha, dalpha = transformation(gamma, k)
    return {
        "gamma": gamma,
        "alpha": alpha,
        "dalpha_dgamma": dalpha,
        "vocab_size": k,
        "gamma_min": lo,
        "gamma_max": hi,
    }


def save_cache(path: str | os.PathLike, cache: dict) -> None:
    """Write a cache dict to an .npz file atomically."""
    missing = [key for key in CACHE_KEYS if key not in cache]
    if missing:
        raise ValueError(f"cache is missing key(s) {missing}")
    arrays = {key: np.asarray(cache[key]) for key in CACHE_KEYS}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_cache(path: str | os.PathLike) -> dict:
    """Read a cache written by `save_cache` (plain arrays: a pickled object array is refused, never loaded)."""
    with np.load(path, allow_pickle=False) as data:
        missing = [key for key in CACHE_KEYS if key not in data.files]
        if missing:
            raise ValueError(f"integral cache {os.fspath(path)!r} is missing key(s) {missing}")
        try:
            return {
                "gamma": np.asarray(data["gamma"], dtype=np.float64),
                "alpha": np.asarray(data["alpha"], dtype=np.float64),
                "dalpha_dgamma": np.asarray(data["dalpha_dgamma"], dtype=np.float64),
                "vocab_size": int(data["vocab_size"]),
                "gamma_min": float(data["gamma_min"]),
                "gamma_max": float(data["gamma_max"]),
            }
        except ValueError as e:  # "Object arrays cannot be loaded when allow_pickle=False"
            raise ValueError(f"integral cache {os.fspath(path)!r}: {e}") from None


class IntegralTable:
    """Linear interpolation of a cached alpha(gamma), dalpha/dgamma(gamma) in torch.

    gamma outside [gamma_min, gamma_max] is clipped to the range. Works on any device and
    floating dtype: interpolation runs in float64 (float32 where float64 is unsupported, e.g.
    MPS) and the result has gamma's dtype (float32 for non-floating input).
    """

    def __init__(self, cache: dict):
        missing = [key for key in ("gamma", "alpha", "dalpha_dgamma") if key not in cache]
        if missing:
            raise ValueError(f"cache is missing key(s) {missing}")
        gamma = np.asarray(cache["gamma"], dtype=np.float64).reshape(-1)
        alpha = np.asarray(cache["alpha"], dtype=np.float64).reshape(-1)
        dalpha = np.asarray(cache["dalpha_dgamma"], dtype=np.float64).reshape(-1)
        if gamma.size < 2 or alpha.shape != gamma.shape or dalpha.shape != gamma.shape:
            raise ValueError(
                "cache arrays must be 1-d with the same length >= 2, got "
                f"gamma {gamma.shape}, alpha {alpha.shape}, dalpha_dgamma {dalpha.shape}"
            )
        if not np.all(np.diff(gamma) > 0):
            raise ValueError("cache gamma grid must be strictly increasing")
        self.vocab_size = int(cache["vocab_size"]) if "vocab_size" in cache else None
        self.gamma_min = float(gamma[0])
        self.gamma_max = float(gamma[-1])
        self._cpu = {
            "gamma": torch.from_numpy(gamma.copy()),
            "alpha": torch.from_numpy(alpha.copy()),
            "dalpha_dgamma": torch.from_numpy(dalpha.copy()),
        }
        self._on_device: dict[tuple[str, torch.dtype], dict[str, torch.Tensor]] = {}

    def _tables(self, device: torch.device) -> dict[str, torch.Tensor]:
        dtype = torch.float32 if device.type == "mps" else torch.float64
        key = (str(device), dtype)
        if key not in self._on_device:
            self._on_device[key] = {n: t.to(device=device, dtype=dtype) for n, t in self._cpu.items()}
        return self._on_device[key]

    def _interp(self, gamma: torch.Tensor, name: str) -> torch.Tensor:
        gamma = torch.as_tensor(gamma)
        out_dtype = gamma.dtype if gamma.is_floating_point() else torch.float32
        tab = self._tables(gamma.device)
        grid, values = tab["gamma"], tab[name]
        g = gamma.to(grid.dtype).clamp(grid[0], grid[-1])
        i = torch.searchsorted(grid, g.reshape(-1).contiguous(), right=True).clamp(1, grid.numel() - 1)
        g0, g1 = grid[i - 1], grid[i]
        v0, v1 = values[i - 1], values[i]
        w = (g.reshape(-1) - g0) / (g1 - g0)
        out = v0 + w * (v1 - v0)
        return out.reshape(gamma.shape).to(out_dtype)

    def alpha(self, gamma: torch.Tensor) -> torch.Tensor:
        return self._interp(gamma, "alpha")

    def alpha_nearest(self, gamma: torch.Tensor) -> torch.Tensor:
        """alpha at the nearest grid point (the original DUO code's lookup, duo.md Sec. 4.2), gamma clipped
        to the grid. The nearest point is found by bisection, so non-uniform grids work too."""
        gamma = torch.as_tensor(gamma)
        out_dtype = gamma.dtype if gamma.is_floating_point() else torch.float32
        tab = self._tables(gamma.device)
        grid, values = tab["gamma"], tab["alpha"]
        g = gamma.to(grid.dtype).clamp(grid[0], grid[-1]).reshape(-1).contiguous()
        i = torch.searchsorted(grid, g, right=True).clamp(1, grid.numel() - 1)
        i = torch.where(g - grid[i - 1] <= grid[i] - g, i - 1, i)  # ties go to the lower point
        return values[i].reshape(gamma.shape).to(out_dtype)

    def dalpha_dgamma(self, gamma: torch.Tensor) -> torch.Tensor:
        return self._interp(gamma, "dalpha_dgamma")

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "IntegralTable":
        return cls(load_cache(path))
