"""Tests for the DUO Diffusion Transformation operator (dlm.diffusion.integral)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.optimize import brentq
from scipy.special import erf, log_ndtr

from dlm.diffusion.integral import (
    IntegralTable,
    compute_cache,
    load_cache,
    save_cache,
    transformation,
)

# alpha(gamma) from an independent cache (good to ~1e-5); columns K=50257, K=30522
KNOWN = [
    (-4.0, 0.998694, 0.999063),
    (-3.55, 0.945470, None),
    (-3.5, 0.928342, 0.941703),
    (-3.0, 0.596236, 0.637870),
    (-2.5, 0.237973, 0.273719),
    (-2.0, 0.072032, 0.088802),
    (-1.85, 0.049319, None),
    (-1.75, 0.038283, 0.048680),
    (-1.0, 0.006186, 0.008490),
]


def quad_reference(gamma: float, k: int) -> tuple[float, float]:
    """alpha and dalpha/dgamma by adaptive quadrature (scipy QUADPACK), split at the features.

    The integrand phi(z - mu) Phi(z)^(K-1) is evaluated in log space. The interval is
    [max(mu - 12, z_min), mu + 12], where (K-1) log Phi(z_min) = -100, and it is split at mu and
    around z_K with (K-1) (1 - Phi(z_K)) = 1, where Phi^(K-1) rises.
    """
    mu = math.exp(-gamma / 2)
    km1 = k - 1

    def log_f(z: float) -> float:
        return -0.5 * (z - mu) ** 2 - 0.5 * math.log(2 * math.pi) + km1 * float(log_ndtr(z))

    z_min = brentq(lambda z: km1 * log_ndtr(z) + 100.0, -60.0, 60.0, xtol=1e-13)
    z_k = brentq(lambda z: math.log(km1) + float(log_ndtr(-z)), -60.0, 60.0, xtol=1e-13)
    lo, hi = max(mu - 12.0, z_min), mu + 12.0
    pts = sorted({p for p in (mu, z_k - 0.5, z_k, z_k + 0.5) if lo < p < hi})
    opts = dict(epsabs=1e-13, epsrel=1e-12, limit=500, points=pts or None)
    p, _ = integrate.quad(lambda z: math.exp(log_f(z)), lo, hi, **opts)
    dp, _ = integrate.quad(lambda z: (z - mu) * math.exp(log_f(z)), lo, hi, **opts)
    alpha = (k * p - 1) / km1
    dalpha = k / km1 * dp * (-mu / 2)
    return alpha, dalpha


@pytest.mark.parametrize("col, k", [(1, 50257), (2, 30522)])
def test_known_values(col, k):
    rows = [(row[0], row[col]) for row in KNOWN if row[col] is not None]
    gamma = np.array([g for g, _ in rows])
    expected = np.array([a for _, a in rows])
    alpha, _ = transformation(gamma, k)
    np.testing.assert_allclose(alpha, expected, rtol=0, atol=2e-5)


QUAD_GAMMAS = [-10.0, -6.5, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 2.0, 5.0, 10.0]


@pytest.mark.parametrize("k", [2, 3, 10, 1000, 50258, 200000])
def test_matches_adaptive_quadrature(k):
    alpha, dalpha = transformation(np.array(QUAD_GAMMAS), k)
    ref = np.array([quad_reference(g, k) for g in QUAD_GAMMAS])
    np.testing.assert_allclose(alpha, ref[:, 0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(dalpha, ref[:, 1], rtol=0, atol=1e-6)
    # the grid covers both ends of the range: alpha near 1 and near 0
    assert alpha[0] > 1 - 1e-6 and alpha[-1] < 5e-3


def test_k2_closed_form():
    """K=2: p = P(X1 > X2), X1 ~ N(mu, 1), X2 ~ N(0, 1); X1 - X2 ~ N(mu, 2) so p = Phi(mu/sqrt 2).

    alpha = 2p - 1 = erf(mu / 2) and dalpha/dgamma = d erf(mu/2)/dmu * (-mu/2)
    = (1/sqrt(pi)) exp(-mu^2/4) * (-mu/2).
    """
    gamma = np.linspace(-20, 20, 2001)
    mu = np.exp(-gamma / 2)
    alpha, dalpha = transformation(gamma, 2)
    np.testing.assert_allclose(alpha, erf(mu / 2), rtol=0, atol=1e-12)
    expected_d = -mu / 2 * np.exp(-(mu**2) / 4) / math.sqrt(math.pi)
    np.testing.assert_allclose(dalpha, expected_d, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [2, 50258, 200000])
def test_limits(k):
    alpha, dalpha = transformation(np.array([-60.0, -30.0, -15.0, 30.0, 60.0, 1e4]), k)
    np.testing.assert_allclose(alpha[:3], 1.0, atol=1e-12)
    np.testing.assert_allclose(alpha[3:], 0.0, atol=1e-6)
    assert np.all(np.isfinite(dalpha)) and np.all(np.abs(dalpha) < 1e-6)
    # extreme but finite gammas stay finite and in range
    a, d = transformation(np.array([-5000.0, 5000.0]), k)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(d))
    np.testing.assert_allclose(a, [1.0, 0.0], atol=1e-12)


@pytest.mark.parametrize("k", [2, 3, 1000, 50258, 200000])
def test_monotone_decreasing(k):
    gamma = np.linspace(-15, 15, 30001)
    alpha, dalpha = transformation(gamma, k)
    assert np.all((alpha >= 0) & (alpha <= 1))
    assert np.all(np.diff(alpha) <= 1e-14)
    assert np.all(dalpha <= 0)
    mid = (alpha > 1e-6) & (alpha < 1 - 1e-6)
    assert mid.sum() > 1000 and np.all(np.diff(alpha[mid]) < 0)


@pytest.mark.parametrize("k", [2, 10, 50258, 200000])
def test_derivative_matches_finite_difference(k):
    gamma = np.linspace(-10, 10, 401)
    step = 1e-4
    _, dalpha = transformation(gamma, k)
    up, _ = transformation(gamma + step, k)
    down, _ = transformation(gamma - step, k)
    np.testing.assert_allclose(dalpha, (up - down) / (2 * step), rtol=0, atol=1e-6)


def test_continuous_across_large_mu_branch():
    # mu = 21 (gamma = -2 log 21) switches to the tail expansion; values are continuous there
    g0 = -2 * math.log(21.0)
    gamma = np.array([g0 - 1e-9, g0 + 1e-9])
    for k in (2, 50258, 200000):
        alpha, dalpha = transformation(gamma, k)
        assert abs(alpha[0] - alpha[1]) < 1e-14 and abs(dalpha[0] - dalpha[1]) < 1e-14


def test_shape_preserved():
    gamma = np.linspace(-4, 4, 12).reshape(3, 4)
    alpha, dalpha = transformation(gamma, 100)
    assert alpha.shape == (3, 4) and dalpha.shape == (3, 4)
    assert alpha.dtype == np.float64 and dalpha.dtype == np.float64
    a0, _ = transformation(np.float64(-3.0), 100)
    assert a0.shape == ()


def test_compute_cache_and_round_trip(tmp_path):
    cache = compute_cache(50258, -5.0, -1.0, 1001)
    assert set(cache) >= {"gamma", "alpha", "dalpha_dgamma", "vocab_size", "gamma_min", "gamma_max"}
    np.testing.assert_array_equal(cache["gamma"], np.linspace(-5.0, -1.0, 1001))
    alpha, dalpha = transformation(cache["gamma"], 50258)
    np.testing.assert_array_equal(cache["alpha"], alpha)
    np.testing.assert_array_equal(cache["dalpha_dgamma"], dalpha)

    path = tmp_path / "sub" / "integral_50258.npz"
    save_cache(path, cache)
    assert path.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left
    loaded = load_cache(path)
    for key in ("gamma", "alpha", "dalpha_dgamma"):
        assert loaded[key].dtype == np.float64
        np.testing.assert_array_equal(loaded[key], cache[key])
    assert loaded["vocab_size"] == 50258 and isinstance(loaded["vocab_size"], int)
    assert loaded["gamma_min"] == -5.0 and loaded["gamma_max"] == -1.0

    # overwriting works, and a file without a key is rejected with a clear error
    save_cache(path, cache)
    bad = tmp_path / "bad.npz"
    with open(bad, "wb") as f:
        np.savez(f, gamma=cache["gamma"], alpha=cache["alpha"])
    with pytest.raises(ValueError, match="dalpha_dgamma"):
        load_cache(bad)
    with pytest.raises(ValueError, match="missing"):
        save_cache(tmp_path / "x.npz", {"gamma": cache["gamma"]})


def test_integral_table_interpolation():
    k = 50258
    table = IntegralTable(compute_cache(k, -5.0, -1.0, 20001))
    rng = np.random.default_rng(0)
    g = rng.uniform(-5.0, -1.0, 2000)
    alpha, dalpha = transformation(g, k)
    gt = torch.from_numpy(g)
    got_a = table.alpha(gt)
    got_d = table.dalpha_dgamma(gt)
    assert got_a.dtype == torch.float64 and got_a.shape == gt.shape
    np.testing.assert_allclose(got_a.numpy(), alpha, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got_d.numpy(), dalpha, rtol=0, atol=1e-6)

    # float32 in -> float32 out, any shape; out-of-range gamma is clipped to the end points
    g32 = torch.tensor([[-7.0, -5.0], [-1.0, 3.0]], dtype=torch.float32)
    out = table.alpha(g32)
    assert out.dtype == torch.float32 and out.shape == (2, 2)
    ends, _ = transformation(np.array([-5.0, -1.0]), k)
    np.testing.assert_allclose(out.numpy().ravel(), [ends[0], ends[0], ends[1], ends[1]], atol=1e-6)
    # exact at the grid nodes
    cache_g = torch.linspace(-5.0, -1.0, 20001, dtype=torch.float64)[::997]
    a_nodes, _ = transformation(cache_g.numpy(), k)
    np.testing.assert_allclose(table.alpha(cache_g).numpy(), a_nodes, rtol=0, atol=1e-14)


def test_integral_table_rejects_bad_cache():
    with pytest.raises(ValueError, match="missing"):
        IntegralTable({"gamma": np.zeros(3)})
    with pytest.raises(ValueError, match="increasing"):
        IntegralTable({"gamma": np.array([0.0, 0.0, 1.0]), "alpha": np.zeros(3), "dalpha_dgamma": np.zeros(3)})


@pytest.mark.parametrize("k", [1, 0, -5, 2.5, True, "50257", None])
def test_bad_vocab_size(k):
    with pytest.raises(ValueError, match="vocab_size"):
        transformation(np.array([0.0]), k)
    with pytest.raises(ValueError, match="vocab_size"):
        compute_cache(k, -1.0, 1.0, 10)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_bad_gamma(bad):
    with pytest.raises(ValueError, match="finite") as info:
        transformation(np.array([0.0, 1.0, bad]), 100)
    assert str(bad) in str(info.value) and "(2,)" in str(info.value)


def test_bad_cache_arguments():
    with pytest.raises(ValueError, match="gamma_min"):
        compute_cache(100, 1.0, 1.0, 10)
    with pytest.raises(ValueError, match="gamma_min"):
        compute_cache(100, 2.0, -2.0, 10)
    with pytest.raises(ValueError, match="finite"):
        compute_cache(100, -float("inf"), 1.0, 10)
    for points in (1, 0, 2.0, True):
        with pytest.raises(ValueError, match="points"):
            compute_cache(100, -1.0, 1.0, points)
