"""Sampler invariants: float64 categorical draws, nucleus filter, posteriors, NFE counts, KV cache."""

import math

import pytest
import torch
from conftest import record_inputs
import torch.nn.functional as F

from dlm.sampling import get_sampler, run_sampler
from dlm.sampling.common import sample_categorical, time_grid, top_p_filter
from dlm.sampling.duo import uniform_posterior


def test_categorical_frequencies_and_unnormalised_weights():
    g = torch.Generator().manual_seed(0)
    w = torch.tensor([2.0, 0.0, 1.0, 5.0])  # unnormalised, one impossible id
    draws = sample_categorical(w.expand(200_000, 4), g)
    freq = torch.bincount(draws, minlength=4).double() / draws.numel()
    assert freq[1] == 0
    assert torch.allclose(freq, (w / w.sum()).double(), atol=4e-3)


def test_categorical_small_probabilities_keep_their_rate():
    # a rare id (probability ~1e-3) is drawn at its true rate, not suppressed
    w = torch.tensor([1.0, 1e-3])
    draws = sample_categorical(w.expand(400_000, 2), torch.Generator().manual_seed(1))
    assert abs(draws.double().mean().item() - 1e-3 / 1.001) < 3e-4


def test_top_p_filter():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    assert torch.allclose(top_p_filter(p, 0.8), torch.tensor([0.5, 0.3, 0.0, 0.0]) / 0.8)
    assert torch.allclose(top_p_filter(p, 0.1), torch.tensor([1.0, 0.0, 0.0, 0.0]))  # always the top entry
    assert torch.equal(top_p_filter(p, 1.0), p)


def test_time_grid():
    ts = time_grid(4)
    assert ts.dtype == torch.float64 and len(ts) == 5 and ts[0] == 1 and ts[-1] == pytest.approx(1e-5)
    with pytest.raises(ValueError):
        time_grid(0)


def test_uniform_posterior_equals_bayes_rule_for_a_perfect_denoiser():
    """With x_theta = onehot(x) the DUO posterior must equal q(z_s | z_t, x) ∝ q(z_t | z_s) q(z_s | x)."""
    K, a_t, a_s = 6, torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.8, dtype=torch.float64)
    a_ts = a_t / a_s
    for x in range(K):
        for zt in range(K):
            probs = F.one_hot(torch.tensor([[x]]), K).double()
            q = uniform_posterior(probs, torch.tensor([[zt]]), a_t, a_s)[0, 0]
            # denominator identity: the numerator sums to K a_t x_theta[z_t] + 1 - a_t
            assert q.sum().item() == pytest.approx((K * a_t * probs[0, 0, zt] + 1 - a_t).item())
            trans = a_ts * F.one_hot(torch.tensor(zt), K).double() + (1 - a_ts) / K  # q(z_t | z_s) over z_s
            marg = a_s * F.one_hot(torch.tensor(x), K).double() + (1 - a_s) / K  # q(z_s | x)
            bayes = trans * marg
            assert torch.allclose(q / q.sum(), bayes / bayes.sum(), atol=1e-12)


class ConstantDenoiser(torch.nn.Module):
    """A backbone that always predicts token `c` (huge logit): every sampler must then emit c."""

    def __init__(self, K, c):
        super().__init__()
        self.K, self.c, self.calls = K, c, 0

    def forward(self, x, sigma=None, kv_cache=None, start=0):
        self.calls += 1
        out = torch.zeros(*x.shape[:2], self.K)
        out[..., self.c] = 50.0
        return out

    def new_cache(self):
        return [{}]


@pytest.mark.parametrize("algo,sampler", [("mdlm", "mdlm_ancestral"), ("udlm", "duo_ancestral"),
                                          ("udlm", "duo_greedy_tail"), ("ar", "ar"), ("ar", "ar_nocache")])
def test_samplers_follow_a_deterministic_denoiser(module_factory, algo, sampler):
    m = module_factory(algo, vocab_size=16, block_length=12).eval()
    m.backbone = ConstantDenoiser(16, 5)
    out = run_sampler(m, sampler, n=3, steps=8, generator=torch.Generator().manual_seed(0))
    toks = out["tokens"]
    assert toks.shape == (3, 12)
    body = toks[:, 1:] if algo == "ar" else toks
    assert torch.all(body == 5)
    if algo == "ar":
        assert torch.all(toks[:, 0] == m.hparams.special_ids["bos"])
        assert out["nfe"] == 11


def test_mdlm_calls_the_network_only_when_a_token_unmasks(module_factory):
    """x_theta is needed only at steps where some position unmasks: NFE <= L (+1) even for T >> L,
    with or without time conditioning (this subsumes MDLM's ddpm_cache)."""
    torch.manual_seed(0)
    for tc in (False, True):
        m = module_factory("mdlm", vocab_size=16, block_length=6, time_conditioning=tc).eval()
        out = run_sampler(m, "mdlm_ancestral", n=1, steps=500, generator=torch.Generator().manual_seed(0))
        assert out["nfe"] <= 6 + 1
        assert not (out["tokens"] == m.mask_id).any()


def test_mdlm_two_stage_step_matches_the_mixture(module_factory):
    """Unmask-then-draw equals sampling the full reverse mixture: each masked position unmasks with
    probability (a_s - a_t)/(1 - a_t), and unmasked tokens follow x_theta."""
    m = module_factory("mdlm", vocab_size=8, block_length=4).eval()
    probs = torch.tensor([0.0, 0.0, 0.1, 0.2, 0.3, 0.1, 0.2, 0.1])  # ids 0 (BOS) and 1 ([MASK]) get nothing
    m.denoise = lambda z, t, rows=None: torch.log(probs.clamp_min(1e-30)).expand(*z.shape, 8)[
        (...,) if rows is None else rows]
    g = torch.Generator().manual_seed(0)
    # one step from t=1 to s=1e-5 unmasks (almost) everything; the final argmax handles the rest
    toks = torch.cat([run_sampler(m, "mdlm_ancestral", n=500, steps=1, generator=g)["tokens"].flatten()
                      for _ in range(4)])
    freq = torch.bincount(toks, minlength=8).double() / toks.numel()
    assert torch.allclose(freq, probs.double(), atol=0.01)


def test_duo_nfe_and_range(module_factory):
    m = module_factory("udlm", vocab_size=16, block_length=6).eval()
    out = run_sampler(m, "duo_greedy_tail", n=2, steps=7, generator=torch.Generator().manual_seed(0))
    assert out["nfe"] == 8  # one call per step plus the greedy tail
    assert out["tokens"].min() >= 0 and out["tokens"].max() < 16


def test_ar_kv_cache_gives_identical_samples(module_factory):
    torch.manual_seed(0)
    m = module_factory("ar", vocab_size=30, block_length=10).eval()
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(0.1 * torch.randn_like(p))
    a = run_sampler(m, "ar", n=4, steps=1, generator=torch.Generator().manual_seed(3))["tokens"]
    b = run_sampler(m, "ar_nocache", n=4, steps=1, generator=torch.Generator().manual_seed(3))["tokens"]
    assert torch.equal(a, b)
    assert not (a == m.mask_id).any()  # [MASK] has -inf logit


def test_sampler_algo_mismatch():
    with pytest.raises(ValueError, match="applies to"):
        get_sampler("mdlm_ancestral", "udlm")
    with pytest.raises(ValueError, match="unknown sampler"):
        get_sampler("nope", "ar")


def test_mdlm_first_step_unmask_rate(module_factory):
    """One MDLM step from t=1 to s unmasks each position with probability (alpha_s - alpha_1)/(1 - alpha_1)."""
    m = module_factory("mdlm", vocab_size=16, block_length=64).eval()
    # 2 steps: t=1 -> s=0.5 -> 1e-5; count how many were unmasked after the first step via a hook
    seen = record_inputs(m, lambda z, t: (z == m.mask_id).float().mean().item())
    run_sampler(m, "mdlm_ancestral", n=200, steps=2, generator=torch.Generator().manual_seed(0))
    a_1, a_s = m.schedule.alpha(torch.tensor(1.0)), m.schedule.alpha(torch.tensor((1 + 1e-5) / 2))
    expected_masked = 1 - float((a_s - a_1) / (1 - a_1))
    assert math.isclose(seen[1], expected_masked, abs_tol=0.01)


def test_nucleus_rules_differ_only_in_the_crossing_token():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    # mass before 0.3 is 0.5 < 0.7: DUO keeps the crossing token; ReMDM keeps only cum <= 0.7
    assert torch.allclose(top_p_filter(p, 0.7, "keep_crossing"), torch.tensor([0.5, 0.3, 0, 0]) / 0.8)
    assert torch.allclose(top_p_filter(p, 0.7, "drop_crossing"), torch.tensor([1.0, 0, 0, 0]))
    # exactly on a boundary both keep the same prefix
    assert torch.allclose(top_p_filter(p, 0.8, "drop_crossing"), top_p_filter(p, 0.8, "keep_crossing"))
    assert torch.allclose(top_p_filter(p, 0.1, "drop_crossing"), torch.tensor([1.0, 0, 0, 0]))  # top kept
    with pytest.raises(ValueError, match="nucleus_rule"):
        top_p_filter(p, 0.5, "other")


def test_ar_prefix_conditioning_keeps_the_prompt_and_matches_the_cache(module_factory):
    from dlm.sampling.common import Conditioning

    torch.manual_seed(0)
    m = module_factory("ar", vocab_size=30, block_length=10).eval()
    rows = [{0: 0, 1: 7, 2: 8}, {0: 0, 1: 9, 2: 4, 3: 5}]  # prompts of different lengths
    cond = Conditioning.from_rows(rows, 10)
    a = run_sampler(m, "ar", 2, 1, torch.Generator().manual_seed(1), cond=cond)["tokens"]
    b = run_sampler(m, "ar_nocache", 2, 1, torch.Generator().manual_seed(1), cond=cond)["tokens"]
    assert torch.equal(a, b)
    assert torch.equal(a[cond.fixed], cond.values[cond.fixed])
    with pytest.raises(ValueError, match="prefix"):
        run_sampler(m, "ar", 2, 1, torch.Generator(), cond=Conditioning.from_rows([{9: 3}, {9: 3}], 10))


def test_run_sampler_rejects_unknown_settings_and_steps(module_factory):
    m = module_factory("mdlm", vocab_size=16, block_length=6).eval()
    with pytest.raises(ValueError, match="unknown setting 'etaa'"):
        run_sampler(m, "mdlm_ancestral", 1, 4, torch.Generator(), settings={"etaa": 1})
    with pytest.raises(ValueError, match=r"^steps = 0 is invalid: expected an integer >= 1$"):
        run_sampler(m, "mdlm_ancestral", 1, 0, torch.Generator())
