"""Ψ-samplers, greedy-tail, GIDD's ancestral sampler and GIDD self-correction: exactness against the plain
ancestral samplers, kappa schedules, marginal preservation, Bayes' rule, conditioning, stopping rules."""

import math

import pytest
import torch
from conftest import perturb, record_inputs
import torch.nn.functional as F

from dlm.diffusion.gidd_schedule import HybridSchedule
from dlm.diffusion.schedules import LogLinear
from dlm.sampling import get_sampler, run_sampler
from dlm.sampling.common import Conditioning, Denoiser, DenoiserOutput, draw_mixture
from dlm.sampling.duo import posterior_weights, uniform_posterior
from dlm.sampling.gidd import gidd_posterior, gidd_step, gidd_time_grid, min_p_filter
from dlm.sampling.psi import (masked_psi_rates, psi_kappas, psi_time_grid, sample_psi, segment_sizes,
                              uniform_psi_probs)
from dlm.sampling.self_correct import self_correct, tempered_proposal

PURE = {"modes": ["pure-posterior"] * 3, "time_profile": "linear"}


def noisy(module, seed=0, scale=0.1):
    return perturb(module, scale, seed)


class TargetDenoiser(torch.nn.Module):
    """A perfect denoiser for the single sequence `target` (L,): a huge logit on target[i] at position i."""

    def __init__(self, target, K):
        super().__init__()
        self.target, self.K = target, K

    def forward(self, x, sigma=None, **_):
        out = torch.zeros(*x.shape, self.K)
        return out.scatter_(-1, self.target.expand(x.shape)[..., None], 50.0)


def perfect(module, target):
    module.backbone = TargetDenoiser(target, module.hparams.vocab_size)
    return module.eval()


def run(name, module, n=3, steps=12, seed=0, cond=None, **settings):
    fn, fixed = get_sampler(name, module.algo)
    if cond is None:
        cond = Conditioning.none(n, module.hparams.block_length)
    return fn(module, n=n, steps=steps, generator=torch.Generator().manual_seed(seed), cond=cond,
              nucleus_p=settings.pop("nucleus_p", 1.0), nucleus_rule="keep_crossing", **fixed, **settings)


def psi(module, n=3, steps=12, seed=0, cond=None, **settings):
    if cond is None:
        cond = Conditioning.none(n, module.hparams.block_length)
    return sample_psi(module, n=n, steps=steps, generator=torch.Generator().manual_seed(seed), cond=cond,
                      nucleus_p=settings.pop("nucleus_p", 1.0), nucleus_rule="keep_crossing", **settings)


# --- greedy-tail vs ancestral, Ψ with kappa = 1 --------------------------------------------------------

def test_greedy_tail_and_ancestral_share_every_step_but_the_last(module_factory):
    m = noisy(module_factory("udlm", vocab_size=16, block_length=12))
    anc, greedy = run("duo_ancestral", m, steps=9), run("duo_greedy_tail", m, steps=9)
    assert torch.equal(anc["pre_final"], greedy["pre_final"]) and anc["nfe"] == greedy["nfe"] == 10
    argmax = m.denoise(greedy["pre_final"], torch.full((3,), 1e-5)).argmax(-1)
    assert torch.equal(greedy["tokens"], argmax)
    assert not torch.equal(anc["tokens"], greedy["tokens"])


@pytest.mark.parametrize("settings,final,ref,nucleus_p", [
    (PURE, "ancestral", "duo_ancestral", 1.0), (PURE, "greedy", "duo_greedy_tail", 0.9),
    ({**PURE, "modes": ["constant", "constant", "pure-posterior"]}, "ancestral", "duo_ancestral", 0.9),
    ({**PURE, "modes": ["max-rescale-0", "constant-remdm", "max-capped"], "eta": 0.0}, "greedy",
     "duo_greedy_tail", 1.0)])
def test_psi_with_kappa_one_is_duo_exactly(module_factory, settings, final, ref, nucleus_p):
    m = noisy(module_factory("udlm", vocab_size=16, block_length=12))
    cond = Conditioning.from_rows([{0: 3}, {}, {5: 7, 6: 8}], 12)
    a = run(ref, m, steps=10, cond=cond, nucleus_p=nucleus_p)
    b = psi(m, steps=10, cond=cond, final=final, nucleus_p=nucleus_p, kappa=1.0, **settings)
    assert torch.equal(a["tokens"], b["tokens"]) and a["nfe"] == b["nfe"]


def test_psi_with_kappa_one_is_mdlm_ddpm_exactly(module_factory):
    m = noisy(module_factory("mdlm", vocab_size=16, block_length=12))
    cond = Conditioning.from_rows([{0: 3}, {}, {11: 9}], 12)
    a = run("mdlm_ddpm", m, steps=10, cond=cond)
    b = psi(m, steps=10, cond=cond, **PURE)
    assert torch.equal(a["tokens"], b["tokens"]) and a["nfe"] == b["nfe"]
    c = psi(m, steps=10, cond=cond, seed=1, **PURE)  # a different seed does give other samples
    assert not torch.equal(a["tokens"], c["tokens"])


# --- kappa schedules and time profiles -----------------------------------------------------------------

def test_segment_sizes_use_bankers_rounding():
    assert segment_sizes(21, 0.45, 0.5) == (9, 10, 2)  # 10.5 -> 10
    assert segment_sizes(257, 0.45, 0.5) == (116, 128, 13)  # 128.5 -> 128 (the shipped 256-step loop)
    assert segment_sizes(7, 0.5, 0.5) == (4, 3, 0)  # 3.5 -> 4; the middle is cut to what is left


def test_kappa_schedule_per_mode():
    sched = LogLinear(1e-3)
    ts = psi_time_grid(sched, 20)  # 21 points -> segments of 9, 10, 2
    al = sched.alpha(ts)
    eta = 0.05

    def remdm(sigma_fn, lo, hi):  # expected κ of a ReMDM-style segment [lo, hi)
        a_t, a_s = al[lo:hi - 1], al[lo + 1:hi]
        k = (1 - sigma_fn(a_t, a_s) / (1 - a_s)).clamp(0, 1)
        return torch.cat([k, torch.ones(1, dtype=torch.float64)])

    cap = lambda a_t, a_s: torch.minimum(torch.full_like(a_t, eta), (1 - a_s) / a_t)  # noqa: E731
    cases = {
        "pure-posterior": torch.ones(9, dtype=torch.float64),
        "pure-pc": torch.zeros(9, dtype=torch.float64),
        "constant": torch.full((9,), 0.3, dtype=torch.float64),
        "constant-0.7": torch.full((9,), 0.7, dtype=torch.float64),
        "constant-remdm": remdm(lambda a_t, a_s: torch.full_like(a_t, eta), 0, 9),
        "max-capped": remdm(cap, 0, 9),
        "max-rescale": remdm(lambda a_t, a_s: eta * cap(a_t, a_s), 0, 9),  # as coded: eta * min(eta, .)
    }
    for mode, expected in cases.items():
        k = psi_kappas(ts, sched, [mode, "pure-pc", "pure-posterior"], eta=eta, kappa=0.3)
        assert len(k) == 21 and bool(((k >= 0) & (k <= 1)).all())
        assert torch.allclose(k[:9], expected, atol=1e-12), mode
        assert torch.equal(k[9:19], torch.zeros(10, dtype=torch.float64))
        assert torch.equal(k[19:], torch.ones(2, dtype=torch.float64))
    # every ReMDM-style segment ends with κ = 1; max-rescale is much weaker than max-capped
    k = psi_kappas(ts, sched, ["max-capped", "constant-remdm", "max-rescale"], eta=eta)
    assert k[8] == 1 and k[18] == 1 and k[20] == 1 and (k[:8] < 1).all()
    weak = psi_kappas(ts, sched, ["max-rescale"] * 3, eta=eta)
    assert (weak[:8] > k[:8]).all()
    with pytest.raises(ValueError, match="unknown psi mode"):
        psi_kappas(ts, sched, ["pure-posterior-0.3", "pure-pc", "pure-pc"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        psi_kappas(ts, sched, ["constant-1.5", "pure-pc", "pure-pc"])


def test_segment_fractions_matter_for_equal_modes():
    """Every ReMDM-style segment ends with κ = 1, so three equal max-rescale segments are not one: with the
    catalogue's fractions (0.45, 0.5) on 21 grid points (segments of 9, 10 and 2 points, banker's rounding)
    κ = 1 at points 8, 18 and 20; with DUO++'s duo_max_rescale_eta.sh fractions (0, 0) only at the last point
    (one segment), which the paper config's duo_max_rescale uses."""
    import yaml
    from pathlib import Path

    sched = LogLinear(1e-3)
    ts = torch.linspace(1.0, 1e-5, 21, dtype=torch.float64)
    modes = ["max-rescale"] * 3
    split = psi_kappas(ts, sched, modes, eta=0.05, high_frac=0.45, middle_frac=0.5)
    one = psi_kappas(ts, sched, modes, eta=0.05, high_frac=0.0, middle_frac=0.0)
    assert [i for i, k in enumerate(split.tolist()) if k == 1] == [8, 18, 20]
    assert [i for i, k in enumerate(one.tolist()) if k == 1] == [20]
    owt = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/paper/owt.yaml").read_text())
    v = owt["sampling"]["variants"]["duo_max_rescale"]
    assert (v["high_frac"], v["middle_frac"], v["time_profile"], v["eta"]) == (0.0, 0.0, "linear", 0.05)


def test_loop_time_profile():
    sched = LogLinear(1e-3)
    ts = psi_time_grid(sched, 256, "linear-constant-linear", loop_alpha=0.9)
    assert len(ts) == 257 and ts[0] == 1 and ts[-1] == pytest.approx(1e-5)
    # 116 high points ending at t_c, 128 constant ones, 13 low ones starting at t_c
    assert torch.allclose(ts[115:245], torch.full((130,), 0.1, dtype=torch.float64))
    assert int((ts[1:] == ts[:-1]).sum()) == 129  # n_mid + 1 corrector-only steps
    assert (ts[1:] <= ts[:-1]).all()
    # the loop segment's κ under constant-remdm: 1 - eta / (1 - alpha(t_c)), then 1 at its end
    k = psi_kappas(ts, sched, ["pure-posterior", "constant-remdm", "pure-posterior"], eta=0.01)
    a_c = sched.alpha(torch.tensor(0.1, dtype=torch.float64))
    assert torch.allclose(k[116:243], 1 - 0.01 / (1 - a_c)) and k[243] == 1


def test_identity_steps_of_the_loop_are_skipped(module_factory):
    m = noisy(module_factory("udlm", vocab_size=16, block_length=8))
    out = psi(m, steps=64, modes=["pure-posterior", "constant-remdm", "pure-posterior"],
              time_profile="linear-constant-linear")
    assert out["nfe"] == 64 + 1 - 2  # two κ = 1, dt = 0 steps at the loop's ends; +1 final step


# --- exactness of the step distributions ------------------------------------------------------------

@pytest.mark.parametrize("kappa", [0.0, 0.37, 1.0])
def test_psi_keeps_the_forward_marginals_for_a_perfect_denoiser(kappa):
    K, a_t, a_s = 5, torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.75, dtype=torch.float64)
    for x in range(K):
        probs = F.one_hot(torch.full((1, K), x), K).double()  # (1, K, K): one row per value of z_t
        z = torch.arange(K)[None]  # (1, K) every z_t
        q_t = a_t * F.one_hot(torch.tensor(x), K).double() + (1 - a_t) / K  # q_t(z_t | x)
        psi_ = uniform_psi_probs(probs, z, a_t, a_s, kappa)[0]  # (K, K) Ψ(z_s | z_t)
        assert torch.allclose(psi_.sum(-1), torch.ones(K, dtype=torch.float64))
        q_s = a_s * F.one_hot(torch.tensor(x), K).double() + (1 - a_s) / K
        assert torch.allclose(q_t @ psi_, q_s, atol=1e-14)
    # masked: P(z_s = x) = α_t (1 - remask) + (1 - α_t) unmask = α_s
    p_un, p_re = masked_psi_rates(a_t, a_s, kappa)
    assert 0 <= p_un <= 1 and 0 <= p_re <= 1
    assert float(a_t * (1 - p_re) + (1 - a_t) * p_un) == pytest.approx(float(a_s), abs=1e-14)


def _dense_mixture(x_theta: torch.Tensor, z: torch.Tensor, w) -> torch.Tensor:
    """w_x x_theta + w_u / K + w_z e_z, normalised: (n, L, K) float64."""
    w_x, w_u, w_z = w
    K = x_theta.shape[-1]
    dense = w_x[..., None] * x_theta + w_u[..., None] / K + w_z[..., None] * F.one_hot(z, K).double()
    return dense / dense.sum(-1, keepdim=True)


@pytest.mark.parametrize("kappa", [0.0, 0.37, 1.0])
def test_mixture_weights_are_the_dense_posterior_and_psi_step(kappa):
    """The three-component form the samplers draw from equals the dense posterior / Ψ-step (and the final
    step x_theta ⊙ (K α_t e_z + 1 - α_t)) to float64 rounding, for an arbitrary x_theta."""
    g = torch.Generator().manual_seed(0)
    K = 7
    x_theta = torch.softmax(3 * torch.randn(4, 5, K, generator=g, dtype=torch.float64), -1)  # (n, L, K)
    z = torch.randint(0, K, (4, 5), generator=g)
    a_t, a_s = torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.65, dtype=torch.float64)
    x_z = x_theta.gather(-1, z[..., None]).squeeze(-1)
    mix = _dense_mixture(x_theta, z, posterior_weights(x_z, a_t, a_s, K, kappa))
    ref = uniform_psi_probs(x_theta, z, a_t, a_s, kappa)
    assert torch.allclose(mix, ref / ref.sum(-1, keepdim=True), atol=1e-15)
    if kappa == 1.0:
        post = uniform_posterior(x_theta, z, a_t, a_s)
        assert torch.allclose(mix, post / post.sum(-1, keepdim=True), atol=1e-15)
        final = x_theta * (K * a_t * F.one_hot(z, K).double() + 1 - a_t)
        mix1 = _dense_mixture(x_theta, z, posterior_weights(x_z, a_t, torch.ones_like(a_t), K))
        assert torch.allclose(mix1, final / final.sum(-1, keepdim=True), atol=1e-15)


@pytest.mark.parametrize("nucleus_p", [1.0, 0.8])
def test_draw_mixture_frequencies(nucleus_p):
    """Two-stage draws (component, then token) follow the dense mixture: empirical frequencies over 20000
    positions sharing one distribution are within 5 standard errors of it, with and without a nucleus filter."""
    K, n = 6, 20000
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    log_p = torch.log_softmax(logits, -1).expand(1, n, K)  # (1, n, K)
    den = Denoiser(module=None, nucleus_p=nucleus_p)
    out = DenoiserOutput(den, log_p)
    z = torch.full((1, n), 4)
    a_t, a_s = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.6, dtype=torch.float64)
    w = posterior_weights(out.at(z), a_t, a_s, K, 0.5)
    draws = draw_mixture(out, z, lambda x_z: (*posterior_weights(x_z, a_t, a_s, K, 0.5)[:2],
                                              [(posterior_weights(x_z, a_t, a_s, K, 0.5)[2], z)]),
                         K, torch.Generator().manual_seed(3))
    want = _dense_mixture(den.filter(log_p), z, w)[0, 0]  # (K,)
    freq = torch.bincount(draws.flatten(), minlength=K).double() / n
    se = (want * (1 - want) / n).sqrt().clamp_min(1e-4)
    assert ((freq - want).abs() <= 5 * se).all(), (freq, want)


def test_masked_psi_step_frequencies(module_factory):
    """The two-stage masked step unmasks and remasks at the Ψ rates (grid 1 -> 2/3 -> 1/3 -> 1e-5)."""
    m = module_factory("mdlm", vocab_size=8, block_length=64).eval()
    ts = psi_time_grid(m.schedule, 3)
    seen = record_inputs(m)
    psi(m, n=64, steps=3, modes=["constant"] * 3, kappa=0.4, time_profile="linear")
    a = m.schedule.alpha(ts)
    z1, z2 = seen[1], seen[2]  # the states after the first and the second step
    p_un1, _ = masked_psi_rates(a[0], a[1], 0.4)
    p_un2, p_re2 = masked_psi_rates(a[1], a[2], 0.4)
    assert float((z1 != m.mask_id).double().mean()) == pytest.approx(float(p_un1), abs=0.02)
    clean, masked = z1 != m.mask_id, z1 == m.mask_id
    remasked = ((z2 == m.mask_id) & clean).double().sum() / clean.double().sum()
    unmasked = ((z2 != m.mask_id) & masked).double().sum() / masked.double().sum()
    assert float(remasked) == pytest.approx(float(p_re2), abs=0.03) and float(p_re2) > 0.1
    assert float(unmasked) == pytest.approx(float(p_un2), abs=0.04)


def test_gidd_posterior_is_bayes_rule_for_a_perfect_denoiser():
    K, mask = 6, 1
    sched = HybridSchedule(K, mask, p_uniform=0.2)
    t, s = torch.tensor(0.7, dtype=torch.float64), torch.tensor(0.35, dtype=torch.float64)

    def mixing(tt):  # β_t π_t as a vector
        _, m_, u_ = sched.shares(tt)
        v = torch.full((K,), float(u_), dtype=torch.float64)
        v[mask] = m_
        return v

    a_ts = sched.alpha(t) / sched.alpha(s)
    Q = a_ts * torch.eye(K, dtype=torch.float64) + (mixing(t) - a_ts * mixing(s))[None]  # Q[z_s, z_t]
    assert (Q >= 0).all() and torch.allclose(Q.sum(-1), torch.ones(K, dtype=torch.float64))
    for x in [j for j in range(K) if j != mask]:
        onehot = F.one_hot(torch.tensor(x), K).double()
        q_s = sched.marginal(onehot[None, None], s[None])[0, 0]
        q_t = sched.marginal(onehot[None, None], t[None])[0, 0]
        assert torch.allclose(q_s @ Q, q_t, atol=1e-14)  # the transition carries q_s to q_t
        post = gidd_posterior(onehot.expand(1, K, K), torch.arange(K)[None], sched, t, s)[0]  # (z_t, z_s)
        bayes = Q.T * q_s[None]  # [z_t, z_s] = q(z_t | z_s) q(z_s | x)
        assert torch.allclose(post, bayes / bayes.sum(-1, keepdim=True), atol=1e-13)


@pytest.mark.parametrize("z_t", [1, 3])  # [MASK] and a token
def test_gidd_two_stage_step_follows_the_posterior(z_t):
    """`gidd_step` (component, then token) draws from `gidd_posterior`: frequencies over 40000 positions
    within 5 standard errors, for a z_t that is [MASK] and one that is a token."""
    K, mask, n = 6, 1, 40000
    sched = HybridSchedule(K, mask, p_uniform=0.2)
    t, s = torch.tensor(0.7, dtype=torch.float64), torch.tensor(0.35, dtype=torch.float64)
    logits = torch.tensor([0.5, -torch.inf, 2.0, 1.0, -0.5, 0.0])  # GIDD's x_theta is 0 at [MASK]
    log_p = torch.log_softmax(logits, -1).expand(1, n, K)
    z = torch.full((1, n), z_t)
    draws = gidd_step(DenoiserOutput(Denoiser(None), log_p), z, sched, t, s, K, torch.Generator().manual_seed(5))
    want = gidd_posterior(log_p[:, :1].exp(), z[:, :1], sched, t, s)[0, 0]  # (K,)
    freq = torch.bincount(draws.flatten(), minlength=K).double() / n
    se = (want * (1 - want) / n).sqrt().clamp_min(1e-4)
    assert ((freq - want).abs() <= 5 * se).all(), (freq, want)


def test_gidd_grid_and_min_p():
    ts = gidd_time_grid(4, 1e-4)
    assert ts[0] == pytest.approx(1e-4) and ts[-1] == pytest.approx(1 - 1e-4) and len(ts) == 5
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.3, 0.25, 0.25, 0.2]], dtype=torch.float64)
    assert torch.allclose(min_p_filter(p, 0.1)[0], torch.tensor([0.5, 0.3, 0.15, 0.0], dtype=torch.float64) / 0.95)
    assert torch.equal(min_p_filter(p, 0.5)[1], torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))  # keeps the max


def test_gidd_nfe_and_no_mask_left(module_factory):
    m = noisy(module_factory("gidd", vocab_size=16, block_length=12, p_uniform=0.1))
    out = run("gidd_ancestral", m, steps=6)
    assert 6 <= out["nfe"] <= 7  # one call per transition (+1 only if a [MASK] survived)
    assert not (out["tokens"] == m.mask_id).any()


# --- perfect denoisers and conditioning ----------------------------------------------------------------

TARGET = torch.tensor([0, 5, 9, 2, 14, 7, 7, 3, 11, 0, 6, 15])  # no [MASK] (id 1)
CASES = [
    ("udlm", "duo_ancestral", {}), ("udlm", "duo_greedy_tail", {}),
    ("udlm", "psi", {}),  # the default: posterior / constant-remdm loop / posterior
    ("udlm", "psi", {"modes": ["max-rescale"] * 3, "eta": 0.05, "time_profile": "linear"}),
    ("udlm", "psi", {"modes": ["pure-pc", "max-capped", "constant"], "kappa": 0.5, "final": "greedy"}),
    ("mdlm", "psi", {}), ("mdlm", "psi", {"modes": ["pure-pc"] * 3, "time_profile": "linear"}),
    ("gidd", "gidd_ancestral", {}), ("gidd", "gidd_ancestral", {"min_p": 0.05}),
    ("mdlm", "mdlm_ancestral", {}), ("mdlm", "mdlm_ddpm", {}),
]


@pytest.mark.parametrize("algo,name,settings", CASES)
def test_a_perfect_denoiser_gives_the_known_sequence(module_factory, algo, name, settings):
    kw = {"p_uniform": 0.0} if algo == "gidd" else {}  # p_u = 0: no uniform noise left at t_eps
    m = perfect(module_factory(algo, vocab_size=16, block_length=12, **kw), TARGET)
    out = run_sampler(m, name, 4, 40, torch.Generator().manual_seed(0), settings=settings)
    assert torch.equal(out["tokens"], TARGET.expand(4, -1))


def test_gidd_with_uniform_noise_nearly_recovers_a_perfect_denoiser(module_factory):
    m = perfect(module_factory("gidd", vocab_size=16, block_length=12, p_uniform=0.1), TARGET)
    out = run("gidd_ancestral", m, n=16, steps=32)
    # the chain ends at t_eps, where a fraction ~c_t / C_t ~ 2e-3 of tokens is still uniform noise
    assert (out["tokens"] == TARGET).double().mean() > 0.97


@pytest.mark.parametrize("algo,name,settings", CASES)
def test_conditioning_positions_never_change(module_factory, algo, name, settings):
    kw = {"p_uniform": 0.2} if algo == "gidd" else {}
    m = noisy(module_factory(algo, vocab_size=16, block_length=12, **kw))
    rows = [{0: 4, 1: 5}, {11: 2}, {3: 9, 7: 9, 8: 0}]
    cond = Conditioning.from_rows(rows, 12)
    seen = record_inputs(m)
    out = run_sampler(m, name, 3, 16, torch.Generator().manual_seed(0), cond=cond, settings=settings)
    for z in seen + [out["tokens"]]:
        assert torch.equal(z[cond.fixed], cond.values[cond.fixed])


# --- self-correction -------------------------------------------------------------------------------

class ShiftModel:
    """A deterministic fake denoiser: position 0 wants token 3, position i > 0 wants z[i-1] + 1 (mod K),
    so a sequence converges to 3, 4, 5, ... after up to L corrections (with tokens_per_step = L)."""

    def __init__(self, K=16, L=10):
        self.K, self.L = K, L

    def denoise(self, z, t, rows=None):
        assert rows is None  # self-correction needs every position
        want = torch.cat([torch.full_like(z[:, :1], 3), (z[:, :-1] + 1) % self.K], 1)  # (n, L)
        return torch.log_softmax(30.0 * F.one_hot(want, self.K).float(), -1)


@pytest.mark.parametrize("K,temperature,spread", [(64, 0.1, 0.3), (97, 0.5, 2.0), (130, 0.1, 8.0)])
def test_tempered_proposal_draws_exactly_from_the_tempered_softmax(K, temperature, spread):
    """The lazy draw (argmax for certain, else block-wise inverse CDF of the tail) has the distribution of
    softmax(logp / T), returns that probability for every proposal that changes z, and never moves a fixed
    position. Flat rows (spread 0.3: every position takes the full path), peaked ones (8.0: most positions
    are certain) and a prime K (blocks of 1)."""
    g = torch.Generator().manual_seed(0)
    tight = torch.zeros(1, K)
    tight[0, 5] = temperature * math.log(K - 1)  # all others equal: the tail bound is exact and q = 1/2
    patterns = torch.log_softmax(torch.cat([spread * torch.randn(2, K, generator=g), tight]), -1)  # (3, K)
    N = 6000
    logp = patterns.repeat_interleave(N, 0)[None]  # (1, 3N, K)
    z = torch.randint(0, K, (1, 3 * N), generator=g)
    agree = torch.rand(z.shape, generator=g) < 0.7  # mostly z = argmax, as in a sequence being corrected:
    z = torch.where(agree, logp.argmax(-1), z)  # there the sure draws skip the pass over K
    fixed = torch.zeros_like(z, dtype=torch.bool)
    fixed[0, ::50] = True
    prop, prob, arg = tempered_proposal(logp, z, fixed, temperature, torch.Generator().manual_seed(1))
    assert torch.equal(arg, logp.argmax(-1))
    assert torch.equal(prop[fixed], z[fixed])
    p = torch.softmax(patterns.double() / temperature, -1)  # (3, K)
    changed = prop != z
    want = p.repeat_interleave(N, 0)[None].gather(-1, prop[..., None]).squeeze(-1)
    assert torch.allclose(prob[changed], want[changed], rtol=1e-5, atol=1e-12)
    free = ~fixed[0]
    for i in range(3):
        draws = prop[0, i * N:(i + 1) * N][free[i * N:(i + 1) * N]]
        freq = torch.bincount(draws, minlength=K).double() / len(draws)
        se = (p[i] * (1 - p[i]) / len(draws)).sqrt()
        assert ((freq - p[i]).abs() <= 5 * se + 1e-3).all(), (i, (freq - p[i]).abs().max())


def test_self_correction_batched_equals_per_sequence():
    model, L = ShiftModel(), 10
    fixed_point = (3 + torch.arange(L)) % 16
    almost = fixed_point.clone()
    almost[-1] = 0
    z = torch.stack([fixed_point, almost, torch.randint(0, 16, (L,), generator=torch.Generator().manual_seed(0))])
    kw = dict(steps=20, temperature=0.01, patience=2, tokens_per_step=L)
    batched = self_correct(model, z, torch.Generator().manual_seed(0), **kw)
    singles = [self_correct(model, z[i:i + 1], torch.Generator().manual_seed(i), **kw) for i in range(3)]
    assert torch.equal(batched["tokens"], torch.cat([s["tokens"] for s in singles]))
    for key in ("sc_steps_mean", "sc_changes_mean", "sc_init_acc", "sc_final_acc", "sc_converged",
                "sc_early_stopped"):
        assert batched[key] == pytest.approx(sum(s[key] for s in singles) / 3), key
    # 1 step (converged at once), 2 steps (one fix, then converged), patience + 2 = 4 steps (early stop)
    assert [s["sc_steps_mean"] for s in singles] == [1.0, 2.0, 4.0]
    assert [s["sc_converged"] for s in singles] == [1.0, 1.0, 0.0]
    assert [s["sc_early_stopped"] for s in singles] == [0.0, 0.0, 1.0]
    assert torch.equal(singles[1]["tokens"][0], fixed_point)
    # the early-stopped sequence kept the state before its discarded last proposal: 3 steps applied
    assert torch.equal(singles[2]["tokens"][0, :3], fixed_point[:3])
    assert batched["nfe"] == 4  # a batched call per step while any sequence runs (the first shared with init_acc)
    # without early stopping every step runs
    assert self_correct(model, z, torch.Generator(), **{**kw, "early_stopping": False})["sc_steps_mean"] == 20


def test_self_correction_fixes_a_corrupted_token_and_stops(module_factory):
    m = perfect(module_factory("gidd", vocab_size=16, block_length=12, p_uniform=0.1), TARGET)
    z = TARGET.repeat(3, 1)
    z[0, 4], z[1, 0], z[2, 9] = 8, 1, 2  # one corrupted token each (one of them [MASK])
    out = self_correct(m, z, torch.Generator().manual_seed(0))
    assert torch.equal(out["tokens"], TARGET.expand(3, -1))
    assert out["sc_steps_mean"] == 2.0 and out["sc_converged"] == 1.0 and out["sc_early_stopped"] == 0.0
    assert out["sc_changes_mean"] == 1.0 and out["sc_final_acc"] == 1.0
    assert out["sc_init_acc"] == pytest.approx(11 / 12) and out["nfe"] == 2
    same = self_correct(m, TARGET.expand(2, -1), torch.Generator().manual_seed(0))
    assert torch.equal(same["tokens"], TARGET.expand(2, -1)) and same["sc_steps_mean"] == 1.0 and same["nfe"] == 1


@pytest.mark.parametrize("algo", ["gidd", "udlm", "mdlm"])
def test_self_correction_never_touches_fixed_positions(module_factory, algo):
    kw = {"p_uniform": 0.2} if algo == "gidd" else {}
    m = noisy(module_factory(algo, vocab_size=16, block_length=12, **kw))
    cond = Conditioning.from_rows([{0: 4, 1: 5}, {11: 2}, {3: 9, 7: 9, 8: 0}, {}], 12)
    z = cond.apply(torch.randint(2, 16, (4, 12), generator=torch.Generator().manual_seed(1)))
    out = self_correct(m, z, torch.Generator().manual_seed(0), cond=cond, steps=8, temperature=1.0,
                       tokens_per_step=12, early_stopping=False)
    assert torch.equal(out["tokens"][cond.fixed], cond.values[cond.fixed])
    stats = {k: v for k, v in out.items() if k.startswith("sc_")}
    assert set(stats) == {"sc_steps_mean", "sc_changes_mean", "sc_init_acc", "sc_final_acc", "sc_converged",
                          "sc_early_stopped"}
    assert all(type(v) is float for v in stats.values())
    assert out["tokens"].shape == (4, 12) and out["nfe"] == 8 and stats["sc_steps_mean"] == 8.0
    if algo != "mdlm":
        assert stats["sc_changes_mean"] > 0  # temperature 1 and 12 tokens per step: something moved
    else:
        assert stats["sc_changes_mean"] == 0  # SUBS carry-over: x_theta is one-hot on unmasked inputs


def test_run_sampler_with_self_correction(module_factory):
    m = noisy(module_factory("gidd", vocab_size=16, block_length=12, p_uniform=0.1))
    out = run_sampler(m, "gidd_ancestral", 2, 8, torch.Generator().manual_seed(0),
                      settings={"self_correct": True, "sc_steps": 4})
    assert out["tokens"].shape == (2, 12) and out["tokens_before"].shape == (2, 12)
    assert 8 + 1 <= out["nfe"] <= 8 + 1 + 4
    assert 0.0 <= out["sc_converged"] <= 1.0
