"""The claims table: each qualitative claim of the papers (config/claims.yaml), tested on this run's metric JSONs.

One rule decides every verdict. A claim is a statement about an effect (val NLL difference, log gen-PPL
difference, MAUVE difference, ...); we estimate the effect and its 95% interval, then:

* a directional claim ("A beats B") **holds** if the interval lies entirely on the claimed side of 0,
  is **reversed** if it lies entirely on the other side, and is **inconclusive** otherwise;
* an equivalence claim ("A matches B", "close") **holds** if the interval lies inside (-margin, +margin),
  is **reversed** (they differ) if it lies entirely outside, and is inconclusive otherwise;
* a generative-PPL gain whose better side's entropy is below the held-out text's minus
  `evaluation.entropy_margin` is **degenerate**, never "holds" (low entropy fakes low gen PPL); so is a
  val-PPL equivalence of two entries whose mean NLL both lie within the margin of the unigram baseline's
  (neither uses its context: they match by having learnt nothing else);
* a claim whose runs or sample files this config does not produce is **not run**.

Intervals (Student t, 95%), by what varies:

* training claims (val PPL, training cost) compare config entries over their training-seed runs: the
  difference of the means over seeds with the pooled sd of the claim's entries that have several seeds
  (se = s_p sqrt(1/n_a + 1/n_b), df = sum(n_i - 1)). Where no entry of the claim has two seeds, training
  noise is unknown and the verdict is "inconclusive" (the evaluation-noise interval is still shown);
* evaluation noise of val PPL: paired over the validation sequences, which every run scores with the same
  seeded Monte-Carlo draws (common random numbers): the delta method for a difference of two ratio
  estimators, psi_i = (s_i^a - r_a n_i^a) / mean(n^a) - (s_i^b - r_b n_i^b) / mean(n^b), se = sd(psi) / sqrt(N);
* gen PPL: independent samples (the delta method per file, pooled over sampling seeds), or paired on the
  same samples before and after self-correction;
* MAUVE: Welch's interval over the k-means seeds (and sampling seeds) of each side: it does not cover the
  noise of drawing the samples themselves.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from dlm.config import CLAIM_TESTS, claim_sample_key, read_claims
from dlm.report.tables import write_table
from dlm.utils import read_json, write_text

VERDICT_RULE = (
    "Verdict: a directional claim holds if the 95% interval of its effect lies entirely on the claimed side of 0, "
    "is reversed if entirely on the other side, else inconclusive; an equivalence claim (close, matches) holds "
    "if the interval lies within the margin, reversed if entirely outside it; a gen-PPL gain with entropy below "
    "the held-out text's minus the entropy margin is degenerate, and so is a val-PPL match of two entries that "
    "are both within the margin of the unigram baseline; training claims need several training seeds in at "
    "least one compared entry (else inconclusive).")


# --------------------------------------------------------------------------------------------
# intervals
# --------------------------------------------------------------------------------------------

@dataclass
class Interval:
    """An effect with its 95% interval and what the interval covers."""

    effect: float
    lo: float
    hi: float
    over: str

    @classmethod
    def from_se(cls, effect: float, se: float, df: float, over: str) -> Interval:
        q = float(stats.t.ppf(0.975, df)) if np.isfinite(df) and df > 0 else 1.959963984540054
        if not np.isfinite(se):
            return cls(effect, math.nan, math.nan, over)
        return cls(effect, effect - q * se, effect + q * se, over)


def ratio_influence(s: np.ndarray, n: np.ndarray) -> tuple[float, np.ndarray]:
    """The ratio estimator r = sum(s) / sum(n) (nats per token) and its linearisation per unit,
    psi_i = (s_i - r n_i) / mean(n), so that r_hat - r ~ mean(psi) (the delta method)."""
    s, n = np.asarray(s, dtype=np.float64), np.asarray(n, dtype=np.float64)
    r = float(s.sum() / n.sum())
    return r, (s - r * n) / n.mean()


def paired_ratio_diff(sa, na, sb, nb, over: str) -> Interval:
    """r_a - r_b for two ratio estimators on the same N units (paired), se = sd(psi_a - psi_b) / sqrt(N)."""
    if len(sa) != len(sb):
        raise ValueError(f"paired difference over different units: {len(sa)} vs {len(sb)}")
    ra, pa = ratio_influence(sa, na)
    rb, pb = ratio_influence(sb, nb)
    d = pa - pb
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
    return Interval.from_se(ra - rb, se, len(d) - 1, over)


def independent_ratio_diff(sa, na, sb, nb, over: str) -> Interval:
    """r_a - r_b for ratio estimators on independent units (Welch-Satterthwaite degrees of freedom)."""
    ra, pa = ratio_influence(sa, na)
    rb, pb = ratio_influence(sb, nb)
    va = pa.var(ddof=1) / len(pa) if len(pa) > 1 else math.nan
    vb = pb.var(ddof=1) / len(pb) if len(pb) > 1 else math.nan
    return Interval.from_se(ra - rb, math.sqrt(va + vb), welch_df(va, len(pa), vb, len(pb)), over)


def welch_df(va: float, na: int, vb: float, nb: int) -> float:
    """Welch-Satterthwaite degrees of freedom of a difference with variances va + vb (of the means)."""
    den = (va ** 2 / (na - 1) if na > 1 else 0.0) + (vb ** 2 / (nb - 1) if nb > 1 else 0.0)
    return (va + vb) ** 2 / den if den > 0 else math.inf


def mean_diff_welch(xa: Sequence[float], xb: Sequence[float], over: str) -> Interval:
    """mean(xa) - mean(xb) with Welch's interval (MAUVE over k-means / sampling seeds)."""
    xa, xb = np.asarray(xa, dtype=np.float64), np.asarray(xb, dtype=np.float64)
    va = xa.var(ddof=1) / len(xa) if len(xa) > 1 else math.nan
    vb = xb.var(ddof=1) / len(xb) if len(xb) > 1 else math.nan
    return Interval.from_se(float(xa.mean() - xb.mean()), math.sqrt(va + vb), welch_df(va, len(xa), vb, len(xb)),
                            over)


def pooled_sd(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
    """The pooled standard deviation over the groups with two or more values, and its degrees of freedom
    sum(n_i - 1); (nan, 0) when no group has two values."""
    ss, df = 0.0, 0
    for g in groups:
        g = np.asarray(g, dtype=np.float64)
        if len(g) > 1:
            ss += float(((g - g.mean()) ** 2).sum())
            df += len(g) - 1
    return (math.sqrt(ss / df), df) if df else (math.nan, 0)


def seeds_diff(xa: Sequence[float], xb: Sequence[float], pool: Sequence[Sequence[float]], over: str) -> Interval:
    """mean(xa) - mean(xb) over training seeds, with the pooled sd of `pool` (the claim's entries)."""
    sp, df = pooled_sd(pool)
    se = sp * math.sqrt(1 / len(xa) + 1 / len(xb)) if df else math.nan
    return Interval.from_se(float(np.mean(xa) - np.mean(xb)), se, df, over)


def decide(iv: Interval, kind: str, margin: float) -> str:
    """The verdict of an interval: kind "less" (claimed effect < 0), "greater" (> 0), "close" (|effect| < margin)
    or "not_less" (no gain beyond the margin: effect > -margin)."""
    lo, hi = iv.lo, iv.hi
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"
    if kind == "less":
        return "holds" if hi < 0 else "reversed" if lo > 0 else "inconclusive"
    if kind == "greater":
        return "holds" if lo > 0 else "reversed" if hi < 0 else "inconclusive"
    if kind == "close":
        return "holds" if -margin < lo and hi < margin else "reversed" if hi <= -margin or lo >= margin \
            else "inconclusive"
    if kind == "not_less":
        return "holds" if lo > -margin else "reversed" if hi < 0 else "inconclusive"
    raise ValueError(f"unknown verdict kind {kind!r}")


# --------------------------------------------------------------------------------------------
# the metric JSONs
# --------------------------------------------------------------------------------------------

@dataclass
class Results:
    """The metric JSONs the claims read, indexed: val-PPL JSONs by config entry (group), gen-PPL and MAUVE
    JSONs by (run, sampler, steps), training benchmarks by run."""

    val: dict[str, list[dict]] = field(default_factory=dict)
    gen: dict[tuple[str, str, int], list[dict]] = field(default_factory=dict)
    mauve: dict[tuple[str, str, int], list[dict]] = field(default_factory=dict)
    bench: dict[str, dict] = field(default_factory=dict)
    reference: dict | None = None
    downstream: dict[str, list[dict]] = field(default_factory=dict)

    @classmethod
    def read(cls, val_jsons=(), gen_jsons=(), mauve_jsons=(), bench_files=(), reference=None,
             downstream_jsons=()) -> Results:
        res = cls(reference=read_json(reference) if reference else None)
        for p in downstream_jsons:  # per run: the tasks' accuracies and, beside it, every question's result
            obj = read_json(p)
            questions = Path(p).with_name("downstream_questions.jsonl")
            with open(questions) as f:
                obj["questions"] = [json.loads(line) for line in f if line.strip()]
            res.downstream.setdefault(obj.get("group") or obj["run"], []).append(obj)
        for p in val_jsons:
            obj = read_json(p)
            res.val.setdefault(obj.get("group") or obj["run"], []).append(obj)
        for p in gen_jsons:
            obj = read_json(p)
            res.gen.setdefault((obj["run"], obj["sampler"], int(obj["steps"])), []).append(obj)
        for p in mauve_jsons:
            obj = read_json(p)
            res.mauve.setdefault((obj["run"], obj["sampler"], int(obj["steps"])), []).append(obj)
        for p in bench_files:
            res.bench[Path(p).stem] = read_benchmark(p)
        for runs in [*res.val.values(), *res.downstream.values()]:
            runs.sort(key=lambda o: (o.get("train_seed") is None, o.get("train_seed") or 0, o["run"]))
        return res


def read_benchmark(path: str | os.PathLike) -> dict:
    """The last row of a Snakemake benchmark TSV (the final attempt) as floats: s, max_rss, ..."""
    with open(path) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        raise ValueError(f"{path}: empty benchmark file")
    out = {}
    for k, v in rows[-1].items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


# --------------------------------------------------------------------------------------------
# one row per claim
# --------------------------------------------------------------------------------------------

def _describe(spec: Any) -> str:
    if isinstance(spec, dict):
        return f"{spec['run']} {spec['sampler']} T={spec['steps']}"
    if isinstance(spec, list):
        return ", ".join(map(str, spec))
    return str(spec)


def _val_pair(res: Results, a: str, b: str, pool: list[list[float]]) -> tuple[Interval, Interval]:
    """(training interval, evaluation interval) of val NLL(a) - val NLL(b)."""
    ra, rb = res.val[a], res.val[b]
    xa, xb = [o["val_nll"] for o in ra], [o["val_nll"] for o in rb]
    base_a, base_b = ra[0], rb[0]
    if "seq_nll" in base_a and "seq_nll" in base_b and len(base_a["seq_nll"]) == len(base_b["seq_nll"]):
        ev = paired_ratio_diff(base_a["seq_nll"], base_a["seq_tokens"], base_b["seq_nll"], base_b["seq_tokens"],
                               f"evaluation: paired over {len(base_a['seq_nll'])} sequences")
    else:
        se = math.hypot(base_a.get("val_nll_se") or math.nan, base_b.get("val_nll_se") or math.nan)
        ev = Interval.from_se(base_a["val_nll"] - base_b["val_nll"], se, math.inf, "evaluation: MC s.e., unpaired")
    return seeds_diff(xa, xb, pool, f"training seeds: {len(xa)} vs {len(xb)}"), ev


def _row(claim: dict, compared: str, metric: str, iv: Interval | None, verdict: str, note: str = "",
         a_value: float = math.nan, b_value: float = math.nan) -> dict:
    note = "; ".join(x for x in (note, claim.get("note", "")) if x)
    return {"id": claim["id"], "claim": claim["statement"], "source": claim.get("source", ""), "compared": compared,
            "metric": metric, "a": a_value, "b": b_value,
            "effect": iv.effect if iv else math.nan, "lo": iv.lo if iv else math.nan,
            "hi": iv.hi if iv else math.nan, "interval_over": iv.over if iv else "", "verdict": verdict, "note": note}


def _compared(claim: dict) -> str:
    if claim["test"].startswith("sc_"):
        return f"{_describe(claim['a'])}: after vs before"
    return f"{_describe(claim['a'])} vs {_describe(claim['b'])}"


def _not_run(claim: dict, missing: str) -> dict:
    return _row(claim, _compared(claim), "", None, "not run", f"not in this config: {missing}")


def seed_or_evaluation(tr: Interval, ev: Interval, kind: str, margin: float,
                       single_seed: str) -> tuple[Interval, str, str]:
    """(interval, verdict, note) of a training claim: over training seeds where both entries have several (the
    evaluation interval in the note); where one has a single seed, the evaluation interval, decided on for fixed
    models (`single_seed` "evaluation": released checkpoints) and inconclusive otherwise (training noise unknown)."""
    if np.isfinite(tr.lo):
        return tr, decide(tr, kind, margin), f"evaluation noise alone: [{ev.lo:+.3f}, {ev.hi:+.3f}]"
    if single_seed == "evaluation":
        return ev, decide(ev, kind, margin), "one model per entry: the interval covers evaluation noise only"
    return ev, "inconclusive", "one training seed per entry: training noise unknown"


def claim_val(claim: dict, res: Results, margin: float, single_seed: str = "inconclusive") -> dict:
    a = str(claim["a"])
    bs = [str(b) for b in (claim["b"] if isinstance(claim["b"], list) else [claim["b"]])]
    missing = [x for x in [a, *bs] if x not in res.val]
    if missing:
        return _not_run(claim, ", ".join(missing))
    pool = [[o["val_nll"] for o in res.val[x]] for x in [a, *bs]]
    kind = "close" if claim["test"] == "val_close" else "less"
    rank = {"holds": 0, "inconclusive": 1, "reversed": 2}
    worst = None
    for b in bs:
        iv, verdict, note = seed_or_evaluation(*_val_pair(res, a, b, pool), kind, margin, single_seed)
        key = (rank[verdict], -abs(iv.effect) if kind == "less" else abs(iv.effect))
        if worst is None or key > worst[0]:
            worst = (key, b, iv, note, verdict)
    _, b, iv, note, verdict = worst
    if kind == "close" and "unigram" in res.val:  # a match of two context-free models is vacuous
        floor = res.val["unigram"][0]["val_nll"] - margin
        nll = {x: float(np.mean([o["val_nll"] for o in res.val[x]])) for x in (a, b)}
        if min(nll.values()) > floor:
            verdict = "degenerate"
            note = "; ".join(x for x in (
                f"both at the unigram baseline (NLL {nll[a]:.3f} and {nll[b]:.3f} vs {floor + margin:.3f}): "
                "neither uses its context", note) if x)
    if len(bs) > 1:
        note = "; ".join(x for x in (f"closest of {len(bs)} entries", note) if x)
    a_val = float(np.mean([o["val_ppl"] for o in res.val[a]]))
    b_val = float(np.mean([o["val_ppl"] for o in res.val[b]]))
    return _row(claim, f"{a} vs {b}", "val NLL (nats/token); a, b: val PPL", iv, verdict, note, a_val, b_val)


def _pooled_samples(objs: list[dict], nll: str = "sample_nll", tokens: str = "sample_tokens"):
    s = np.concatenate([np.asarray(o[nll], dtype=np.float64) for o in objs])
    n = np.concatenate([np.asarray(o[tokens], dtype=np.float64) for o in objs])
    return s, n


def _entropy(objs: list[dict], key: str = "entropy") -> float:
    vals = [o.get(key) for o in objs]
    return float(np.mean(vals)) if all(v is not None for v in vals) else math.nan


def _entropy_floor(res: Results, entropy_margin: float) -> float:
    ref = (res.reference or {}).get("entropy")
    return ref - entropy_margin if ref is not None else -math.inf


def claim_gen(claim: dict, res: Results, margin: float, entropy_margin: float) -> dict:
    ka, kb = claim_sample_key(claim["a"]), claim_sample_key(claim["b"])
    missing = [_describe(s) for s, k in ((claim["a"], ka), (claim["b"], kb)) if k not in res.gen]
    if missing:
        return _not_run(claim, ", ".join(missing))
    ga, gb = res.gen[ka], res.gen[kb]
    if any(o.get("sample_nll") is None for o in ga + gb):
        return _row(claim, f"{_describe(claim['a'])} vs {_describe(claim['b'])}", "log gen PPL", None,
                    "inconclusive", "no per-sample scores (a gen PPL of null, or JSONs of an older version)")
    sa, na = _pooled_samples(ga)
    sb, nb = _pooled_samples(gb)
    iv = independent_ratio_diff(sa, na, sb, nb, f"samples: {len(sa)} vs {len(sb)} (one trained model each)")
    verdict = decide(iv, "less", margin)
    ent_a, ent_b = _entropy(ga), _entropy(gb)
    floor = _entropy_floor(res, entropy_margin)
    note = f"entropy {ent_a:.2f} vs {ent_b:.2f} (held-out text {floor + entropy_margin:.2f})"
    if verdict == "holds" and ent_a < floor:
        verdict = "degenerate"
    return _row(claim, f"{_describe(claim['a'])} vs {_describe(claim['b'])}",
                "log gen PPL (nats/token); a, b: gen PPL", iv, verdict, note,
                math.exp(sa.sum() / na.sum()), math.exp(sb.sum() / nb.sum()))


def claim_mauve(claim: dict, res: Results, margin: float) -> dict:
    ka, kb = claim_sample_key(claim["a"]), claim_sample_key(claim["b"])
    missing = [_describe(s) for s, k in ((claim["a"], ka), (claim["b"], kb)) if k not in res.mauve]
    if missing:
        return _not_run(claim, ", ".join(missing))
    xa = [v for o in res.mauve[ka] for v in o["mauve_per_seed"]]
    xb = [v for o in res.mauve[kb] for v in o["mauve_per_seed"]]
    n_files = len(res.mauve[ka]), len(res.mauve[kb])
    iv = mean_diff_welch(xa, xb, f"k-means x sampling seeds: {len(xa)} vs {len(xb)} values "
                                 f"({n_files[0]} and {n_files[1]} sample files; sample noise not covered)")
    return _row(claim, f"{_describe(claim['a'])} vs {_describe(claim['b'])}", "MAUVE", iv,
                decide(iv, "greater", margin), "", float(np.mean(xa)), float(np.mean(xb)))


def _tokens(path: str) -> list[list[int]]:
    with open(path) as f:
        return [json.loads(line)["tokens"] for line in f if line.strip()]


def claim_same_faster(claim: dict, res: Results) -> dict:
    ka, kb = claim_sample_key(claim["a"]), claim_sample_key(claim["b"])
    missing = [_describe(s) for s, k in ((claim["a"], ka), (claim["b"], kb)) if k not in res.gen]
    if missing:
        return _not_run(claim, ", ".join(missing))
    ga, gb = sorted(res.gen[ka], key=lambda o: o["seed"]), sorted(res.gen[kb], key=lambda o: o["seed"])
    same = len(ga) == len(gb) and all(_tokens(x["texts"]) == _tokens(y["texts"]) for x, y in zip(ga, gb))
    nfe_a, nfe_b = (float(np.mean([o["nfe"] for o in g])) for g in (ga, gb))
    sec_a, sec_b = (float(np.mean([o["seconds_per_sample"] for o in g])) for g in (ga, gb))
    if not same:
        verdict = "reversed"
    elif nfe_a < nfe_b and sec_a < sec_b:
        verdict = "holds"
    elif nfe_a >= nfe_b and sec_a >= sec_b:
        verdict = "reversed"
    else:
        verdict = "inconclusive"
    ratio = sec_b / sec_a if sec_a > 0 else math.nan
    note = (f"{'identical' if same else 'different'} tokens in {sum(o['num_samples'] for o in ga)} samples; "
            f"network calls {nfe_a:.0f} vs {nfe_b:.0f}; one timing per file (no interval)")
    return _row(claim, f"{_describe(claim['a'])} vs {_describe(claim['b'])}",
                "speed-up (wall-clock b / a); a, b: s per sample", Interval(ratio, math.nan, math.nan, "exact"),
                verdict, note, sec_a, sec_b)


def claim_self_correction(claim: dict, res: Results, margin: float, entropy_margin: float) -> dict:
    ka = claim_sample_key(claim["a"])
    if ka not in res.gen:
        return _not_run(claim, _describe(claim["a"]))
    objs = res.gen[ka]
    if any(o.get("sample_nll") is None or o.get("sample_nll_before") is None for o in objs):
        return _row(claim, _describe(claim["a"]), "log gen PPL", None, "inconclusive",
                    "no per-sample scores before and after self-correction")
    s1, n1 = _pooled_samples(objs)
    s0, n0 = _pooled_samples(objs, "sample_nll_before", "sample_tokens_before")
    iv = paired_ratio_diff(s1, n1, s0, n0, f"paired over {len(s1)} samples (after vs before)")
    kind = "less" if claim["test"] == "sc_lowers" else "not_less"
    verdict = decide(iv, kind, margin)
    ent1, ent0 = _entropy(objs), _entropy(objs, "entropy_before")
    floor = _entropy_floor(res, entropy_margin)
    gain = np.isfinite(iv.hi) and iv.hi < 0
    if gain and ent1 < floor:
        verdict = "degenerate"  # a gain from collapsed entropy is no gain, whichever way the claim points
    note = f"entropy {ent1:.2f} after vs {ent0:.2f} before (held-out text {floor + entropy_margin:.2f})"
    return _row(claim, f"{_describe(claim['a'])}: after vs before", "log gen PPL (nats/token); a, b: gen PPL", iv,
                verdict, note, math.exp(s1.sum() / n1.sum()), math.exp(s0.sum() / n0.sum()))


def claim_train_cost(claim: dict, res: Results, margin: float) -> dict:
    a, b = str(claim["a"]), str(claim["b"])
    missing = [x for x in (a, b) if x not in res.val or any(o["run"] not in res.bench for o in res.val[x])]
    if missing:
        return _not_run(claim, ", ".join(missing) + " (training runs or their benchmark files)")
    memory = claim["test"] == "train_memory_less"

    def values(group: str) -> list[float]:
        out = []
        for o in res.val[group]:
            bench = res.bench[o["run"]]
            out.append(math.log(bench["max_rss"]) if memory else math.log(bench["s"] / max(int(o["train_steps"]), 1)))
        return out

    xa, xb = values(a), values(b)
    iv = seeds_diff(xa, xb, [xa, xb], f"training seeds: {len(xa)} vs {len(xb)}")
    verdict = decide(iv, "less", margin) if np.isfinite(iv.lo) else "inconclusive"
    note = "" if np.isfinite(iv.lo) else "one training seed per entry: timing noise unknown"
    what = "log peak RSS (MB)" if memory else "log seconds per training step"
    return _row(claim, f"{a} vs {b}", f"{what}; a, b: {'MB' if memory else 's / step'}", iv, verdict, note,
                float(np.exp(np.mean(xa))), float(np.exp(np.mean(xb))))


def _accuracy(obj: dict) -> tuple[float, dict[tuple[str, int], float]]:
    """Mean accuracy over the tasks' questions of one run, and each question's 0/1 result."""
    per_q = {(q["task"], int(q["doc_id"])): float(q["acc"]) for q in obj["questions"]}
    return float(np.mean(list(per_q.values()))), per_q


def claim_downstream(claim: dict, res: Results, margin: float, single_seed: str = "inconclusive") -> dict:
    """Downstream accuracy (all tasks' questions pooled) of a minus b: over training seeds, or paired over the
    same questions (evaluation noise: which questions were drawn) where each entry has one seed."""
    a, b = str(claim["a"]), str(claim["b"])
    missing = [x for x in (a, b) if x not in res.downstream]
    if missing:
        return _not_run(claim, ", ".join(missing) + " (downstream scores)")
    xa, xb = [_accuracy(o)[0] for o in res.downstream[a]], [_accuracy(o)[0] for o in res.downstream[b]]
    tr = seeds_diff(xa, xb, [xa, xb], f"training seeds: {len(xa)} vs {len(xb)}")
    qa, qb = _accuracy(res.downstream[a][0])[1], _accuracy(res.downstream[b][0])[1]
    common = sorted(set(qa) & set(qb))
    d = np.array([qa[k] - qb[k] for k in common])
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
    ev = Interval.from_se(float(d.mean()) if len(d) else math.nan, se, len(d) - 1,
                          f"evaluation: paired over {len(d)} questions")
    kind = "close" if claim["test"] == "downstream_close" else "greater"
    iv, verdict, note = seed_or_evaluation(tr, ev, kind, margin, single_seed)
    return _row(claim, f"{a} vs {b}", "downstream accuracy (share of questions)", iv, verdict, note,
                float(np.mean(xa)), float(np.mean(xb)))


def evaluate_claims(spec: dict, res: Results, entropy_margin: float, single_seed: str = "inconclusive") -> pd.DataFrame:
    """One row per claim of `spec` (config/claims.yaml) on the indexed results. `single_seed`: the verdict of a
    training claim whose entries have one training seed each, "inconclusive" (training noise unknown; the default)
    or "evaluation" (decided on the evaluation-noise interval: for fixed models such as released checkpoints)."""
    if single_seed not in ("inconclusive", "evaluation"):
        raise ValueError(f"single_seed = {single_seed!r} is invalid: expected 'inconclusive' or 'evaluation'")
    margin = float(spec.get("margin_nats", 0.1))
    rows = []
    for claim in spec["claims"]:
        test = claim.get("test")
        if test not in CLAIM_TESTS:
            raise ValueError(f"claim {claim.get('id')!r}: unknown test {test!r}; expected one of {list(CLAIM_TESTS)}")
        if test in ("val_better", "val_close"):
            rows.append(claim_val(claim, res, margin, single_seed))
        elif test == "gen_better":
            rows.append(claim_gen(claim, res, margin, entropy_margin))
        elif test == "mauve_better":
            rows.append(claim_mauve(claim, res, margin))
        elif test == "same_faster":
            rows.append(claim_same_faster(claim, res))
        elif test in ("sc_lowers", "sc_not_lowers"):
            rows.append(claim_self_correction(claim, res, margin, entropy_margin))
        elif test in ("downstream_better", "downstream_close"):
            rows.append(claim_downstream(claim, res, float(claim.get("margin", math.nan)), single_seed))
        else:
            rows.append(claim_train_cost(claim, res, margin))
    return pd.DataFrame(rows)


def fmt_signed(v: float, digits: int = 3) -> str:
    return "–" if not np.isfinite(v) else f"{v:+.{digits}f}"


def fmt_effect(effect: float, lo: float, hi: float) -> str:
    """"effect [lo, hi]", or the effect alone where it has no interval (an exact comparison)."""
    return f"{fmt_signed(effect)} [{fmt_signed(lo)}, {fmt_signed(hi)}]" if np.isfinite(lo) else fmt_signed(effect)


def claims_table(spec_path: str | os.PathLike, out_stem: str | os.PathLike, val_jsons=(), gen_jsons=(),
                 mauve_jsons=(), bench_files=(), reference=None, entropy_margin: float = 0.5,
                 single_seed: str = "inconclusive", downstream_jsons=()) -> pd.DataFrame:
    """Write ``{out_stem}.csv/.md/.tex``: one row per claim with the effect, its 95% interval and the verdict."""
    spec = read_claims(spec_path)
    res = Results.read(val_jsons, gen_jsons, mauve_jsons, bench_files, reference, downstream_jsons)
    df = evaluate_claims(spec, res, entropy_margin, single_seed)
    value = lambda v: "–" if not np.isfinite(v) else f"{v:.4g}"  # noqa: E731
    shown = pd.DataFrame({
        "claim": [f"{c} ({src})" if src else c for c, src in zip(df["claim"], df["source"])],
        "compared": df["compared"], "metric": df["metric"], "a": df["a"], "b": df["b"],
        "effect": [fmt_effect(e, lo, hi) for e, lo, hi in zip(df["effect"], df["lo"], df["hi"])],
        "interval_over": df["interval_over"], "verdict": df["verdict"], "note": df["note"]})
    formats = {"a": value, "b": value}
    labels = {"claim": "Claim (source)", "compared": "Compared (a vs b)", "metric": "Effect measured",
              "effect": "Effect [95% interval]", "interval_over": "Interval over", "verdict": "Verdict",
              "note": "Note"}
    write_table(shown, out_stem, caption="The papers' claims at this scale. " + VERDICT_RULE.replace("%", "\\%"),
                label="tab:claims", formats=formats, labels=labels)
    # the CSV keeps the numbers themselves (the written one has the formatted interval): rewrite it whole
    write_text(f"{out_stem}.csv", df.to_csv(index=False, lineterminator="\n"))
    return df
