"""The nucleus filter by top-k pre-selection and the lazy nucleus in the uniform-state mixture draws: the same
kept sets as sorting whole rows (hand-derived and random rows, ties, flat rows that need a full sort), and the
same tokens as filtering every position densely."""

import pytest
import torch
from conftest import perturb

from dlm.sampling import run_sampler
from dlm.sampling.common import (DenseDenoiserOutput, Denoiser, DenoiserOutput, nucleus_stats, top_p_filter,
                                 top_p_filter_sorted as dense_filter)


def test_hand_derived_masks():
    p = torch.tensor([[0.05, 0.5, 0.15, 0.3], [0.25, 0.25, 0.25, 0.25]], dtype=torch.float64)
    # row 0, p = 0.7: keep_crossing keeps 0.5 and the crossing 0.3; drop_crossing keeps 0.5 only
    assert torch.equal(top_p_filter(p, 0.7, "keep_crossing")[0] > 0, torch.tensor([False, True, False, True]))
    assert torch.equal(top_p_filter(p, 0.7, "drop_crossing")[0] > 0, torch.tensor([False, True, False, False]))
    # row 1, four ties, p = 0.6: three kept (0.25, 0.5 < 0.6, 0.75 crosses), the lower ids first; drop: two
    assert torch.equal(top_p_filter(p, 0.6, "keep_crossing")[1] > 0, torch.tensor([True, True, True, False]))
    assert torch.equal(top_p_filter(p, 0.6, "drop_crossing")[1] > 0, torch.tensor([True, True, False, False]))
    assert torch.allclose(top_p_filter(p, 0.6, "keep_crossing")[1], torch.tensor([1 / 3] * 3 + [0.0],
                                                                                   dtype=torch.float64))
    s = nucleus_stats(p, 0.7, "keep_crossing")
    assert s.count.tolist() == [2, 3] and s.n_above.tolist() == [1, 0]  # 0.5 above thr 0.3; all tied
    assert s.mass.tolist() == pytest.approx([0.8, 0.75])


@pytest.mark.parametrize("rule", ["keep_crossing", "drop_crossing"])
def test_top_k_preselection_equals_the_full_sort(rule):
    """Peaked, Zipf-flat (nucleus of hundreds of ids: escalation to a full sort at K = 1500 with first_k = 8),
    uniform and quantised (many ties) rows: the same kept set and values as the plain filter."""
    g = torch.Generator().manual_seed(0)
    K = 1500
    peaked = torch.softmax(6 * torch.randn(20, K, generator=g, dtype=torch.float64), -1)
    ranks = torch.stack([torch.randperm(K, generator=g) for _ in range(20)]).double() + 1
    zipf = (1 / ranks) / (1 / ranks).sum(-1, keepdim=True)
    flat = torch.full((3, K), 1.0 / K, dtype=torch.float64)
    quant = torch.randint(1, 5, (20, K), generator=g).double()
    quant = quant / quant.sum(-1, keepdim=True)
    probs = torch.cat([peaked, zipf, flat, quant])
    for p in (0.5, 0.9, 0.95):
        want = dense_filter(probs, p, rule)
        stats = nucleus_stats(probs, p, rule, first_k=8)
        assert torch.equal(stats.kept(probs), want > 0)
        assert torch.allclose(top_p_filter(probs, p, rule), want, rtol=1e-13, atol=0)
        assert torch.equal(stats.count, (want > 0).sum(-1))
        ids = torch.randint(0, K, (probs.shape[0],), generator=g)
        assert torch.equal(stats.kept_at(probs, ids), (want > 0).gather(-1, ids[:, None]).squeeze(-1))
    f32 = probs.float()  # a float32 row: its running sums in float32, as a sort-based filter in float32
    assert torch.equal(top_p_filter(f32, 0.9, rule) > 0, dense_filter(f32, 0.9, rule) > 0)


@pytest.mark.parametrize("algo,sampler,settings,rule", [
    ("udlm", "duo_ancestral", {}, "keep_crossing"), ("udlm", "duo_ancestral", {}, "drop_crossing"),
    ("udlm", "duo_greedy_tail", {}, "keep_crossing"),
    ("udlm", "psi", {"modes": ["pure-posterior", "constant-remdm", "pure-posterior"], "eta": 0.05}, "keep_crossing"),
    ("gidd", "gidd_ancestral", {}, "keep_crossing")])
def test_lazy_nucleus_gives_the_dense_tokens(module_factory, monkeypatch, algo, sampler, settings, rule):
    """The uniform-state samplers with a nucleus filter read x_theta[z] only where the bounds leave the
    component open, yet return the tokens of filtering every position (same seed, same uniforms)."""
    m = perturb(module_factory(algo, vocab_size=40, block_length=24))
    opts = {**settings, "nucleus_p": 0.8, "nucleus_rule": rule}
    fast = run_sampler(m, sampler, n=6, steps=10, generator=torch.Generator().manual_seed(4), settings=opts)
    calls = []
    exact_at = DenoiserOutput.at
    monkeypatch.setattr(DenoiserOutput, "at", lambda self, ids, where=None: calls.append(
        int(ids.numel() if where is None else where.sum())) or exact_at(self, ids, where))
    fast2 = run_sampler(m, sampler, n=6, steps=10, generator=torch.Generator().manual_seed(4), settings=opts)
    monkeypatch.setattr(Denoiser, "output", lambda self, z, t: DenseDenoiserOutput(self, self.log_probs(z, t)))
    dense = run_sampler(m, sampler, n=6, steps=10, generator=torch.Generator().manual_seed(4), settings=opts)
    assert torch.equal(fast["tokens"], dense["tokens"]) and torch.equal(fast2["tokens"], fast["tokens"])
    if rule == "keep_crossing":  # the bounds decide most positions: exact reads at a minority of them
        assert sum(calls) < 0.5 * 6 * 24 * 10, calls
