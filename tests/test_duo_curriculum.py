"""DUO curriculum and DUO++ efficient curriculum (dlm.algos.duo, dlm.diffusion.transform_fit)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate
from scipy.special import ndtr, ndtri

from dlm.algos import get_method
from dlm.algos.duo import (
    DUO,
    CacheTransform,
    distinct_ids,
    gaussian_latent,
    gaussian_scales,
    load_cache_transform,
    log_truncated_mgf,
    resolve_curriculum,
    sample_topk_input,
    top_order_statistics,
    topk_soft_input,
)
from dlm.diffusion.integral import IntegralTable, compute_cache, save_cache, transformation
from dlm.diffusion.transform_fit import PolyTransform
from dlm.models.dit import DiT, make_config

OWT = (-3.55, -1.85)
# alpha(gamma) for K = 50257 from the original integral cache (duo.md Sec. 4.3), on the OWT range
TABLE_OWT = [(-3.55, 0.945470), (-3.5, 0.928342), (-3.0, 0.596236), (-2.5, 0.237973), (-2.0, 0.072032),
             (-1.85, 0.049319)]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is ~30x faster than two on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def alpha_estimate(hits: torch.Tensor, k: int) -> tuple[float, float]:
    """alpha = (K p - 1) / (K - 1) from the hit rate p = P(z_t = x0), and its Monte-Carlo standard error."""
    p = hits.double().mean().item()
    se = math.sqrt(p * (1 - p) / hits.numel()) * k / (k - 1)
    return (k * p - 1) / (k - 1), se


def small_duo(vocab_size=32, block_length=16, time_conditioning=True, **curriculum):
    """A nano DUO (poly9 transform unless given), as conftest.make_module builds other methods."""
    cur = {"transform": "poly9"} | curriculum
    return DUO(vocab_size=vocab_size, block_length=block_length, special_ids={"bos": 0, "eos": 0, "pad": None,
               "mask": 1}, tokenizer_dir="unused", model={"size": "nano", "dropout": 0.0},
               time_conditioning=time_conditioning, curriculum=cur)


def batch_of(x: torch.Tensor) -> dict:
    return {"input_ids": x, "attention_mask": torch.ones_like(x)}


# --- the latent: argmax(w) is the uniform-state process with alpha = T(alpha~) ---------------------

def test_argmax_of_gaussian_latent_has_transformation_alpha():
    K, gammas = 50, [-2.0, -1.0, 0.0, 1.0]
    expected, _ = transformation(np.array(gammas), K)
    g = torch.Generator().manual_seed(0)
    for gamma, alpha in zip(gammas, expected):
        x = torch.randint(0, K, (60, 1000), generator=g)  # (B, L)
        w = gaussian_latent(x, torch.full((60,), gamma), K, g)  # (B, L, K)
        est, se = alpha_estimate(w.argmax(-1) == x, K)
        assert abs(est - alpha) < 4.5 * se, (gamma, est, alpha, se)
    # the non-true winners are uniform over the other K - 1 ids (offsets from x0)
    off = (w.argmax(-1) - x) % K
    counts = torch.bincount(off[off != 0], minlength=K)[1:].double()
    assert (counts - counts.mean()).abs().max() < 5 * counts.mean().sqrt()


# --- DUO++ top-k input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("K, gammas", [(50, [-2.0, -1.0, 0.0]), (50258, [-3.5, -3.0, -2.5])])
def test_topk_faithful_rule_matches_alpha_biased_rule_does_not(K, gammas):
    """z_t = x0 iff the true coordinate beats the largest noise value: P(z_t = x0) follows T.
    The original code's rule (x0 whenever it is in the top k) is far off at k = 2."""
    expected, _ = transformation(np.array(gammas), K)
    g = torch.Generator().manual_seed(1)
    for gamma, alpha in zip(gammas, expected):
        x = torch.randint(0, K, (50, 1000), generator=g)
        state = g.get_state()
        ids, weights, z = sample_topk_input(x, torch.full((50,), gamma), K, 2, 1e-3, g, latent="argmax")
        est, se = alpha_estimate(z == x, K)
        assert abs(est - alpha) < 4.5 * se, (gamma, est, alpha)
        biased = torch.where(ids[..., -1] == x, x, ids[..., 0])  # x0 if it took a top-k slot
        g_copy = torch.Generator().set_state(state)
        _, _, z_orig = sample_topk_input(x, torch.full((50,), gamma), K, 2, 1e-3, g_copy)
        assert torch.equal(z_orig, biased)  # the default `topk_latent: in_topk` is the original rule on the same draws
        est_b, se_b = alpha_estimate(biased == x, K)
        assert est_b - alpha > 20 * se_b, (gamma, est_b, alpha)
        assert ((ids == x[..., None]).sum(-1) <= 1).all()  # x0 only ever in the last slot, once
        assert (weights >= 0).all() and (weights.sum(-1) <= 1 + 1e-6).all()
        assert (weights.max(-1).values >= 1.0 / (K + 1)).all()
    if K == 50258:  # the brief's numbers for the biased rule at gamma = -2.5: 0.306 instead of 0.238
        assert abs(est_b - 0.306) < 0.01 and abs(alpha - 0.238) < 1e-3


def test_topk_latent_rules_on_hand_set_coordinates():
    """The two latent rules on hand-set top-2 coordinates (k = 2): the original DUO++ rule (the default,
    `in_topk`) takes x0 whenever the true coordinate displaces the 2nd noise value; ours (`argmax`) only when
    it beats the 1st. Hand-derived: rows (true 0.9 > 0.8 > 0.5) -> x0 both; (0.6 between 0.8 and 0.5) -> x0
    under in_topk, the 1st noise id under argmax; (0.1 < 0.5) -> the 1st noise id both."""
    x = torch.tensor([[7, 7, 7]])  # (1, 3)
    true_val = torch.tensor([[0.9, 0.6, 0.1]])
    noise_vals = torch.tensor([[[0.8, 0.5]] * 3])  # (1, 3, 2) descending
    noise_ids = torch.tensor([[[3, 4]] * 3])
    sigma = torch.tensor([0.5])
    _, _, z_orig = topk_soft_input(x, true_val, noise_vals, noise_ids, sigma, 1e-3, 49)
    _, _, z_ours = topk_soft_input(x, true_val, noise_vals, noise_ids, sigma, 1e-3, 49, latent="argmax")
    assert z_orig.tolist() == [[7, 7, 3]] and z_ours.tolist() == [[7, 3, 3]]
    assert resolve_curriculum(None)["topk_latent"] == "in_topk"


def full_and_topk(K: int, k: int, tau: float, gamma: float, B: int = 40, L: int = 500, seed: int = 2):
    """One full Gaussian latent w per token, its exact softmax, and the top-k construction from the
    same w's top-k noise coordinates (so both paths share the noise)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, K, (B, L), generator=g)
    gam = torch.full((B,), gamma)
    w = gaussian_latent(x, gam, K, g).double()  # (B, L, K)
    _, s = gaussian_scales(gam.double())
    true_val = w.gather(-1, x[..., None]).squeeze(-1)  # (B, L)
    noise = w.scatter(-1, x[..., None], -math.inf)  # (B, L, K) true coordinate removed
    vals, nids = noise.topk(k, dim=-1)  # (B, L, k) descending
    ids, weights, z = topk_soft_input(x, true_val, vals, nids, s, tau, K - 1, latent="argmax")
    return x, w, true_val, vals, ids, weights, z


def test_topk_input_matches_full_softmax_input():
    """tau = 1e-3, k = 2: the embedded sparse input equals softmax(w / tau) @ E except on the rare
    tokens whose third-largest coordinate is within ~tau of the second (its mass is dropped)."""
    K, tau = 50, 1e-3
    E = torch.randn(K, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for gamma in (-2.0, 0.0):
        x, w, _, _, ids, weights, z = full_and_topk(K, 2, tau, gamma)
        assert torch.equal(z, w.argmax(-1))  # same noise: the faithful z_t IS argmax(w)
        exact = torch.softmax(w / tau, -1) @ E  # (B, L, d)
        sparse = (weights.double()[..., None] * E[ids]).sum(-2)  # (B, L, d)
        rel = ((sparse - exact).norm(dim=-1) / exact.norm(dim=-1)).flatten()
        assert rel.mean() < 1e-3 and rel.quantile(0.99) < 1e-3 and rel.median() < 1e-9, (gamma, rel.mean())
        assert ((weights.double() - torch.softmax(w / tau, -1).gather(-1, ids)).abs() < 1e-3).double().mean() > 0.99


def test_topk_weights_exact_without_tail():
    """K = k + 1: the k + 1 known coordinates are all of w, so Z is exact and each kept weight is the
    exact softmax probability (any tau)."""
    for tau in (1.0, 0.2, 1e-3):
        x, w, _, _, ids, weights, z = full_and_topk(3, 2, tau, -0.5, B=8, L=50)
        p = torch.softmax(w / tau, -1).gather(-1, ids)  # (B, L, 2)
        assert torch.allclose(weights.double(), p, atol=1e-6)
        assert torch.equal(z, w.argmax(-1))
        assert torch.equal(ids.sort(-1).values, w.topk(2, -1).indices.sort(-1).values)  # the 2 largest kept


def test_topk_partition_tail_is_the_conditional_mean():
    """Z_approx = (known terms) + (K-1-k) E[exp(beta X) | X < v_k] is E[Z | known coordinates], so its
    mean over draws equals the exact Z's (tau = 0.3, where the tail is 60% of Z). One tail term
    too many or too few moves the mean by > 10 standard errors."""
    K, k, tau, gamma = 50, 2, 0.3, -2.0
    x, w, true_val, vals, ids, weights, _ = full_and_topk(K, k, tau, gamma)
    beta = 1.0 / tau
    m = torch.maximum(vals[..., 0], true_val)  # (B, L) largest coordinate, for scale
    slot0 = torch.where(ids[..., 0] == x, true_val, vals[..., 0])
    z_approx = torch.exp(beta * (slot0 - m)) / weights[..., 0].double()  # Z_approx e^{-beta m}
    z_exact = torch.exp(beta * (w - m[..., None])).sum(-1)
    d = (z_approx - z_exact).flatten()
    se = d.std().item() / math.sqrt(d.numel())
    assert abs(d.mean().item()) < 4 * se
    _, s = gaussian_scales(torch.tensor(gamma, dtype=torch.float64))
    one_term = torch.exp(log_truncated_mgf(beta, s.expand_as(m), vals[..., -1]) - beta * m).mean().item()
    assert one_term > 10 * se


@pytest.mark.parametrize("beta, scale, cap", [(3.0, 0.5, 0.2), (10.0, 1.0, 1.5), (0.5, 2.0, -1.0), (20.0, 0.3, 0.9)])
def test_log_truncated_mgf_against_quadrature(beta, scale, cap):
    dens = lambda v: math.exp(beta * v - 0.5 * (v / scale) ** 2) / (scale * math.sqrt(2 * math.pi))  # noqa: E731
    num, _ = integrate.quad(dens, -np.inf, cap, epsabs=0, epsrel=1e-12)
    ref = math.log(num) - math.log(ndtr(cap / scale))
    got = log_truncated_mgf(beta, torch.tensor(scale, dtype=torch.float64), torch.tensor(cap, dtype=torch.float64))
    assert abs(got.item() - ref) < 1e-8
    # the papers' beta = 1/tau = 1000 stays finite in log space
    assert torch.isfinite(log_truncated_mgf(1000.0, torch.tensor(0.37, dtype=torch.float64),
                                            torch.tensor(1.4, dtype=torch.float64)))


@pytest.mark.parametrize("n", [49, 50257])
def test_order_statistics_match_max_of_gaussians(n):
    """v_1 ~ max of n N(0,1): P(v_1 <= q) = Phi(q)^n; v_2: Phi^n + n Phi^(n-1) (1 - Phi)."""
    draws = 200_000
    v = top_order_statistics((draws,), 3, n, torch.Generator().manual_seed(4))  # (draws, 3)
    assert (v[:, :-1] >= v[:, 1:]).all()  # descending
    for p in (0.05, 0.25, 0.5, 0.75, 0.95):
        q = ndtri(p ** (1.0 / n))  # p-quantile of the max
        frac = (v[:, 0] <= q).double().mean().item()
        assert abs(frac - p) < 4.5 * math.sqrt(p * (1 - p) / draws), (p, frac)
        c = ndtr(q)
        p2 = c**n + n * c ** (n - 1) * (1 - c)
        frac2 = (v[:, 1] <= q).double().mean().item()
        assert abs(frac2 - p2) < 4.5 * math.sqrt(p2 * (1 - p2) / draws), (p2, frac2)
    # mean of the max: integral of x d(Phi^n) = integral of x n phi Phi^(n-1)
    mean_max, _ = integrate.quad(lambda z: z * n * math.exp(-0.5 * z * z + (n - 1) * math.log(ndtr(z)))
                                 / math.sqrt(2 * math.pi), -10, 10, points=[ndtri(1 - 1 / n)], limit=200)
    assert abs(v[:, 0].mean().item() - mean_max) < 4.5 * v[:, 0].std().item() / math.sqrt(draws)


def test_order_statistics_match_brute_force_topk():
    n, draws = 49, 100_000
    g = torch.Generator().manual_seed(5)
    fast = top_order_statistics((draws,), 2, n, g)
    brute = torch.randn(draws, n, generator=g, dtype=torch.float64).topk(2, -1).values
    for j in range(2):
        for p in (0.1, 0.5, 0.9):
            q = brute[:, j].quantile(p)
            frac = (fast[:, j] <= q).double().mean().item()
            assert abs(frac - p) < 0.01


def test_distinct_ids_uniform_ordered_tuples():
    n, k, draws = 5, 2, 100_000
    ids = distinct_ids((draws,), k, n, torch.Generator().manual_seed(6))  # (draws, 2)
    assert (ids[:, 0] != ids[:, 1]).all() and ids.min() >= 0 and ids.max() < n
    counts = torch.bincount(ids[:, 0] * n + ids[:, 1], minlength=n * n).double().view(n, n)
    cells = counts[~torch.eye(n, dtype=torch.bool)]  # the 20 ordered pairs
    expected = draws / (n * (n - 1))
    assert (cells - expected).abs().max() < 5 * math.sqrt(expected)
    perms = distinct_ids((1000,), 4, 4, torch.Generator().manual_seed(7))
    assert torch.equal(perms.sort(-1).values, torch.arange(4).expand(1000, 4))


def test_dit_embeds_weighted_id_tuples():
    dit = DiT(make_config(20, 8, "nano", 0.0))
    g = torch.Generator().manual_seed(8)
    ids = torch.randint(0, 20, (2, 8, 3), generator=g)
    weights = torch.rand(2, 8, 3, generator=g)
    got = dit.embed((ids, weights))  # (B, L, d)
    expected = torch.einsum("blk,blkd->bld", weights, dit.embedding[ids])
    assert torch.allclose(got, expected, atol=1e-6)
    dense = torch.zeros(2, 8, 20).scatter_add_(-1, ids, weights)  # same weights on the float path
    assert torch.allclose(dit.embed(dense), expected, atol=1e-5)
    assert torch.equal(dit.embed(ids[..., 0]), dit.embedding[ids[..., 0]])


# --- the transformation on the curriculum range ----------------------------------------------------------

def test_poly9_fit_accuracy_owt():
    t = np.linspace(0.0, 1.0, 20001)
    fit = PolyTransform(50258, *OWT)
    alpha, dalpha = (v.numpy() for v in fit.alpha_dalpha(torch.from_numpy(t)))
    exact, exact_d = transformation(OWT[0] + t * (OWT[1] - OWT[0]), 50258)
    assert np.abs(alpha - exact).max() < 2e-5  # measured 8.3e-6 (the brief's uniform-grid fit: 2.4e-5)
    span = OWT[1] - OWT[0]
    assert np.abs(dalpha - exact_d * span).max() < 5e-3 * np.abs(exact_d * span).max()  # measured 1.1e-3
    assert (dalpha < 0).all()
    table = PolyTransform(50257, *OWT)
    for gamma, ref in TABLE_OWT:
        a, _ = table.alpha_dalpha(torch.tensor([(gamma - OWT[0]) / span], dtype=torch.float64))
        assert abs(a.item() - ref) < 3e-5, (gamma, a.item(), ref)


@pytest.mark.parametrize("lookup,points,tol_a,tol_d", [("linear", 4001, 1e-5, 1e-3), ("nearest", 100000, 2e-5, 2e-3)])
def test_cache_lookup_agrees_with_integral(tmp_path, lookup, points, tol_a, tol_d):
    """Ours (linear, analytic derivative) even on a coarse grid, and the original's on its 100000-point
    grid (nearest point: half a grid step times the slope; forward difference with step 1e-3: O(h) bias)."""
    path = tmp_path / "integral.npz"
    save_cache(path, compute_cache(50258, -5.0, -1.0, points))
    tr = load_cache_transform(path, 50258, *OWT, lookup=lookup)
    t = torch.linspace(0.0, 1.0, 37, dtype=torch.float64)
    alpha, dalpha = tr.alpha_dalpha(t)
    span = OWT[1] - OWT[0]
    exact, exact_d = transformation(OWT[0] + t.numpy() * span, 50258)
    assert np.abs(alpha.numpy() - exact).max() < tol_a
    assert np.abs(dalpha.numpy() - exact_d * span).max() < tol_d * span
    for gamma, ref in TABLE_OWT:  # K = 50257 table vs the K = 50258 cache: within 2e-5
        a, _ = tr.alpha_dalpha(torch.tensor([(gamma - OWT[0]) / span], dtype=torch.float64))
        assert abs(a.item() - ref) < 2e-5 + tol_a


def test_nearest_lookup_is_the_original_rule():
    """alpha_nearest returns the grid value at round((N - 1)(gamma - gamma_min) / span) on a uniform grid
    (duo.md Sec. 4.2), clips outside the grid, and the forward difference uses the same lookup."""
    grid = np.linspace(-5.0, -1.0, 9)
    table = IntegralTable({"gamma": grid, "alpha": np.arange(9.0), "dalpha_dgamma": np.zeros(9)})
    gam = torch.tensor([-5.3, -4.8, -4.7, -2.9, -1.0, 0.4], dtype=torch.float64)
    idx = np.clip(np.round((9 - 1) * (gam.numpy() + 5.0) / 4.0), 0, 8)
    assert torch.equal(table.alpha_nearest(gam), torch.from_numpy(idx))
    tr = CacheTransform(table, -5.0, -1.0, "nearest")
    t = torch.tensor([0.1, 0.5])  # gamma -4.6 and -3.0: h = 1e-3 crosses no rounding boundary, difference 0
    alpha, dalpha = tr.alpha_dalpha(t)
    assert torch.equal(alpha, torch.tensor([1.0, 4.0], dtype=torch.float64)) and torch.equal(dalpha, torch.zeros(2, dtype=torch.float64))
    t = torch.tensor([(-4.7505 + 5.0) / 4.0], dtype=torch.float64)  # just below a boundary: one grid step over h
    _, dalpha = tr.alpha_dalpha(t)
    assert torch.allclose(dalpha, torch.tensor([1.0 / 1e-3 * 4.0], dtype=torch.float64))


def test_cache_errors_name_the_problem(tmp_path):
    path = tmp_path / "k31.npz"
    save_cache(path, compute_cache(31, -3.0, -1.0, 50))
    m = small_duo(transform="cache", gamma_min=-2.5, gamma_max=-1.5)
    m.hparams["integral_path"] = str(path)
    x = torch.randint(0, 32, (2, 16))
    with pytest.raises(ValueError, match=r"vocab_size 31.*vocab_size 32"):
        m.loss(batch_of(x), step=0)
    path = tmp_path / "k32.npz"
    save_cache(path, compute_cache(32, -3.0, -1.0, 50))
    m = small_duo(transform="cache")  # OWT range [-3.55, -1.85]
    m.hparams["integral_path"] = str(path)
    with pytest.raises(ValueError, match=r"\[-3.55, -1.85\].*\[-3.0, -1.0\]"):
        m.loss(batch_of(x), step=0)
    m = small_duo(transform="cache", gamma_min=-2.5, gamma_max=-1.5)
    with pytest.raises(ValueError, match="integral_path"):
        m.loss(batch_of(x), step=0)
    with pytest.raises(ValueError, match="unknown curriculum"):
        small_duo(bogus=1)


# --- the method ----------------------------------------------------------------------------------------

class OracleBackbone(torch.nn.Module):
    """Logits peaked at the clean tokens (a perfect denoiser), or random logits; records its inputs."""

    def __init__(self, x: torch.Tensor | None, K: int):
        super().__init__()
        self.x, self.K = x, K
        self.inputs, self.sigmas = [], []

    def forward(self, inp, sigma=None, **_):
        self.inputs.append(inp)
        self.sigmas.append(sigma)
        if self.x is not None:
            return 1e4 * F.one_hot(self.x, self.K).float()
        B, L = self.x_shape
        return 3 * torch.randn(B, L, self.K, generator=torch.Generator().manual_seed(len(self.inputs)))


@pytest.mark.parametrize("inp", ["softmax", "topk"])
def test_curriculum_loss_zero_for_perfect_denoiser_else_nonnegative(inp):
    K = 32
    m = small_duo(K, input=inp)
    g = torch.Generator().manual_seed(9)
    x = torch.randint(0, K, (8, 16), generator=g)
    m.backbone = OracleBackbone(x, K)
    t = m.sample_times(8, g)
    nll = m.curriculum_token_nll(batch_of(x), t, g)  # (B, L)
    assert nll.shape == (8, 16) and nll.abs().max() < 1e-5
    m.backbone = OracleBackbone(None, K)
    m.backbone.x_shape = (8, 16)
    nll = m.curriculum_token_nll(batch_of(x), t, g)
    assert (nll >= -1e-6).all() and nll.mean() > 0.1


@pytest.mark.parametrize("inp, time_conditioning", [("softmax", True), ("topk", True), ("softmax", False)])
def test_curriculum_feeds_relaxed_input_and_discrete_sigma(inp, time_conditioning):
    K = 32
    m = small_duo(K, time_conditioning=time_conditioning, input=inp)
    rec = OracleBackbone(torch.zeros(4, 16, dtype=torch.long), K)
    m.backbone = rec
    x = torch.randint(0, K, (4, 16))
    m.loss(batch_of(x), step=0, generator=torch.Generator().manual_seed(10))
    t = m.sample_times(4, torch.Generator().manual_seed(10))  # the same first draw as the loss
    alpha, _ = m.transform().alpha_dalpha(t)
    expected = -torch.log(alpha).float() if time_conditioning else torch.zeros(4)
    assert torch.allclose(rec.sigmas[-1], expected, atol=1e-6)
    if inp == "softmax":
        soft = rec.inputs[-1]  # (B, L, K) softmax(w / tau)
        assert soft.shape == (4, 16, K) and torch.allclose(soft.sum(-1), torch.ones(4, 16), atol=1e-5)
    else:
        ids, weights = rec.inputs[-1]  # (B, L, k) each
        assert ids.shape == weights.shape == (4, 16, 2) and ids.dtype == torch.long


def test_training_loss_switches_to_plain_bound_after_end(tmp_path):
    """Curriculum for start <= step <= end, then the plain UDLM bound; evaluation and the plain loss
    never read the integral cache (here a file that does not exist)."""
    m = small_duo(transform="cache", start=5, end=10)
    m.hparams["integral_path"] = str(tmp_path / "missing.npz")
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    b = batch_of(torch.randint(0, 32, (4, 16)))
    for step in (0, 4, 11, 10**6):
        assert torch.equal(torch.stack(m.loss(b, step=step, generator=torch.Generator().manual_seed(11))),
                           torch.stack(m.nelbo(b, torch.Generator().manual_seed(11))))
    for step in (5, 10):
        with pytest.raises(FileNotFoundError, match="missing.npz"):
            m.loss(b, step=step)
    # a checkpoint's hyper-parameters rebuild the method without the cache
    hp = dict(m.hparams)
    clone = get_method(hp.pop("algo"))(**hp)
    clone.load_state_dict(m.state_dict())
    assert torch.equal(torch.stack(clone.nelbo(b, torch.Generator().manual_seed(12))),
                       torch.stack(m.nelbo(b, torch.Generator().manual_seed(12))))
    # with a cache the curriculum loss differs from the bound
    save_cache(tmp_path / "ok.npz", compute_cache(32, -5.0, -1.0, 200))
    m.hparams["integral_path"] = str(tmp_path / "ok.npz")
    cur = m.loss(b, step=10, generator=torch.Generator().manual_seed(11))
    assert not torch.equal(cur[0], m.nelbo(b, torch.Generator().manual_seed(11))[0])


@pytest.mark.parametrize("inp", ["softmax", "topk"])
def test_curriculum_training_reduces_loss(inp):
    torch.manual_seed(0)
    K = 32
    m = small_duo(K, input=inp)
    x = torch.randint(2, K, (16, 16), generator=torch.Generator().manual_seed(13))
    x[:, ::2] = 5  # learnable structure
    b = batch_of(x)

    def mean_loss():
        with torch.no_grad():
            sums = [m.loss(b, step=0, generator=torch.Generator().manual_seed(s)) for s in range(4)]
        return sum(s / n for s, n in sums).item() / 4

    before = mean_loss()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for step in range(25):
        s, n = m.loss(b, step=step, generator=torch.Generator().manual_seed(100 + step))
        opt.zero_grad()
        (s / n).backward()
        opt.step()
    after = mean_loss()
    assert after < 0.8 * before, (before, after)


def test_registered():
    assert get_method("duo") is DUO
