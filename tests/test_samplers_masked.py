"""Masked-diffusion samplers: MDLM ddpm vs cached, semi-AR, ReMDM (cap/rescale/conf/loop/FB/DFM),
SEDD (analytic/Euler, on SEDD and SUBS models) and D3PM ancestral."""

import math

import pytest
import torch
from conftest import perturb, record_inputs

from dlm.sampling import run_sampler
from dlm.sampling.common import Conditioning
from dlm.sampling.d3pm import d3pm_grid, d3pm_split, d3pm_unmask_probability
from dlm.sampling.remdm import STRATEGIES, dfm_coefficients, loop_alpha, sigma_max, sigma_t, time_at_alpha
from dlm.sampling.sedd import masked_score_summary, subs_log_score, unmask_probability

K, L = 16, 8
MASK = 1  # tests/conftest.py SPECIAL["mask"]


def perturbed(module, scale=0.5, seed=0):
    return perturb(module, scale, seed)


class PerfectBackbone(torch.nn.Module):
    """Knows the clean sequence x (P,): position i gets `hit` on token x[i % P] and `miss` elsewhere.
    MDLM/D3PM: hit = 50, miss = 0 (x_theta = onehot(x) to ~1e-21). SEDD: raw_y = log p0(y) + log(K - 1) is
    the exact score (dlm.algos.sedd), so hit = log(K - 1), miss = -50 -- a huge hit would claim a score
    far above 1/expm1(sigma) and unmask everything at the first step."""

    def __init__(self, x, hit=50.0, miss=0.0):
        super().__init__()
        self.x, self.hit, self.miss = x, hit, miss

    def forward(self, z, sigma=None, **_):
        B, n = z.shape
        idx = self.x[torch.arange(n) % len(self.x)]  # (n,)
        out = torch.full((B, n, K), self.miss)
        out[:, torch.arange(n), idx] = self.hit
        return out


def perfect(module, x):
    if module.algo == "sedd":
        module.backbone = PerfectBackbone(x, hit=math.log(K - 1), miss=-50.0)
    else:
        module.backbone = PerfectBackbone(x)
    return module


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- MDLM: ddpm vs cached ----------------------------------------------------------------------------

@pytest.mark.parametrize("tc", [False, True])
def test_mdlm_ddpm_equals_cached_and_cached_nfe_is_at_most_L_plus_1(module_factory, tc):
    m = perturbed(module_factory("mdlm", vocab_size=K, block_length=L, time_conditioning=tc))
    T = 4 * L
    for p in ((1.0, 0.9) if not tc else (0.9,)):
        a = run_sampler(m, "mdlm_ancestral", 3, T, gen(1), settings={"nucleus_p": p})
        b = run_sampler(m, "mdlm_ddpm", 3, T, gen(1), settings={"nucleus_p": p})
        assert torch.equal(a["tokens"], b["tokens"])
        assert a["nfe"] <= 3 * L + 1 and T <= b["nfe"]  # a call only where some sequence of the batch unmasks
        assert not (a["tokens"] == MASK).any()
        for seed in range(2):  # one sequence: at most L + 1 calls (MDLM's ddpm_cache bound) whatever T is
            assert run_sampler(m, "mdlm_ancestral", 1, T, gen(seed), settings={"nucleus_p": p})["nfe"] <= L + 1


# --- ReMDM -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["remdm_cap", "remdm_rescale"])
def test_remdm_with_eta_0_is_mdlm(module_factory, sampler):
    m = perturbed(module_factory("mdlm", vocab_size=K, block_length=L))
    for steps, p in ((5, 1.0), (12, 0.9)):
        ref = run_sampler(m, "mdlm_ancestral", 4, steps, gen(3), settings={"nucleus_p": p})
        out = run_sampler(m, sampler, 4, steps, gen(3), settings={"eta": 0.0, "nucleus_p": p})
        assert torch.equal(out["tokens"], ref["tokens"])
        assert out["nfe"] == ref["nfe"] and out["remasked"] == 0


def _grid_pairs(sched):
    ts = torch.linspace(1.0, 1e-5, 21, dtype=torch.float64)
    for i in range(len(ts) - 1):
        for j in (i + 1, min(i + 7, len(ts) - 1)):
            yield ts[i], ts[j], sched.alpha(ts[i]), sched.alpha(ts[j])


def test_sigma_t_stays_in_its_valid_range(module_factory):
    sched = module_factory("mdlm", vocab_size=K, block_length=L).schedule
    conf = -torch.rand(3, L, dtype=torch.float64, generator=gen())
    conf[0, :3] = -math.inf
    conf[1] = -math.inf  # an all-masked row: sigma 0
    n_checked = 0
    for t, _, a_t, a_s in _grid_pairs(sched):
        _, b = dfm_coefficients(float(t))
        for strategy in STRATEGIES:
            for eta in (0.0, 0.008, 0.3, 1.0, 7.0):
                if strategy == "rescale" and eta > 1:
                    continue
                for in_loop in (False, True):
                    sig, smax = sigma_t(strategy, a_t, a_s, eta=eta, confidence=conf, in_loop=in_loop, b_t=b)
                    assert 0.0 <= float(smax) <= 1.0
                    assert float(smax) <= float((1 - a_s) / a_t) * (1 + 1e-12)
                    assert bool((sig >= 0).all())
                    if strategy in ("cap", "rescale", "conf"):  # bounded by construction
                        assert bool((sig <= smax * (1 + 1e-12)).all()), (strategy, eta)
                    else:  # FB / DFM / loop: the original's sigma, not clipped at sigma_max
                        want = {"fb": (a_s - a_t) / a_t, "dfm": b * (a_s - a_t) / a_t,
                                "loop": eta if in_loop else 0.0}[strategy]
                        assert float(sig) == pytest.approx(float(want), rel=1e-12, abs=1e-300)
                    n_checked += 1
                if strategy == "cap":
                    assert float(sig) == pytest.approx(min(eta, float(smax)))
                if strategy == "rescale":
                    assert float(sig) == pytest.approx(eta * float(smax))
                if strategy == "conf":  # at most sigma_max spread over the unmasked positions
                    assert float(sig[0].sum()) == pytest.approx(float(smax))
                    assert torch.all(sig[0, :3] == 0) and torch.all(sig[1] == 0)
    assert n_checked > 500
    one = torch.tensor(1.0, dtype=torch.float64)
    assert float(sigma_max(torch.tensor(0.0, dtype=torch.float64), one)) == 1.0  # alpha_t = 0 convention


def test_forward_backward_last_step_remasks_one_in_T_minus_1(module_factory):
    """The original FB step on the last grid step t = 1e-5 + dt -> s = 1e-5 (T = 8): sigma = (alpha_s - alpha_t)
    / alpha_t = dt (1 - eps) / alpha_t ~ 1/7 = 1/(T - 1), far above sigma_max = (1 - alpha_s)/alpha_t ~ 1.1e-5: every
    unmasked token is remasked with probability 1/7 (the final noise removal then fills it by argmax) and every
    [MASK] unmasks (its probability, above 1, is clipped at 1 as the original's categorical draw does)."""
    from dlm.sampling.common import Conditioning
    from dlm.sampling.remdm import remdm_update

    sched = module_factory("mdlm", vocab_size=K, block_length=L).schedule
    T = 8
    ts = torch.linspace(1.0, 1e-5, T + 1, dtype=torch.float64)
    a_t, a_s = sched.alpha(ts[-2]), sched.alpha(ts[-1])
    sig, smax = sigma_t("fb", a_t, a_s)
    assert float(sig) == pytest.approx(float((1 - 1e-3) * (ts[-2] - ts[-1]) / a_t), rel=1e-12)
    assert abs(float(sig) - 1 / (T - 1)) < 2e-3 and float(smax) < 2e-5
    n, length = 400, 50
    z = torch.randint(2, K, (n, length), generator=gen(3))
    z[:, :5] = MASK
    probs = torch.full((1, K), 1.0 / (K - 1), dtype=torch.float64)
    probs[0, MASK] = 0.0

    def x_theta(z_, t_, rows):
        return probs.expand(int(rows.sum()), K)

    cond = Conditioning(torch.zeros_like(z), torch.zeros_like(z, dtype=torch.bool))
    out, unmask, remask, _ = remdm_update(z, x_theta, ts[-2], a_t, a_s, sig, gen(4), cond, MASK)
    assert unmask[:, :5].all()  # p_unmask > 1, clipped
    frac = remask[:, 5:].double().mean().item()
    se = math.sqrt(float(sig) * (1 - float(sig)) / (n * (length - 5)))
    assert abs(frac - float(sig)) < 4 * se and frac > 0.1


def test_loop_boundary_steps_as_the_original():
    """ReMDM-loop, t_on = 0.55, t_off = 0.05, alpha_on = 0.9, alpha(1) = 0 (the code's): the original takes a step's
    phase from its start time. Hand-derived: 0.56 -> 0.54 stays on the phase-1 line (0.44 * 0.9 / 0.45 = 0.88 ->
    0.46 * 0.9 / 0.45 = 0.92, past alpha_on); 0.06 -> 0.04 is a loop step (0.9 -> 0.9); 0.04 -> 0.02 starts on the
    phase-3 line (1 - 0.04 * 0.1 / 0.05 = 0.92 -> 0.96). `boundary: continuous` (ours) puts each time on its own
    line: 0.88 -> 0.9 and 0.9 -> 0.92."""
    args = (0.0, 0.55, 0.05, 0.9)
    orig = [(loop_alpha(t, *args, phase_of=t), loop_alpha(s, *args, phase_of=t))
            for t, s in ((0.56, 0.54), (0.06, 0.04), (0.04, 0.02))]
    assert orig == [pytest.approx((0.88, 0.92)), pytest.approx((0.9, 0.9)), pytest.approx((0.92, 0.96))]
    cont = [(loop_alpha(t, *args), loop_alpha(s, *args)) for t, s in ((0.56, 0.54), (0.06, 0.04))]
    assert cont == [pytest.approx((0.88, 0.9)), pytest.approx((0.9, 0.92))]


def test_loop_alpha_is_continuous_and_monotone():
    ts = torch.linspace(1.0, 0.0, 2001, dtype=torch.float64).tolist()
    al = [loop_alpha(t, 1e-3, 0.55, 0.05, 0.9) for t in ts]
    assert al[0] == pytest.approx(1e-3) and al[-1] == pytest.approx(1.0)
    assert all(b >= a - 1e-15 for a, b in zip(al, al[1:]))
    assert loop_alpha(0.3, 1e-3, 0.55, 0.05, 0.9) == 0.9
    assert max(abs(b - a) for a, b in zip(al, al[1:])) < 0.01  # no jump at t_on / t_off


def test_loop_network_time_inverts_the_schedule(module_factory):
    """A time-conditioned network is fed the schedule time whose alpha is the loop's alpha."""
    from dlm.diffusion.schedules import get_schedule

    for name in ("loglinear", "cosine"):
        sched = get_schedule(name)
        for a in (0.002, 0.3, 0.9, 0.999):
            assert float(sched.alpha(time_at_alpha(sched, a))) == pytest.approx(a, abs=1e-12)
    m = perturbed(module_factory("mdlm", vocab_size=K, block_length=L, time_conditioning=True))
    seen = record_inputs(m, lambda z, t: float(t[0]))
    out = run_sampler(m, "remdm_loop", 2, 10, gen(), settings={"eta": 0.5})
    assert not (out["tokens"] == MASK).any()
    assert all(0.0 <= t <= 1.0 for t in seen) and any(abs(t - 0.1 / 0.999) < 1e-6 for t in seen)  # alpha_on = 0.9


def test_remdm_loop_phase_two_keeps_the_masked_fraction(module_factory):
    """In the loop phase alpha is held at alpha_on: unmask prob eta alpha_on/(1 - alpha_on), remask prob eta,
    so the masked fraction stays near 1 - alpha_on (brief 3.2)."""
    m = perturbed(module_factory("mdlm", vocab_size=K, block_length=32))
    seen = []
    orig = m.denoise

    def spy(z, t, *rows):
        if 0.1 < float(t[0]) < 0.45:  # well inside the loop phase (t_off, t_on] = (0.05, 0.55]
            seen.append((z == MASK).double().mean().item())
        return orig(z, t, *rows)

    m.denoise = spy
    out = run_sampler(m, "remdm_loop", 16, 40, gen(), settings={"eta": 0.1, "alpha_on": 0.8})
    assert out["remasked"] > 0 and not (out["tokens"] == MASK).any()
    assert len(seen) > 5 and abs(sum(seen) / len(seen) - 0.2) < 0.04


def test_dfm_takes_at_least_T_steps(module_factory):
    m = perturbed(module_factory("mdlm", vocab_size=K, block_length=L))
    for T in (1, 4, 16):
        out = run_sampler(m, "remdm_dfm", 2, T, gen())
        assert out["steps_taken"] >= T and not (out["tokens"] == MASK).any()
    assert out["remasked"] > 0


# --- every sampler: perfect denoiser and conditioning ------------------------------------------------

# (algo, sampler, settings): the remasking samplers with a large eta so that remasking happens
CASES = [
    ("mdlm", "mdlm_ancestral", {}), ("mdlm", "mdlm_ddpm", {}), ("mdlm", "mdlm_semi_ar", {"num_strides": 0}),
    ("mdlm", "sedd_analytic", {}), ("mdlm", "remdm_cap", {"eta": 0.5}), ("mdlm", "remdm_rescale", {"eta": 0.8}),
    ("mdlm", "remdm_conf", {}), ("mdlm", "remdm_loop", {"eta": 0.5}), ("mdlm", "remdm_fb", {}),
    ("mdlm", "remdm_dfm", {}), ("sedd", "sedd_analytic", {}), ("sedd", "sedd_euler", {}),
    ("d3pm", "d3pm_ancestral", {}),
]


def _module(factory, algo):
    return factory(algo, vocab_size=K, block_length=L, **({"T": 24} if algo == "d3pm" else {}))


@pytest.mark.parametrize("algo,sampler,settings", CASES)
def test_a_perfect_denoiser_gives_back_the_sequence(module_factory, algo, sampler, settings):
    x = torch.randint(2, K, (L,), generator=gen(7))
    m = perfect(_module(module_factory, algo).eval(), x)
    for p in (1.0, 0.9):
        out = run_sampler(m, sampler, 3, 12, gen(), settings={**settings, "nucleus_p": p})
        assert torch.equal(out["tokens"], x.expand(3, L))
    if sampler in ("remdm_cap", "remdm_fb", "remdm_dfm", "remdm_conf"):
        assert out["remasked"] > 0  # remasked tokens were predicted again, correctly


def test_sedd_perfect_raw_output_is_the_exact_score(module_factory):
    """raw = log(K - 1) on the clean token gives log S = -log expm1(sigma_t), the SUBS value (brief 2.4)."""
    x = torch.randint(2, K, (L,), generator=gen(7))
    m = perfect(module_factory("sedd", vocab_size=K, block_length=L).eval(), x)
    z = torch.full((2, L), MASK)
    for t in (1.0, 0.5, 1e-3):
        tt = torch.full((2,), t)
        log_S, pi = masked_score_summary(m.log_score(z, tt), MASK)
        want = -math.log(math.expm1(float(m.schedule.sigma(torch.tensor(t, dtype=torch.float64)))))
        assert torch.allclose(log_S, torch.full_like(log_S, want), atol=1e-5)
        assert torch.allclose(pi.argmax(-1), x.expand(2, L))


@pytest.mark.parametrize("algo,sampler,settings", CASES)
def test_conditioning_positions_never_change(module_factory, algo, sampler, settings):
    m = perturbed(_module(module_factory, algo))
    n = 4
    g = gen(11)
    fixed = torch.rand(n, L, generator=g) < 0.35
    values = torch.randint(2, K, (n, L), generator=g)
    cond = Conditioning(values, fixed)
    inputs = []
    name = "log_score" if algo == "sedd" else "denoise"
    orig = getattr(m, name)

    def spy(z, t, *rows):
        inputs.append(z.clone())
        return orig(z, t, *rows)

    setattr(m, name, spy)
    out = run_sampler(m, sampler, n, 10, gen(), cond=cond, settings=settings)
    toks = out["tokens"][:, :L]
    assert torch.equal(toks[fixed], values[fixed])
    assert inputs and all(torch.equal(z[fixed], values[fixed]) for z in inputs)  # every intermediate state
    assert not (out["tokens"] == MASK).any()
    if sampler in ("remdm_cap", "remdm_fb", "remdm_dfm"):
        assert out["remasked"] > 0


# --- semi-AR -----------------------------------------------------------------------------------------

def test_semi_ar_length_prefix_and_first_window(module_factory):
    m = perturbed(module_factory("mdlm", vocab_size=K, block_length=L))
    cond = Conditioning.from_rows([{0: 5, 1: 6, 2: 7}] * 3, L)
    for stride, strides in ((None, 2), (3, 1), (L, 1), (2, 0)):
        settings = {"stride_length": stride, "num_strides": strides}
        out = run_sampler(m, "mdlm_semi_ar", 3, 6, gen(2), cond=cond, settings=settings)
        s = L // 2 if stride is None else stride
        assert out["tokens"].shape == (3, L + strides * s) and out["windows"] == strides + 1
        assert torch.all(out["tokens"][:, :3] == torch.tensor([5, 6, 7]))
        assert not (out["tokens"] == MASK).any()
        # the first window consumes the same draws as mdlm_ancestral and the later ones only carry its tail
        ref = run_sampler(m, "mdlm_ancestral", 3, 6, gen(2), cond=cond)
        assert torch.equal(out["tokens"][:, :L], ref["tokens"])
    for bad in ({"stride_length": 0}, {"stride_length": L + 1}, {"num_strides": -1}):
        with pytest.raises(ValueError):
            run_sampler(m, "mdlm_semi_ar", 1, 4, gen(), settings=bad)


def test_semi_ar_continues_a_periodic_sequence(module_factory):
    """A denoiser that knows a sequence of period `stride` is perfect for every window."""
    stride = 4
    x = torch.randint(2, K, (stride,), generator=gen(5))
    m = perfect(module_factory("mdlm", vocab_size=K, block_length=L).eval(), x)
    out = run_sampler(m, "mdlm_semi_ar", 2, 8, gen(), settings={"stride_length": stride, "num_strides": 3})
    assert torch.equal(out["tokens"], x.repeat(5)[None].expand(2, -1)[:, : L + 3 * stride])


# --- SEDD on a SUBS model ----------------------------------------------------------------------------

def test_sedd_analytic_on_subs_is_the_mdlm_posterior(module_factory):
    """The staggered-score construction of brief 2.4 with the SUBS score equals the MDLM posterior: unmask
    with (e^dsigma - 1)/(e^sigma_t - 1) = (alpha_s - alpha_t)/(1 - alpha_t), token from x_theta; for a perfect
    denoiser this is exact Bayes for the absorbing process."""
    sched = module_factory("mdlm", vocab_size=K, block_length=L).schedule
    probs = torch.softmax(torch.randn(2, 3, K, generator=gen(), dtype=torch.float64), -1)
    probs[..., MASK] = 0
    probs = probs / probs.sum(-1, keepdim=True)
    probs[1, 0] = torch.nn.functional.one_hot(torch.tensor(4), K).double()  # a perfect denoiser row
    for t, s, a_t, a_s in _grid_pairs(sched):
        sig_t = sched.sigma(t)
        log_S, pi = masked_score_summary(subs_log_score(probs, sig_t), MASK)
        P = unmask_probability("analytic", log_S, sched, t, s)
        mdlm = (a_s - a_t) / (1 - a_t)
        assert torch.allclose(P, mdlm.expand_as(P), rtol=1e-9, atol=0)
        assert torch.allclose(pi, probs, atol=1e-12)
        # the original construction (brief 2.4): staggered score times the transposed transition
        dsig = sig_t - sched.sigma(s)
        score = probs / torch.expm1(sig_t)
        score[..., MASK] = 1.0
        stag = torch.exp(dsig) * score
        stag[..., MASK] += (1 - torch.exp(dsig)) * score.sum(-1)
        w = stag * (1 - torch.exp(-dsig))
        w[..., MASK] = stag[..., MASK] * (torch.exp(-dsig) + 1 - torch.exp(-dsig))
        assert torch.allclose(w.sum(-1), torch.ones(2, 3, dtype=torch.float64), atol=1e-9)
        mine = P[..., None] * pi
        mine[..., MASK] = 1 - P
        assert torch.allclose(w, mine, atol=1e-9)
        # Bayes for x = 4: q(z_s = x | z_t = m, x) = (a_s - a_t)/(1 - a_t), q(z_s = m) = (1 - a_s)/(1 - a_t)
        assert float(mine[1, 0, 4]) == pytest.approx(float(mdlm), rel=1e-9)
        assert float(mine[1, 0, MASK]) == pytest.approx(float((1 - a_s) / (1 - a_t)), rel=1e-9)
        # Euler on the SUBS score is the first-order version: (t - s)/t for the loglinear schedule
        P_euler = unmask_probability("euler", log_S, sched, t, s)
        assert float(P_euler[0, 0]) == pytest.approx(min(1.0, float((t - s) / t)), rel=1e-9)


def test_sedd_first_step_unmask_rate_matches_mdlm(module_factory):
    """On a SEDD model with the exact score, one analytic step from t = 1 unmasks each position with the
    MDLM probability (alpha_s - alpha_1)/(1 - alpha_1)."""
    x = torch.randint(2, K, (64,), generator=gen(7))
    m = perfect(module_factory("sedd", vocab_size=K, block_length=64).eval(), x)
    seen = record_inputs(m, lambda z, t: (z == MASK).double().mean().item(), attr="log_score")
    run_sampler(m, "sedd_analytic", 100, 2, gen())
    sched = m.schedule
    a_1, a_s = sched.alpha(torch.tensor(1.0)), sched.alpha(torch.tensor((1 + 1e-5) / 2))
    assert seen[1] == pytest.approx(1 - float((a_s - a_1) / (1 - a_1)), abs=0.015)


# --- D3PM --------------------------------------------------------------------------------------------

def test_d3pm_grid():
    T = 12
    for steps in range(1, T + 1):
        k = d3pm_grid(T, steps)
        assert k[0] == T and k[-1] == 0 and len(k) == steps + 1
        assert all(a > b for a, b in zip(k, k[1:]))
    assert d3pm_grid(T, 4) == [12, 9, 6, 3, 0] and d3pm_grid(T, T) == list(range(T, -1, -1))
    for bad in (0, T + 1):
        with pytest.raises(ValueError, match="discrete grid"):
            d3pm_grid(T, bad)


def test_d3pm_sampler_grid_errors_and_grid_times(module_factory):
    m = perturbed(module_factory("d3pm", vocab_size=K, block_length=L, T=10))
    with pytest.raises(ValueError, match="discrete grid"):
        run_sampler(m, "d3pm_ancestral", 1, 11, gen())
    times = []
    orig = m.denoise

    def spy(z, t, *rows):
        times.append(float(t[0]))
        return orig(z, t, *rows)

    m.denoise = spy
    out = run_sampler(m, "d3pm_ancestral", 2, 4, gen())
    assert out["nfe"] == len(times) <= 4
    assert all(abs(t * 10 - round(t * 10)) < 1e-6 and t > 0 for t in times)  # trained grid times only
    assert not (out["tokens"] == MASK).any()


def test_d3pm_step_is_the_absorbing_posterior_with_mask_mass():
    """P(unmask) and the token law equal sum_x' q(z_s, z_t = m | x') x_theta(x'), alpha = 1 - t, where a
    clean [MASK] stays masked (brief 1.7)."""
    lp = torch.log_softmax(torch.randn(1, 2, K, generator=gen(), dtype=torch.float64), -1)
    x = lp.exp()
    x_m, tok = d3pm_split(lp, MASK)
    for t, s in ((1.0, 0.75), (0.5, 0.25), (0.25, 1 / 12)):
        a_t, a_s = 1 - t, 1 - s
        w = x * (a_s - a_t)  # z_s = y != m from a clean y
        w[..., MASK] = (1 - a_s) * (1 - x[..., MASK]) + x[..., MASK]  # stays masked, or a clean [MASK]
        w = w / w.sum(-1, keepdim=True)
        P = d3pm_unmask_probability(x_m, t, s)
        assert torch.allclose(1 - P, w[..., MASK], atol=1e-12)
        other = w.clone()
        other[..., MASK] = 0
        assert torch.allclose(P[..., None] * tok, other, atol=1e-12)
    assert torch.all(d3pm_unmask_probability(x_m, 1 / 12, 0.0) == 1)  # last step: mask column dropped
