"""GIDD / GIDD+: schedule identities (brief Sec. 5.1), the ELBO terms, the MDLM limit at p_u = 0,
the loss weightings and the seeded randomness."""

import math
from pathlib import Path

import pytest
import torch
from conftest import perturb
import torch.nn.functional as F
import yaml

from dlm.algos.gidd import DYNAMIC_W_MAX, GIDD, gidd_divergences, training_weights
from dlm.algos.mdlm import forward_mask
from dlm.diffusion.gidd_schedule import HybridSchedule

MASK = 1  # conftest.SPECIAL["mask"]
TS = torch.tensor([0.01, 0.2, 0.5, 0.77, 0.99], dtype=torch.float64)
PUS = [0.0, 0.1, 0.2]




def random_case(K=40, L=6, seed=0, dtype=torch.float64):
    """x (B, L) non-mask ids; z with a mask, a clean copy and a uniform-noise token in every row;
    log x_theta (B, L, K) with -inf at [MASK]. B = len(TS)."""
    g = torch.Generator().manual_seed(seed)
    B = len(TS)
    x = torch.randint(2, K, (B, L), generator=g)
    z = torch.randint(2, K, (B, L), generator=g)
    z = torch.where(z == x, (z - 2 + 1) % (K - 2) + 2, z)  # noise != x
    z[:, 0] = MASK
    z[:, 1] = x[:, 1]
    z[:, 2:4] = torch.where(torch.rand(B, 2, generator=g) < 0.5, MASK, z[:, 2:4])
    logits = 3.0 * torch.randn(B, L, K, generator=g, dtype=dtype)
    logits[..., MASK] = -math.inf
    return x, z, torch.log_softmax(logits, -1)


# --- schedule identities ----------------------------------------------------------------------------

@pytest.mark.parametrize("p_u", PUS)
def test_marginal_rows_sum_to_one(p_u):
    K = 40
    s = HybridSchedule(K, MASK, p_u)
    x = torch.randint(2, K, (len(TS), 7), generator=torch.Generator().manual_seed(0))
    onehot = F.one_hot(x, K).double()
    q = s.marginal(onehot, TS)  # (B, L, K)
    assert torch.allclose(q.sum(-1), torch.ones_like(q[..., 0]), atol=1e-12)
    a, m, u = s.shares(TS)
    assert torch.allclose(a + m + (K - 1) * u, torch.ones_like(a), atol=1e-12)
    assert torch.allclose(q[..., MASK], m[:, None].expand(-1, 7))
    assert torch.allclose(s.log_marginal(torch.log(onehot), TS).exp(), q, atol=1e-12)


@pytest.mark.parametrize("p_u", [0.05, 0.1, 0.2, 0.5])
def test_uniform_mass_at_half_equals_p_u(p_u):
    K = 50
    s = HybridSchedule(K, MASK, p_u)
    half = torch.tensor([0.5], dtype=torch.float64)
    assert (K - 1) * s.uniform_share(half).item() == pytest.approx(p_u, rel=1e-12)
    assert s.alpha(half).item() == pytest.approx((1 - p_u) / 2, rel=1e-12)
    assert s.mask_share(half).item() == pytest.approx((1 - p_u) / 2, rel=1e-12)


def test_B_values_and_p_u_zero_floor():
    assert HybridSchedule(10, MASK, 0.1).B == pytest.approx(0.2 / 0.9)  # brief: 0.2222
    assert HybridSchedule(10, MASK, 0.2).B == pytest.approx(0.5)
    s = HybridSchedule(10, MASK, 0.0)  # floored at e^-20: linear masking alpha_t = 1 - t up to ~1e-9
    t = torch.linspace(0.001, 0.999, 50, dtype=torch.float64)
    assert torch.allclose(s.alpha(t), 1 - t, atol=1e-8, rtol=0)
    assert torch.all(9 * s.uniform_share(t) < 1e-8)


@pytest.mark.parametrize("p_u", PUS + [0.5])
def test_conditional_transitions_are_valid(p_u):
    """beta_t pi_t - (alpha_t/alpha_s) beta_s pi_s >= 0 entry-wise for s < t, and rows sum to one."""
    K = 30
    sch = HybridSchedule(K, MASK, p_u)
    grid = torch.linspace(1e-4, 1 - 1e-4, 41, dtype=torch.float64)
    s, t = torch.meshgrid(grid, grid, indexing="ij")
    keep = s < t
    s, t = s[keep], t[keep]
    a_ts, m_ts, u_ts = sch.transition_shares(s, t)
    assert torch.all(m_ts >= 0) and torch.all(u_ts >= -1e-18)
    assert torch.all((a_ts > 0) & (a_ts <= 1))
    assert torch.allclose(a_ts + m_ts + (K - 1) * u_ts, torch.ones_like(a_ts), atol=1e-12)
    # the mask entry in closed form (brief 1.2): (t - s) / ((1 - s) C_t)
    assert torch.allclose(m_ts, (t - s) / ((1 - s) * (1 + sch.c(t))), rtol=1e-10)


@pytest.mark.parametrize("p_u", PUS)
def test_elbo_weights_from_finite_differences(p_u):
    """w_t(z, x) = omega_z / q_t(z|x) with omega = (beta pi)' - (alpha'/alpha) beta pi by central differences,
    and sum_z omega_z = -alpha'/alpha."""
    K = 40
    N = K - 1
    s = HybridSchedule(K, MASK, p_u)
    h = 1e-6

    def fd(f):
        return (f(TS + h) - f(TS - h)) / (2 * h)

    dlog_a = fd(lambda t: torch.log(s.alpha(t)))
    om_m = fd(s.mask_share) - dlog_a * s.mask_share(TS)
    om_u = fd(s.uniform_share) - dlog_a * s.uniform_share(TS)
    assert torch.allclose(s.dlog_alpha(TS), dlog_a, rtol=1e-7)
    assert torch.allclose(om_m + N * om_u, -dlog_a, rtol=1e-7)
    closed_m, closed_u = s.omega(TS)
    assert torch.allclose(closed_m, om_m, rtol=1e-6)
    assert torch.allclose(closed_u, om_u, rtol=1e-6)
    # the three cases: z = mask, z = uniform noise != x, z = x
    x = torch.full((len(TS), 3), 5)
    z = torch.tensor([[MASK, 7, 5]]).expand(len(TS), -1)
    w = s.elbo_weights(TS, z, x)  # (B, 3)
    a, m, u = s.shares(TS)
    assert torch.allclose(w[:, 0], om_m / m, rtol=1e-6)
    assert torch.allclose(w[:, 1], om_u / u, rtol=1e-6)
    assert torch.allclose(w[:, 2], om_u / (a + u), rtol=1e-6)
    # brief 1.5's closed forms
    c, dc = s.c(TS), s.dc(TS)
    assert torch.allclose(w[:, 0], 1 / (TS * (1 - TS)))
    assert torch.allclose(w[:, 1], (c + (1 - TS) * dc) / ((1 - TS) * c))
    assert torch.allclose(w[:, 2], (c + (1 - TS) * dc) / N / ((1 - TS) * (1 - TS + c / N)))
    # E_{z ~ q_t(.|x)}[w] = sum_z omega_z = -alpha'/alpha
    assert torch.allclose(m * w[:, 0] + (N - 1) * u * w[:, 1] + (a + u) * w[:, 2], -s.dlog_alpha(TS), rtol=1e-10)


def test_forward_sampler_marginal():
    K, p_u = 6, 0.3
    s = HybridSchedule(K, MASK, p_u)
    x = torch.full((400, 500), 2)
    t = torch.full((400,), 0.5)
    z = s.sample(x, t, torch.Generator().manual_seed(0))
    freq = torch.bincount(z.flatten(), minlength=K).double() / z.numel()
    expected = s.marginal(F.one_hot(torch.tensor([[2]]), K).double(), t[:1].double())[0, 0]
    assert torch.allclose(freq, expected, atol=4e-3)
    assert expected[MASK] == pytest.approx(0.35) and expected[0] > 0.05  # noise reaches every non-mask id


# --- the ELBO terms ---------------------------------------------------------------------------------

def brute_force_terms(log_x_theta, x, z, t, s):
    """KL(q_t(.|x) || q_t(.|x_theta)) and r - log r - 1 from the materialised marginals (float64)."""
    K = log_x_theta.shape[-1]
    q = s.marginal(F.one_hot(x, K).double(), t)  # (B, L, K)
    p = s.marginal(log_x_theta.double().exp(), t)
    kl = (q * (q.log() - p.log())).sum(-1)
    r = q.gather(-1, z[..., None]).squeeze(-1) / p.gather(-1, z[..., None]).squeeze(-1)
    return kl, r - r.log() - 1


@pytest.mark.parametrize("p_u", PUS + [0.5])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_divergences_match_definition(p_u, dtype):
    s = HybridSchedule(40, MASK, p_u)
    x, z, log_x = random_case(dtype=dtype)
    kl, isd = gidd_divergences(log_x, x, z, TS.to(dtype), s)
    kl_ref, is_ref = brute_force_terms(log_x, x, z, TS.to(dtype), s)
    tol = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    assert torch.allclose(kl, kl_ref, **tol)
    assert torch.allclose(isd, is_ref, **tol)
    assert torch.all(isd[z == MASK] == 0)  # r = 1 at a masked token


@pytest.mark.parametrize("p_u", PUS)
@pytest.mark.parametrize("seed", range(3))
def test_elbo_terms_nonnegative(p_u, seed):
    s = HybridSchedule(40, MASK, p_u)
    x, z, log_x = random_case(seed=seed, dtype=torch.float32)
    kl, isd = gidd_divergences(log_x, x, z, TS.float(), s)
    assert torch.all(kl >= -1e-6) and torch.all(isd >= 0)
    elbo = s.elbo_weights(TS, z, x) * (kl + isd)
    assert torch.all(elbo >= -1e-6) and elbo.sum() > 0


@pytest.mark.parametrize("p_u", PUS)
def test_perfect_denoiser_has_zero_elbo(p_u):
    K = 40
    s = HybridSchedule(K, MASK, p_u)
    x, z, _ = random_case(K=K)
    perfect = torch.log(F.one_hot(x, K).double())  # 0 at x, -inf elsewhere (mask included)
    kl, isd = gidd_divergences(perfect, x, z, TS, s)
    assert torch.allclose(kl, torch.zeros_like(kl), atol=1e-12)
    assert torch.allclose(isd, torch.zeros_like(isd), atol=1e-12)


class OracleBackbone(torch.nn.Module):
    """Logits +-1e4 on the clean tokens it was told about: a (numerically) perfect denoiser."""

    def __init__(self, x, K):
        super().__init__()
        self.logits = 2e4 * F.one_hot(x, K).float() - 1e4
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, z, sigma=None, **_):
        return self.logits.clone() + 0 * self.dummy


def test_module_elbo_zero_for_perfect_denoiser(module_factory):
    K, L = 24, 16
    m = module_factory("gidd", vocab_size=K, block_length=L, p_uniform=0.5)
    x = torch.randint(2, K, (len(TS), L), generator=torch.Generator().manual_seed(0))
    m.backbone = OracleBackbone(x, K)
    g = torch.Generator().manual_seed(1)
    z = m.schedule.sample(x, TS.float(), torch.Generator().manual_seed(1))
    assert (z == MASK).any() and ((z != MASK) & (z != x)).any() and (z == x).any()  # all three cases occur
    nll = m.token_nll({"input_ids": x}, TS.float(), g)
    assert torch.allclose(nll, torch.zeros_like(nll), atol=1e-6)


# --- p_u = 0 is MDLM --------------------------------------------------------------------------------

def test_p_u_zero_matches_mdlm(module_factory):
    """Same backbone weights, batch, t and masking draws. MDLM with alpha = 1 - (1 - 1e-12) t. Tolerance:
    masked tokens |GIDD - MDLM| <= 1e-6 + 1e-5 |MDLM| (float32 log-softmax; the e^-20 floor changes
    alpha by a factor 1 / (1 + c_t), c_t <= 2.1e-9); clean tokens: MDLM exactly 0, GIDD < 1e-6 (its
    weight there is O(c_t / N)). The floor also caps GIDD's -log x_theta[x] near rho_t = log(alpha_t / upsilon_t)
    (~24 nats here; upsilon_t the per-token uniform share): the masked-token terms agree to
    O(upsilon_t / (alpha_t x_theta[x])), so the backbone is kept moderate (x_theta[x] > e^-10)."""
    K, L = 32, 16
    t = torch.tensor([0.1, 0.25, 0.4, 0.55, 0.7, 0.9])
    gidd = perturb(module_factory("gidd", vocab_size=K, block_length=L, p_uniform=0.0, time_conditioning=False),
                   scale=0.1)
    mdlm = module_factory("mdlm", vocab_size=K, block_length=L, time_conditioning=False,
                          noise={"schedule": "loglinear", "eps": 1e-12})
    mdlm.backbone.load_state_dict(gidd.backbone.state_dict())
    x = torch.randint(2, K, (len(t), L), generator=torch.Generator().manual_seed(0))
    z_g = gidd.schedule.sample(x, t, torch.Generator().manual_seed(3))
    z_m = forward_mask(x, mdlm.schedule.alpha(t), MASK, torch.Generator().manual_seed(3))
    assert torch.equal(z_g, z_m)  # the same masking draws
    masked = z_m == MASK
    assert 0 < masked.sum() < masked.numel()
    with torch.no_grad():
        nll_g = gidd.token_nll({"input_ids": x}, t, torch.Generator().manual_seed(3))
        nll_m = mdlm.token_nll({"input_ids": x}, t, torch.Generator().manual_seed(3))
    assert torch.allclose(nll_g[masked], nll_m[masked], rtol=1e-5, atol=1e-6)
    assert torch.all(nll_m[~masked] == 0)
    assert nll_g[~masked].abs().max() < 1e-6
    assert nll_m[masked].min() > 0.1  # a non-trivial comparison
    ce = nll_m[masked] * t[:, None].expand(-1, L)[masked]  # -log x_theta[x] on masked tokens
    assert ce.max() < 10


# --- loss weightings --------------------------------------------------------------------------------

def weight_cases(p_u=0.2, K=32, t=0.5):
    s = HybridSchedule(K, MASK, p_u)
    tt = torch.full((3,), t, dtype=torch.float64)
    x = torch.full((3, 1), 5)
    z = torch.tensor([[MASK], [7], [5]])  # mask, uniform noise, clean
    return s, tt, z, x, s.elbo_weights(tt, z, x)


def test_dynamic_weights_at_half():
    K, p_u = 32, 0.2
    s, t, z, x, elbo = weight_cases(p_u, K)
    c = s.B / 2
    assert elbo.flatten().tolist() == pytest.approx([4.0, 2.0, c / (0.5 * ((K - 1) * 0.5 + c))], rel=1e-12)
    a = (1 - p_u) / 2  # alpha_{1/2}; the clean weight uses the true log-SNR: e^{-lambda/2} = sqrt((1 - a)/a)
    assert math.exp(-0.5 * s.log_snr(t[:1]).item()) == pytest.approx(math.sqrt((1 - a) / a))
    clean = s.B / K * math.sqrt((1 - a) / a)
    assert DYNAMIC_W_MAX == 1.0
    dyn = training_weights(elbo, t, z, x, s, "dynamic", 0.0, 2.0).flatten()
    assert dyn.tolist() == pytest.approx([2.0, 1.0, clean], rel=1e-12)  # 2 w_max, w_max, w_max B/K e^{-lambda/2}
    assert torch.allclose(elbo.flatten()[:2], 2 * dyn[:2])  # the ELBO weights are exactly twice at t = 1/2
    assert 1.5 < elbo.flatten()[2] / dyn[2] < 1.7  # and about 1.6x for clean tokens (brief 1.6)
    # clipped to [min, max] afterwards: max 1 (v1.0 / schema default) puts mask and noise at 1
    assert training_weights(elbo, t, z, x, s, "dynamic", 0.0, 1.0).flatten().tolist() == pytest.approx(
        [1.0, 1.0, clean], rel=1e-12)
    assert training_weights(elbo, t, z, x, s, "dynamic", 0.1, 5.0).flatten().tolist() == pytest.approx(
        [2.0, 1.0, 0.1], rel=1e-12)


def test_dynamic_weights_flat_in_time():
    s = HybridSchedule(32, MASK, 0.1)
    for t in (0.01, 0.3, 0.9, 0.999):
        _, tt, z, x, elbo = weight_cases(0.1, 32, t)
        dyn = training_weights(elbo, tt, z, x, s, "dynamic", 0.0, 2.0).flatten()
        assert dyn[:2].tolist() == [2.0, 1.0]
        a = s.alpha(tt[:1]).item()
        assert dyn[2].item() == pytest.approx(s.B / 32 * math.sqrt((1 - a) / a), rel=1e-10)


def test_clip_clips_and_none_is_elbo():
    s = HybridSchedule(32, MASK, 0.2)
    x, z, _ = random_case(K=32)
    w = s.elbo_weights(TS, z, x)
    clipped = training_weights(w, TS, z, x, s, "clip", 0.5, 3.0)
    assert torch.equal(clipped, w.clamp(0.5, 3.0))
    assert clipped.min() == 0.5 and clipped.max() == 3.0  # both bounds are active on this grid
    _, t, zc, xc, elbo = weight_cases()
    assert training_weights(elbo, t, zc, xc, s, "clip", 0.5, 3.0).flatten().tolist() == [3.0, 2.0, 0.5]
    assert torch.equal(training_weights(w, TS, z, x, s, "none", 0.5, 3.0), w)


def test_training_loss_counts_all_positions_and_bound_masks_padding(module_factory):
    K, L, B = 32, 16, 4
    m = perturb(module_factory("gidd", vocab_size=K, block_length=L, p_uniform=0.1))
    x = torch.randint(2, K, (B, L), generator=torch.Generator().manual_seed(0))
    full = {"input_ids": x, "attention_mask": torch.ones_like(x)}
    # weighting none: the training loss is the bound itself when nothing is padded
    loss_s, loss_n = m.loss(full, generator=torch.Generator().manual_seed(7))
    bound_s, bound_n = m.nelbo(full, torch.Generator().manual_seed(7))
    assert torch.allclose(loss_s, bound_s, rtol=1e-5) and loss_n.item() == bound_n.item() == B * L
    # padding: the training loss still covers all B x L positions (the original's tokenmean), the bound not
    padded = {"input_ids": x, "attention_mask": torch.ones_like(x)}
    padded["attention_mask"][:, L // 2:] = 0
    _, n_train = m.loss(padded, generator=torch.Generator().manual_seed(7))
    s_bound, n_bound = m.nelbo(padded, torch.Generator().manual_seed(7))
    assert n_train.item() == B * L and n_bound.item() == B * L // 2
    assert s_bound < bound_s


@pytest.mark.parametrize("weighting,p_u", [("none", 0.0), ("clip", 0.1), ("dynamic", 0.0), ("dynamic", 0.2)])
def test_loss_gradients_finite(module_factory, weighting, p_u):
    m = perturb(module_factory("gidd", vocab_size=32, block_length=16, p_uniform=p_u, loss_weighting=weighting,
                               max_loss_weight=2.0))
    x = torch.randint(2, 32, (4, 16), generator=torch.Generator().manual_seed(0))
    s, n = m.loss({"input_ids": x, "attention_mask": torch.ones_like(x)}, generator=torch.Generator().manual_seed(0))
    (s / n).backward()
    assert torch.isfinite(s) and s > 0
    grads = [p.grad for p in m.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


# --- randomness, times, conditioning, registry ------------------------------------------------------

def test_seeded_generator(module_factory):
    m = perturb(module_factory("gidd", vocab_size=32, block_length=16, p_uniform=0.1, loss_weighting="dynamic"))
    x = torch.randint(2, 32, (4, 16), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": x, "attention_mask": torch.ones_like(x)}
    with torch.no_grad():
        a = m.loss(batch, generator=torch.Generator().manual_seed(1))[0]
        b = m.loss(batch, generator=torch.Generator().manual_seed(1))[0]
        c = m.loss(batch, generator=torch.Generator().manual_seed(2))[0]
        t = torch.full((4,), 0.5)
        n1 = m.token_nll(batch, t, torch.Generator().manual_seed(1))
        n2 = m.token_nll(batch, t, torch.Generator().manual_seed(1))
        n3 = m.token_nll(batch, t, torch.Generator().manual_seed(2))
    assert a == b and a != c
    assert torch.equal(n1, n2) and not torch.equal(n1, n3)


def test_sample_times_low_discrepancy(module_factory):
    m = module_factory("gidd", vocab_size=32, block_length=16, t_eps=0.01)
    n = 16
    t = m.sample_times(n, torch.Generator().manual_seed(0))
    assert torch.equal(t, m.sample_times(n, torch.Generator().manual_seed(0)))
    assert t.min() >= 0.01 and t.max() <= 0.99
    u = (t - 0.01) / 0.98  # back to [0, 1): one shared offset, so i/n + U mod 1 -> one per stratum, even gaps
    assert torch.equal(torch.sort((u * n).floor().long()).values, torch.arange(n))
    gaps = torch.diff(torch.sort(u).values)
    assert torch.allclose(gaps, torch.full_like(gaps, 1 / n), atol=1e-5)
    iid = module_factory("gidd", vocab_size=32, block_length=16, antithetic=False).sample_times(
        n, torch.Generator().manual_seed(0))
    assert iid.min() >= 1e-4 and iid.max() <= 1 - 1e-4


def test_conditioning_on_raw_t_and_denoise(module_factory):
    t = torch.tensor([0.1, 0.7])
    m = perturb(module_factory("gidd", vocab_size=32, block_length=16))
    assert m.hparams.time_conditioning and torch.equal(m.sigma_input(t), t)
    off = module_factory("gidd", vocab_size=32, block_length=16, time_conditioning=False)
    assert torch.equal(off.sigma_input(t), torch.zeros(2))
    z = torch.randint(0, 32, (2, 16), generator=torch.Generator().manual_seed(0))
    lp = m.denoise(z, t)
    assert lp.shape == (2, 16, 32)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 16), atol=1e-5)
    assert torch.all(lp[..., MASK] == -math.inf)


def test_registry_defaults_match_schema(module_factory):
    from dlm.algos import get_method

    assert get_method("gidd") is GIDD and GIDD.default_time_conditioning
    schema = yaml.safe_load((Path(__file__).parents[1] / "config" / "schema.yaml").read_text())
    props = schema["definitions"]["algo_args"]["properties"]
    m = module_factory("gidd")
    got = {"p_uniform": m.p_uniform, "loss_weighting": m.loss_weighting, "min_loss_weight": m.min_loss_weight,
           "max_loss_weight": m.max_loss_weight, "t_eps": m.t_eps}
    assert got == {k: props[k]["default"] for k in got}
    assert set(props["loss_weighting"]["enum"]) == {"none", "clip", "dynamic"}
    with pytest.raises(ValueError):
        module_factory("gidd", loss_weighting="snr")


# --- the paper's conventions (docs/conventions.md) ----------------------------------------------------

def test_default_dynamic_weighting_is_the_paper_era_code():
    """The GIDD paper's numbers and checkpoints (March 2025) come from the v1.0 code: max_loss_weight 1 and the
    clean weight B_v1.0 * exp(-lambda_t / 2) with the true log-SNR lambda_t = log(alpha / (1 - alpha)), where
    B_v1.0 = 1 / (1 + (1 - p) / p * V / 2). v1.1 (June 2025: max 2, sigmoid(-t) in place of the log-SNR) is not
    the default. Hand-derived at V = 50258, p_u = 0.1, t = 0.3: the v1.0 code's weights against ours."""
    V, p, t = 50258, 0.1, 0.3
    s = HybridSchedule(V, MASK, p)
    tt = torch.full((3,), t, dtype=torch.float64)
    x, z = torch.full((3, 1), 5), torch.tensor([[MASK], [7], [5]])
    ours = training_weights(s.elbo_weights(tt, z, x), tt, z, x, s, "dynamic", 0.0, 1.0).flatten().tolist()
    a = s.alpha(tt[:1]).item()
    b_v10 = 1.0 / (1.0 + (1 - p) / p * V / 2)
    clean_v10 = b_v10 * math.exp(0.5 * math.log((1 - a) / a))  # v1.0: x_scale = B exp(gamma/2 * (-lambda))
    assert ours[:2] == [1.0, 1.0]  # mask 2 and noise 1, clipped at the v1.0 config's max_loss_weight 1
    assert ours[2] == pytest.approx(clean_v10, rel=1e-4)
    clean_v11 = s.B / V * math.exp(0.5 / (1 + math.exp(t)))  # v1.1: B / V exp(gamma/2 * sigmoid(-t))
    assert abs(clean_v11 / clean_v10 - 1) > 0.3  # a different rule, not a rounding of ours
    assert GIDD(vocab_size=8, block_length=4, special_ids={"mask": 1}, tokenizer_dir="-", model={"size": "nano"},
                p_uniform=0.1, loss_weighting="dynamic").max_loss_weight == 1.0


def test_gidd_runs_train_without_dropout_or_ema_by_default():
    """The original GIDD has no dropout and no EMA: a gidd run gets both off between train_defaults and its own
    entry (dlm.config.METHOD_TRAINING); other methods keep train_defaults; a run's own setting wins."""
    from dlm.config import apply_defaults, resolve_run

    root = Path(__file__).resolve().parents[1]
    for name, gidd_runs in (("config/config.yaml", ["gidd", "gidd_pu02"]), ("config/paper/owt.yaml", ["gidd_pu0"])):
        cfg = apply_defaults(yaml.safe_load((root / name).read_text()), str(root / "config" / "schema.yaml"))
        for run in gidd_runs:
            hp = resolve_run(cfg, run)
            assert (hp["model"]["dropout"], hp["trainer"]["ema"]) == (0.0, 0.0)
        mdlm = resolve_run(cfg, "mdlm")
        assert (mdlm["model"]["dropout"], mdlm["trainer"]["ema"]) == (cfg["train_defaults"]["model"]["dropout"],
                                                                      cfg["train_defaults"]["trainer"]["ema"])
    cfg["runs"]["gidd_pu0"]["trainer"]["ema"] = 0.9999  # ours: EMA as the MDLM / DUO runs, set on the run
    assert resolve_run(cfg, "gidd_pu0")["trainer"]["ema"] == 0.9999
