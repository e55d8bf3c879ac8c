"""The claims table (dlm.report.claims): interval arithmetic against hand computations, the verdict rule, and
the table built from synthetic metric JSONs (every test kind, not-run rows, degenerate gains)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from dlm.report import claims as C

T2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (tables)


def test_ratio_influence_by_hand():
    r, psi = C.ratio_influence([2.0, 4.0], [1.0, 1.0])
    assert r == 3.0
    assert psi.tolist() == [-1.0, 1.0]
    r, psi = C.ratio_influence([3.0, 3.0], [1.0, 2.0])  # r = 6/3 = 2; psi = (3 - 2, 3 - 4) / 1.5
    assert r == 2.0
    assert np.allclose(psi, [1 / 1.5, -1 / 1.5])


def test_paired_ratio_diff_by_hand():
    # r_a = 6/3 = 2, r_b = 2.5/3; psi_a = (-1, 0, 1), psi_b = (-5/6, 1/6, 4/6); d = (-1/6, -1/6, 1/3)
    # sd(d) = sqrt((1/36 + 1/36 + 1/9) / 2) = sqrt(1/12); se = sqrt(1/12) / sqrt(3) = 1/6
    iv = C.paired_ratio_diff([1, 2, 3], [1, 1, 1], [0, 1, 1.5], [1, 1, 1], "x")
    assert iv.effect == pytest.approx(2 - 2.5 / 3)
    assert iv.hi - iv.effect == pytest.approx(T2 / 6)
    assert iv.effect - iv.lo == pytest.approx(T2 / 6)


def test_paired_identical_runs_give_zero_width():
    s, n = [5.0, 7.0, 6.0, 9.0], [4, 4, 4, 4]
    iv = C.paired_ratio_diff(s, n, s, n, "x")
    assert (iv.effect, iv.lo, iv.hi) == (0.0, 0.0, 0.0)
    assert C.decide(iv, "less", 0.1) == "inconclusive"
    assert C.decide(iv, "close", 0.1) == "holds"


def test_independent_diff_and_welch_df():
    # equal variances and sizes: Welch's df = 2 (n - 1)
    assert C.welch_df(0.5, 5, 0.5, 5) == pytest.approx(8.0)
    a = np.array([1.0, 2.0, 3.0])
    iv = C.independent_ratio_diff(a, np.ones(3), a + 1, np.ones(3), "x")
    # each side: psi = (-1, 0, 1), var/n = 1/3; se = sqrt(2/3); df = (2/3)^2 / (2 (1/3)^2 / 2) = 4
    q = 2.7764451051977987  # t, 97.5%, 4 df
    assert iv.effect == pytest.approx(-1.0)
    assert iv.hi == pytest.approx(-1.0 + q * math.sqrt(2 / 3))


def test_seeds_diff_pooled_sd_by_hand():
    sp, df = C.pooled_sd([[1.0, 2.0, 3.0], [5.0]])
    assert (sp, df) == (1.0, 2)
    iv = C.seeds_diff([1.0, 2.0, 3.0], [5.0], [[1.0, 2.0, 3.0], [5.0]], "x")
    assert iv.effect == -3.0
    assert iv.hi == pytest.approx(-3.0 + T2 * math.sqrt(1 / 3 + 1))
    assert C.decide(iv, "less", 0.1) == "inconclusive"  # -3 + 4.97 > 0
    assert math.isnan(C.seeds_diff([1.0], [2.0], [[1.0], [2.0]], "x").lo)  # no entry with two seeds


@pytest.mark.parametrize("lo,hi,kind,verdict", [
    (-0.3, -0.1, "less", "holds"), (0.1, 0.3, "less", "reversed"), (-0.1, 0.1, "less", "inconclusive"),
    (0.1, 0.3, "greater", "holds"), (-0.3, -0.1, "greater", "reversed"),
    (-0.05, 0.08, "close", "holds"), (0.12, 0.3, "close", "reversed"), (-0.3, -0.1, "close", "reversed"),
    (0.05, 0.2, "close", "inconclusive"),
    (-0.05, 0.3, "not_less", "holds"), (-0.4, -0.2, "not_less", "reversed"), (-0.2, 0.1, "not_less", "inconclusive"),
])
def test_verdict_rule(lo, hi, kind, verdict):
    assert C.decide(C.Interval((lo + hi) / 2, lo, hi, ""), kind, 0.1) == verdict


# --------------------------------------------------------------------------------------------
# the table from synthetic JSONs
# --------------------------------------------------------------------------------------------

def _val(tmp, run, group, seed, seq, tokens=4):
    seq = np.asarray(seq, dtype=float)
    nll = float(seq.sum() / (tokens * len(seq)))
    obj = {"run": run, "group": group, "train_seed": seed, "algo": "x", "val_nll": nll, "val_ppl": math.exp(nll),
           "val_nll_se": 0.01, "seq_nll": seq.tolist(), "seq_tokens": [tokens] * len(seq), "train_steps": 100}
    p = tmp / f"val_{run}.json"
    p.write_text(json.dumps(obj))
    (tmp / f"{run}.tsv").write_text(f"s\tmax_rss\n{obj['train_steps'] * (2.0 if group == 'slow' else 1.0) + seed}"
                                    f"\t{1000 + seed}\n")
    return p


def _gen(tmp, run, sampler, steps, nll, entropy, seed=0, before=None, tokens=None, nfe=None):
    nll = np.asarray(nll, dtype=float)
    samples = tmp / f"s_{run}_{sampler}_{steps}_{seed}.jsonl"
    samples.write_text("".join(json.dumps({"tokens": tokens or [1, 2, 3], "text": "t"}) + "\n" for _ in nll))
    obj = {"run": run, "sampler": sampler, "steps": steps, "seed": seed, "entropy": entropy,
           "sample_nll": nll.tolist(), "sample_tokens": [10] * len(nll), "nfe": nfe or steps, "seconds_per_sample": (nfe or steps) / 10,
           "num_samples": len(nll), "texts": str(samples)}
    if before is not None:
        obj.update(sample_nll_before=list(before), sample_tokens_before=[10] * len(before), entropy_before=4.0)
    p = tmp / f"gen_{run}_{sampler}_{steps}_{seed}.json"
    p.write_text(json.dumps(obj))
    return p


def test_claims_table_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.uniform(20, 24, size=50)
    val = [_val(tmp_path, "good", "good", 1, base), _val(tmp_path, "good_s2", "good", 2, base + 0.04),
           _val(tmp_path, "bad", "bad", 1, base + 8), _val(tmp_path, "bad_s2", "bad", 2, base + 8.04),
           _val(tmp_path, "twin", "twin", 1, base + 0.01), _val(tmp_path, "twin_s2", "twin", 2, base + 0.05),
           _val(tmp_path, "solo", "solo", 1, base), _val(tmp_path, "solo2", "solo2", 1, base + 1),
           _val(tmp_path, "slow", "slow", 1, base), _val(tmp_path, "slow_s2", "slow", 2, base)]
    noise = rng.normal(0, 1, size=40)
    gen = [_gen(tmp_path, "m", "anc", 8, 60 + noise, 4.2), _gen(tmp_path, "m", "greedy", 8, 30 + noise, 1.0),
           _gen(tmp_path, "m", "fine", 8, 40 + noise, 4.1),
           _gen(tmp_path, "m", "sc", 8, 30 + noise, 0.5, before=60 + noise),
           _gen(tmp_path, "m", "cached", 64, 50 + noise, 4.2, nfe=20), _gen(tmp_path, "m", "ddpm", 64, 50 + noise, 4.2),
           _gen(tmp_path, "m", "other", 64, 50 + noise, 4.2, nfe=20, tokens=[1, 2, 4])]
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"entropy": 4.3}))
    spec = {"margin_nats": 0.1, "claims": [
        {"id": "v1", "statement": "good beats bad", "test": "val_better", "a": "good", "b": ["bad", "twin"]},
        {"id": "v2", "statement": "good beats bad", "test": "val_better", "a": "good", "b": "bad"},
        {"id": "v3", "statement": "good matches twin", "test": "val_close", "a": "good", "b": "twin"},
        {"id": "v4", "statement": "one seed each", "test": "val_better", "a": "solo", "b": "solo2"},
        {"id": "v5", "statement": "missing", "test": "val_better", "a": "good", "b": "nowhere"},
        {"id": "g1", "statement": "greedy", "test": "gen_better", "a": {"run": "m", "sampler": "greedy", "steps": 8},
         "b": {"run": "m", "sampler": "anc", "steps": 8}},
        {"id": "g2", "statement": "fine", "test": "gen_better", "a": {"run": "m", "sampler": "fine", "steps": 8},
         "b": {"run": "m", "sampler": "anc", "steps": 8}},
        {"id": "g3", "statement": "worse", "test": "gen_better", "a": {"run": "m", "sampler": "anc", "steps": 8},
         "b": {"run": "m", "sampler": "fine", "steps": 8}},
        {"id": "sc", "statement": "sc", "test": "sc_lowers", "a": {"run": "m", "sampler": "sc", "steps": 8}},
        {"id": "c", "statement": "cache", "test": "same_faster", "a": {"run": "m", "sampler": "cached", "steps": 64},
         "b": {"run": "m", "sampler": "ddpm", "steps": 64}},
        {"id": "c2", "statement": "other tokens", "test": "same_faster",
         "a": {"run": "m", "sampler": "other", "steps": 64}, "b": {"run": "m", "sampler": "ddpm", "steps": 64}},
        {"id": "t", "statement": "time", "test": "train_time_less", "a": "good", "b": "slow"}]}
    (tmp_path / "claims.yaml").write_text(yaml.safe_dump(spec))
    bench = [tmp_path / f"{r}.tsv" for r in ("good", "good_s2", "slow", "slow_s2")]
    df = C.claims_table(tmp_path / "claims.yaml", tmp_path / "claims", val_jsons=val, gen_jsons=gen,
                        bench_files=bench, reference=ref, entropy_margin=0.5)
    v = dict(zip(df["id"], df["verdict"]))
    # v1: good beats bad clearly, but twin equals good: the weakest pair decides, and the row names twin
    assert v["v1"] == "inconclusive" and df.set_index("id").at["v1", "compared"] == "good vs twin"
    assert v["v2"] == "holds"
    assert v["v3"] == "holds"  # the same seed spread, a 0.0025 nats/token offset
    assert v["v4"] == "inconclusive"  # one training seed per entry, whatever the evaluation interval says
    assert "training noise unknown" in df.set_index("id").at["v4", "note"]
    assert v["v5"] == "not run"
    assert v["g1"] == "degenerate"  # a large gain at entropy 1.0 < 4.3 - 0.5
    assert v["g2"] == "holds" and v["g3"] == "reversed"
    assert v["sc"] == "degenerate"  # after-correction entropy 0.5
    assert v["c"] == "holds"  # identical tokens, 20 vs 64 network calls, less time
    assert v["c2"] == "reversed"  # faster, but not the same samples
    assert v["t"] == "holds"  # half the seconds per step over two seeds each
    out = pd.read_csv(tmp_path / "claims.csv")
    assert list(out["verdict"]) == list(df["verdict"])
    assert "Verdict" in (tmp_path / "claims.md").read_text().split("\n")[0]
    assert "holds" in (tmp_path / "claims.tex").read_text()


@pytest.mark.parametrize("unigram_nll,verdict", [(5.52, "degenerate"), (6.50, "holds")])
def test_a_match_of_two_context_free_models_is_degenerate(tmp_path, unigram_nll, verdict):
    """Two entries whose val NLL both lie within the margin of the unigram baseline "match" by having learnt
    nothing beyond token frequencies: degenerate, not a hold. The same pair well below the baseline holds."""
    base = np.random.default_rng(3).uniform(21.6, 22.4, size=40)  # ~5.5 nats/token (4 tokens a sequence)
    val = [_val(tmp_path, "p", "p", 1, base), _val(tmp_path, "p_s2", "p", 2, base + 0.02),
           _val(tmp_path, "q", "q", 1, base + 0.01), _val(tmp_path, "q_s2", "q", 2, base + 0.03)]
    unigram = tmp_path / "val_unigram.json"
    unigram.write_text(json.dumps({"run": "unigram", "algo": "unigram", "val_nll": unigram_nll,
                                   "val_ppl": math.exp(unigram_nll), "val_nll_se": 0.0}))
    spec = {"margin_nats": 0.1, "claims": [{"id": "m", "statement": "p matches q", "test": "val_close",
                                            "a": "p", "b": "q"}]}
    (tmp_path / "claims.yaml").write_text(yaml.safe_dump(spec))
    df = C.claims_table(tmp_path / "claims.yaml", tmp_path / "claims", val_jsons=[*val, unigram])
    row = df.set_index("id").loc["m"]
    assert row["verdict"] == verdict, row.to_dict()
    assert ("unigram baseline" in row["note"]) == (verdict == "degenerate")


def test_unknown_test_is_refused(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"claims": [{"id": "x", "statement": "s", "test": "vibes",
                                                                  "a": "r", "b": "q"}]}))
    with pytest.raises(ValueError, match="unknown test 'vibes'"):
        C.read_claims(tmp_path / "c.yaml")


def test_downstream_close_claim_needs_its_own_margin(tmp_path):
    """An accuracy equivalence margin is a share of questions: it never falls back to margin_nats."""
    claim = {"id": "d", "statement": "s", "test": "downstream_close", "a": "r", "b": "q"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"margin_nats": 0.1, "claims": [claim]}))
    with pytest.raises(ValueError, match=r"claims\[0\] \(d\) has no 'margin'"):
        C.read_claims(tmp_path / "c.yaml")


def test_shipped_claims_file_is_valid():
    from pathlib import Path

    spec = C.read_claims(Path(__file__).resolve().parents[1] / "config" / "claims.yaml")
    assert len({c["id"] for c in spec["claims"]}) == len(spec["claims"])


def test_single_seed_claims_can_be_decided_on_evaluation_noise(tmp_path):
    """Released checkpoints are fixed models: `single_seed: evaluation` decides a one-seed claim on the paired
    evaluation interval (and says so); the default leaves it inconclusive."""
    base = np.random.default_rng(1).uniform(20, 24, size=40)
    val = [_val(tmp_path, "solo", "solo", 1, base), _val(tmp_path, "solo2", "solo2", 1, base + 1)]
    spec = {"claims": [{"id": "v", "statement": "s", "test": "val_better", "a": "solo", "b": "solo2"}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(spec))
    df = C.claims_table(tmp_path / "c.yaml", tmp_path / "t", val_jsons=val)
    assert df.at[0, "verdict"] == "inconclusive"
    df = C.claims_table(tmp_path / "c.yaml", tmp_path / "t", val_jsons=val, single_seed="evaluation")
    assert df.at[0, "verdict"] == "holds" and "evaluation noise only" in df.at[0, "note"]
    with pytest.raises(ValueError, match="single_seed"):
        C.claims_table(tmp_path / "c.yaml", tmp_path / "t", val_jsons=val, single_seed="always")


def _downstream(tmp, run, group, seed, correct):
    d = tmp / run
    d.mkdir()
    (d / "downstream.json").write_text(json.dumps({"run": run, "group": group, "train_seed": seed, "tasks": {}}))
    (d / "downstream_questions.jsonl").write_text("".join(
        json.dumps({"task": "t", "doc_id": i, "acc": float(c)}) + "\n" for i, c in enumerate(correct)))
    return d / "downstream.json"


def test_downstream_claims_paired_over_questions_and_over_seeds(tmp_path):
    # a answers questions 0-59 right, b questions 0-29: paired differences are 0 (30x), 1 (30x), 0 (40x)
    a = [1] * 60 + [0] * 40
    b = [1] * 30 + [0] * 70
    files = [_downstream(tmp_path, "a", "a", 1, a), _downstream(tmp_path, "b", "b", 1, b)]
    spec = {"claims": [{"id": "d", "statement": "a beats b", "test": "downstream_better", "a": "a", "b": "b"}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(spec))
    df = C.claims_table(tmp_path / "c.yaml", tmp_path / "t", downstream_jsons=files, single_seed="evaluation")
    d = np.array([1.0] * 30 + [0.0] * 70)
    q = 1.9842169515086827  # t, 97.5%, 99 df
    assert df.at[0, "effect"] == pytest.approx(0.3)
    assert df.at[0, "hi"] == pytest.approx(0.3 + q * d.std(ddof=1) / 10)
    assert df.at[0, "verdict"] == "holds"
    # over training seeds: a second seed of each, the pooled spread decides
    files += [_downstream(tmp_path, "a_s2", "a", 2, [1] * 58 + [0] * 42),
              _downstream(tmp_path, "b_s2", "b", 2, [1] * 32 + [0] * 68)]
    df = C.claims_table(tmp_path / "c.yaml", tmp_path / "t", downstream_jsons=files)
    assert df.at[0, "interval_over"] == "training seeds: 2 vs 2" and df.at[0, "effect"] == pytest.approx(0.28)
    assert df.at[0, "verdict"] == "holds"  # sd 0.0141 each: 0.28 +- 4.30 * 0.0141
    spec["claims"] = [{"id": "d", "statement": "close", "test": "downstream_close", "margin": 0.05, "a": "a", "b": "b"}]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(spec))
    assert C.claims_table(tmp_path / "c.yaml", tmp_path / "t", downstream_jsons=files).at[0, "verdict"] == "reversed"
