"""Loss identities for SEDD (absorbing score entropy) and D3PM (absorbing, discrete time)."""

import math

import pytest
import torch
from conftest import perturb

from dlm.algos.d3pm import d3pm_absorb_loss, quantise_time
from dlm.algos.mdlm import forward_mask
from dlm.algos.sedd import absorb_log_score, log_expm1, sedd_absorb_loss

MASK = 1  # tests/conftest.py SPECIAL["mask"]: not the last id, so "y != mask" is exercised


class FixedBackbone(torch.nn.Module):
    """Returns the same raw output (L, K) for every input, recording the sigma it was given."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.sigmas = []

    def forward(self, x, sigma=None, **_):
        self.sigmas.append(sigma)
        return self.logits.expand(x.shape[0], *self.logits.shape).clone()


class CopyBackbone(torch.nn.Module):
    """A model with zero mass on [MASK] that copies unmasked inputs: logits = base (L, K) with the mask
    logit at -1e6, plus 30 on the observed token at unmasked positions (so p(x | z = x) = 1 to ~1e-10)."""

    def __init__(self, base):
        super().__init__()
        base = base.clone()
        base[:, MASK] = -1e6
        self.base = base

    def forward(self, x, sigma=None, **_):
        K = self.base.shape[-1]
        logits = self.base.expand(x.shape[0], *self.base.shape).clone()  # (B, L, K)
        copy = torch.nn.functional.one_hot(x, K).float() * (x != MASK)[..., None]
        return logits + 30.0 * copy


def perturbed(module, scale=0.3, seed=0):
    return perturb(module, scale, seed)


# --- SEDD ------------------------------------------------------------------------------------------

def test_log_expm1_both_branches():
    for s in (1e-6, 1e-3, 0.3, 0.4999, 0.5, 0.5001, 2.0, 6.9, 30.0):
        got = log_expm1(torch.tensor([s], dtype=torch.float64)).item()
        assert got == pytest.approx(math.log(math.expm1(s)), rel=1e-12, abs=1e-12)


def test_sedd_loss_hand_value():
    """K = 4, L = 2, mask id 1: position 0 masked (x0 = 2), position 1 clean (x0 = z = 3)."""
    sigma, dsigma = 0.7, 1.3
    log_s = torch.tensor([[[0.1, 0.0, -0.5, 0.3], [0.2, -1.0, 0.4, 0.0]]], dtype=torch.float64)
    x0 = torch.tensor([[2, 3]])
    z = torch.tensor([[MASK, 3]])
    loss = sedd_absorb_loss(log_s, x0, z, torch.tensor([sigma], dtype=torch.float64),
                            torch.tensor([dsigma], dtype=torch.float64), MASK)
    r = 1.0 / (math.exp(sigma) - 1.0)
    pos = math.exp(0.1) + math.exp(-0.5) + math.exp(0.3)  # y in {0, 2, 3}: the mask column is skipped
    expected = dsigma * (pos - r * (-0.5) + r * (math.log(r) - 1.0))
    assert loss.shape == (1, 2)
    assert loss[0, 0].item() == pytest.approx(expected, rel=1e-12)
    assert loss[0, 1].item() == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_sedd_loss_nonnegative(seed):
    g = torch.Generator().manual_seed(seed)
    B, L, K = 6, 10, 9
    x0 = torch.randint(2, K, (B, L), generator=g)
    z = torch.where(torch.rand(B, L, generator=g) < 0.6, torch.full_like(x0, MASK), x0)
    sigma = torch.tensor([1e-3, 0.05, 0.3, 0.6, 2.0, 6.9])
    dsigma = torch.rand(B, generator=g) + 0.5
    raw = 4 * torch.randn(B, L, K, generator=g)
    loss = sedd_absorb_loss(absorb_log_score(raw, z, sigma), x0, z, sigma, dsigma, MASK)
    assert torch.all(loss >= 0)
    assert torch.all(loss[z != MASK] == 0) and torch.all(loss[z == MASK] > 0)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_sedd_loss_zero_at_true_score(dtype, tol):
    """At a masked position the true score is p_t(y)/p_t(m) = alpha/(1 - alpha) = r at y = x0 and 0 elsewhere."""
    B, L, K = 4, 5, 7
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(2, K, (B, L), generator=g)
    z = x0.clone()
    z[:, ::2] = MASK
    sigma = torch.tensor([0.01, 0.4, 1.0, 5.0], dtype=dtype)
    r = 1.0 / torch.expm1(sigma)
    log_s = torch.full((B, L, K), float("-inf"), dtype=dtype)
    log_s.scatter_(-1, x0[..., None], torch.log(r)[:, None, None].expand(B, L, 1).contiguous())
    log_s.scatter_(-1, z[..., None], 0.0)  # current token
    dsigma = torch.ones(B, dtype=dtype)
    loss = sedd_absorb_loss(log_s, x0, z, sigma, dsigma, MASK)
    assert torch.all(loss.abs() <= tol * (1 + r[:, None]))
    # any perturbation of the score raises the loss strictly at masked positions
    wrong = log_s.clone()
    wrong[..., 0] = torch.where(z == MASK, torch.zeros_like(wrong[..., 0]), wrong[..., 0])
    bumped = sedd_absorb_loss(wrong, x0, z, sigma, dsigma, MASK)
    assert torch.all(bumped[z == MASK] > 0.5)


def test_absorb_scaling_gives_bayes_unmasking():
    """raw = log p0(y) + log(K - 1) (p0 normalised over the clean ids) is the exact score:
    s_y = p0(y) alpha/(1 - alpha) at a masked position, and SEDD's analytic step then unmasks to y with
    probability (e^{dsigma} - 1) s_y = p0(y) (alpha_s - alpha_t)/(1 - alpha_t), Bayes' rule for q."""
    K, L = 6, 3
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(L, K, generator=g, dtype=torch.float64)
    logits[:, MASK] = -math.inf
    p0 = torch.softmax(logits, -1)  # (L, K), 0 on the mask
    raw = torch.log(p0) + math.log(K - 1)
    raw[:, MASK] = 3.0  # arbitrary: overwritten at masked positions (current token)
    sigma = torch.tensor([1e-3, 0.3, 0.4999, 0.5001, 2.0, 6.9], dtype=torch.float64)
    B = sigma.shape[0]
    z = torch.full((B, L), MASK)
    z[:, -1] = 4  # one clean position
    log_s = absorb_log_score(raw.expand(B, L, K), z, sigma)
    alpha_t = torch.exp(-sigma)[:, None, None]
    s = log_s.exp()
    clean = torch.arange(K) != MASK
    expected = p0 * alpha_t / (1 - alpha_t)  # (B, L, K)
    assert torch.allclose(s[:, :-1][..., clean], expected[:, :-1][..., clean], rtol=1e-10)
    assert torch.all(log_s[:, :-1, MASK] == 0) and torch.all(log_s[:, -1, 4] == 0)
    # Bayes' rule for one reverse step sigma -> sigma - d
    d = 0.25 * sigma[:, None, None]
    alpha_s = torch.exp(-(sigma[:, None, None] - d))
    unmask = torch.expm1(d) * s
    bayes = p0 * (alpha_s - alpha_t) / (1 - alpha_t)
    assert torch.allclose(unmask[:, :-1][..., clean], bayes[:, :-1][..., clean], rtol=1e-10)


def test_sedd_with_denoiser_score_equals_mdlm(module_factory):
    """With the score of a normalised denoiser (raw = log p0 + log(K - 1)) the DWDSE collapses to
    -dsigma r log p0(x0) = -alpha'/(1 - alpha) log p0(x0): MDLM's integrand, for the same t and z."""
    K, L = 11, 8
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(L, K, generator=g)
    logits[:, MASK] = -math.inf
    log_p0 = torch.log_softmax(logits, -1)
    raw = log_p0 + math.log(K - 1)
    raw[:, MASK] = 0.7
    sedd = module_factory("sedd", vocab_size=K, block_length=L)
    mdlm = module_factory("mdlm", vocab_size=K, block_length=L)
    sedd.backbone = FixedBackbone(raw)
    mdlm_logits = log_p0.clone()
    mdlm_logits[:, MASK] = 2.0  # suppressed by SUBS
    mdlm.backbone = FixedBackbone(mdlm_logits)
    x = torch.randint(2, K, (4, L), generator=g)
    t = torch.tensor([0.01, 0.3, 0.6, 0.95])
    a = sedd.token_nll({"input_ids": x}, t, torch.Generator().manual_seed(5))
    b = mdlm.token_nll({"input_ids": x}, t, torch.Generator().manual_seed(5))
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    assert (a > 0).any() and (a == 0).any()
    # time conditioning on the total noise sigma_t = -log alpha_t
    assert torch.allclose(sedd.backbone.sigmas[-1], -torch.log(1 - (1 - 1e-3) * t))


def test_sedd_module_nonnegative(module_factory):
    m = perturbed(module_factory("sedd", vocab_size=24, block_length=12))
    x = torch.randint(2, 24, (8, 12))
    t = m.sample_times(8, torch.Generator().manual_seed(0))
    nll = m.token_nll({"input_ids": x}, t, torch.Generator().manual_seed(0))
    assert nll.shape == (8, 12) and torch.isfinite(nll).all() and torch.all(nll >= 0)


# --- D3PM -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("T", [1, 10, 1000])
def test_quantise_time_on_grid(T):
    t = torch.cat([torch.rand(500, generator=torch.Generator().manual_seed(T)) * (1 - 1e-3) + 1e-3,
                   torch.tensor([1e-3, 0.5, 1.0 - 1e-7, 1.0])])
    q = quantise_time(t, T)
    k = q * T
    assert torch.allclose(k, k.round(), atol=1e-4)
    assert k.round().min() >= 1 and k.round().max() <= T
    assert torch.all(q >= t - 1e-6) and torch.all(q - t <= 1.0 / T + 1e-6)
    assert q[-1].item() == pytest.approx(1.0)


def brute_force_d3pm(log_x, x0, z, t, T):
    """T x KL(q(z_s | z_t, x0) || p(z_s | z_t)) from explicit distributions over the K states, with
    p(z_s | z_t) ∝ sum_x' q(z_t | z_s) q(z_s | x') x_theta(x') (D3PM eq. 4), alpha_t = 1 - t, and t
    clamped to 1 - 1e-4 (MDLM code)."""
    B, L, K = log_x.shape
    out = torch.zeros(B, L, dtype=torch.float64)
    dt = 1.0 / T
    for b in range(B):
        tt = min(float(t[b]), 1 - 1e-4)
        a_t, a_s = 1 - tt, 1 - (tt - dt)
        for i in range(L):
            if int(z[b, i]) != MASK:
                continue
            xt = log_x[b, i].double().exp().tolist()

            def q_s_given_x(y, xp):  # q(z_s = y | x0 = x')
                if xp == MASK:
                    return 1.0 if y == MASK else 0.0
                return a_s if y == xp else (1 - a_s if y == MASK else 0.0)

            def q_t_given_s(y):  # q(z_t = m | z_s = y)
                return 1.0 if y == MASK else 1 - a_t / a_s

            p = [sum(q_t_given_s(y) * q_s_given_x(y, xp) * xt[xp] for xp in range(K)) for y in range(K)]
            norm = sum(p)
            p = [v / norm for v in p]
            xo = int(x0[b, i])
            q = [0.0] * K
            q[xo] = (a_s - a_t) / (1 - a_t)
            q[MASK] = (1 - a_s) / (1 - a_t)
            out[b, i] = T * sum(qy * math.log(qy / py) for qy, py in zip(q, p) if qy > 0)
    return out


def d3pm_case(T, seed=0, K=7, L=6):
    g = torch.Generator().manual_seed(seed)
    t = torch.tensor([1, 2, T // 3 + 1, T - 1, T]) / T  # includes t = 1/T and t = 1 (clamped)
    B = t.shape[0]
    x0 = torch.randint(2, K, (B, L), generator=g)
    z = torch.where(torch.rand(B, L, generator=g) < 0.7, torch.full_like(x0, MASK), x0)
    log_x = torch.log_softmax(2 * torch.randn(B, L, K, generator=g, dtype=torch.float64), -1)  # x_m > 0
    return log_x, x0, z, t


@pytest.mark.parametrize("T,seed", [(4, 0), (10, 1), (1000, 2)])
def test_d3pm_kl_matches_definition(T, seed):
    log_x, x0, z, t = d3pm_case(T, seed)
    fast = d3pm_absorb_loss(log_x, x0, z, t, T, MASK)
    ref = brute_force_d3pm(log_x, x0, z, t, T)
    assert torch.allclose(fast, ref, rtol=1e-8, atol=1e-8)
    assert torch.all(fast >= -1e-12) and torch.all(fast[z != MASK] == 0)


def test_d3pm_kl_zero_for_perfect_denoiser():
    log_x, x0, z, t = d3pm_case(100, K=9)
    perfect = torch.log(torch.nn.functional.one_hot(x0, 9).double())  # x_theta(m) = 0, x_theta(x0) = 1
    assert torch.all(d3pm_absorb_loss(perfect, x0, z, t, 100, MASK).abs() < 1e-12)
    # an imperfect denoiser loses exactly T * (dt/t) * (-log x_theta(x0)) when x_theta(m) = 0
    uniform = (torch.arange(9) != MASK).double() / 8  # over the clean ids
    half = torch.log(0.5 * torch.nn.functional.one_hot(x0, 9).double() + 0.5 * uniform)
    got = d3pm_absorb_loss(half, x0, z, t, 100, MASK)
    tc = t.double().clamp(max=1 - 1e-4)[:, None]
    want = torch.where(z == MASK, -half.gather(-1, x0[..., None]).squeeze(-1) / tc, torch.zeros(()))
    assert torch.allclose(got, want, rtol=1e-10)


def test_d3pm_equals_mdlm_on_the_grid(module_factory):
    """Same model with x_theta(m) = 0, same z (same seed, both masking with alpha at the grid time t_T):
    T x KL equals MDLM's -log x_theta(x0)/t_T on masked tokens exactly, and reconstruction vanishes."""
    K, L, T = 16, 32, 1000
    g = torch.Generator().manual_seed(3)
    backbone = CopyBackbone(torch.randn(L, K, generator=g))
    d3pm = module_factory("d3pm", vocab_size=K, block_length=L, T=T)
    mdlm = module_factory("mdlm", vocab_size=K, block_length=L)
    d3pm.backbone, mdlm.backbone = backbone, backbone
    x = torch.randint(2, K, (8, L), generator=g)
    t = torch.tensor([0.0537, 0.1623, 0.2751, 0.3866, 0.4912, 0.6034, 0.7178, 0.8291])
    assert torch.all(d3pm.reconstruction_nll(x).abs() < 1e-6)
    a = d3pm.token_nll({"input_ids": x}, t, torch.Generator().manual_seed(7))
    b = mdlm.token_nll({"input_ids": x}, quantise_time(t, T), torch.Generator().manual_seed(7))
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    assert (a > 0).any() and (a == 0).any()


def test_d3pm_converges_to_mdlm(module_factory):
    """What is compared: per-token losses of one batch x at fixed continuous times t (B,), same model
    (x_theta(m) = 0 and a perfect copy of unmasked inputs, so the reconstruction term is ~1e-10), same
    uniforms for the masking (same generator seed). D3PM with T steps masks at alpha(t_T) and weights
    by 1/t_T with t_T = floor(t T)/T + 1/T in (t, t + 1/T]; MDLM masks at alpha(t) and weights by 1/t.
    As T grows t_T -> t, so the mean absolute per-token difference must shrink towards 0."""
    K, L = 16, 32
    g = torch.Generator().manual_seed(3)
    backbone = CopyBackbone(torch.randn(L, K, generator=g))
    mdlm = module_factory("mdlm", vocab_size=K, block_length=L)
    mdlm.backbone = backbone
    x = torch.randint(2, K, (8, L), generator=g)
    t = torch.tensor([0.0537, 0.1623, 0.2751, 0.3866, 0.4912, 0.6034, 0.7178, 0.8291])
    ref = mdlm.token_nll({"input_ids": x}, t, torch.Generator().manual_seed(7))
    gaps = []
    for T in (10, 100, 1000, 10000):
        d3pm = module_factory("d3pm", vocab_size=K, block_length=L, T=T)
        d3pm.backbone = backbone
        nll = d3pm.token_nll({"input_ids": x}, t, torch.Generator().manual_seed(7))
        gaps.append((nll - ref).abs().mean().item())
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[0] > 0.1 and gaps[-1] < 1e-3 * ref.abs().mean().item(), gaps


def test_d3pm_reconstruction_and_conditioning(module_factory):
    K, L, T = 10, 6, 50
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(L, K, generator=g)
    m = module_factory("d3pm", vocab_size=K, block_length=L, T=T)
    m.backbone = FixedBackbone(logits)
    x = torch.randint(2, K, (3, L), generator=g)
    t = torch.tensor([0.2, 0.5, 0.9])
    nll = m.token_nll({"input_ids": x}, t, torch.Generator().manual_seed(0))
    log_p = torch.log_softmax(logits, -1)  # mean parameterisation: the mask logit is kept
    recon = -log_p[torch.arange(L)[None], x]  # (3, L)
    z = forward_mask(x, m.schedule.alpha(quantise_time(t, T)), MASK, torch.Generator().manual_seed(0))
    kl = d3pm_absorb_loss(log_p.expand(3, L, K), x, z, quantise_time(t, T), T, MASK)
    assert torch.allclose(nll, recon + kl, atol=1e-5)
    assert torch.allclose(nll[z != MASK], recon[z != MASK])
    # the KL pass is conditioned on sigma(t_T), the reconstruction pass on sigma(0) = 0
    assert torch.allclose(m.backbone.sigmas[0], m.schedule.sigma(quantise_time(t, T)))
    assert torch.all(m.backbone.sigmas[1] == 0)


def test_d3pm_hparams(module_factory):
    assert module_factory("d3pm").T == 1000  # schema default
    assert module_factory("d3pm", T=10).T == 10
    with pytest.raises(ValueError, match="loglinear"):
        module_factory("d3pm", noise={"schedule": "cosine"})


# --- both -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("algo", ["sedd", "d3pm"])
def test_seeded_generator_reproducible(algo, module_factory):
    m = perturbed(module_factory(algo, vocab_size=20, block_length=12))
    assert m.default_time_conditioning
    x = torch.randint(2, 20, (4, 12))
    batch = {"input_ids": x, "attention_mask": torch.ones_like(x)}
    t = torch.tensor([0.1, 0.4, 0.6, 0.9])
    a = m.token_nll(batch, t, torch.Generator().manual_seed(11))
    b = m.token_nll(batch, t, torch.Generator().manual_seed(11))
    c = m.token_nll(batch, t, torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(a).all() and torch.all(a >= 0)
    s1, n1 = m.nelbo(batch, torch.Generator().manual_seed(3))
    s2, n2 = m.nelbo(batch, torch.Generator().manual_seed(3))
    assert torch.equal(s1, s2) and n1 == n2 == x.numel()


@pytest.mark.parametrize("algo", ["sedd", "d3pm"])
def test_gradients_finite(algo, module_factory):
    m = perturbed(module_factory(algo, vocab_size=20, block_length=12, T=10))
    x = torch.randint(2, 20, (4, 12))
    t = torch.tensor([1e-3, 0.05, 0.5, 1.0])  # includes the first grid step t_T = 1/T for d3pm
    m.token_nll({"input_ids": x}, t, torch.Generator().manual_seed(0)).mean().backward()
    grads = [p.grad for p in m.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
