"""The samplers' tables, built from the gen-PPL JSONs alone (each carries its sample file's sampler,
settings, steps, seed, network calls and wall-clock; `dlm.sample.sample_summary`).

* `distill_table`   - DUO paper Tables 6/7: gen PPL (entropy) vs steps for DUO base / distilled (DCD) and
                      MDLM / MDLM distilled (SDTT), ancestral and greedy-tail.
* `remdm_table`     - ReMDM: MDLM vs the remasking strategies and correctors, MAUVE, gen PPL and entropy per T.
* `speed_table`     - the MDLM README's wall-clock table: seconds per sample, network calls and tokens/s of
                      ddpm vs cached vs analytic (and every other sampler) at each T.
* `semi_ar_table`   - MDLM semi-autoregressive generation beyond the block: gen PPL and seconds per sequence.
* `self_correction_table` - GIDD: gen PPL and entropy before and after self-correction, by p_u.
Every gen PPL is shown with its entropy (and spread over seeds when there are several): a low gen PPL
at a low entropy is degenerate text, not quality. The Note column flags it by the one rule of every gen-PPL
table (`dlm.report.tables.low_entropy`: entropy below the held-out text's minus `evaluation.entropy_margin`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from dlm.report.tables import ENTROPY_MARGIN, _sort, entropy_notes, entropy_rule, reference_entropy, write_table
from dlm.utils import read_json

KEYS = ["run", "algo", "sampler", "sampler_kind", "steps"]


def sample_metrics(json_paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One row per gen-PPL JSON: run, algo, sampler (variant), sampler_kind, steps, seed, condition,
    self_correct, nucleus_p, p_uniform, graph (SEDD's) and the metrics (NaN where absent)."""
    rows = []
    for p in json_paths:
        d = read_json(p)
        for key in ("run", "algo", "sampler", "steps"):  # gen_ppl may be null (nothing to score; a dash)
            if d.get(key) is None:
                raise ValueError(f"{p}: required key {key!r} is missing or null")
        settings = d.get("sampler_settings") or {}
        rows.append({
            "run": d["run"], "algo": d["algo"], "sampler": d["sampler"],
            "sampler_kind": d.get("sampler_kind") or d["sampler"], "steps": int(d["steps"]),
            "seed": d.get("seed"), "condition": d.get("condition") or "none",
            "self_correct": bool(settings.get("self_correct", False)),
            "nucleus_p": d.get("nucleus_p") if d.get("nucleus_p") is not None else 1.0,
            "p_uniform": (d.get("algo_args") or {}).get("p_uniform", np.nan),
            "graph": (d.get("algo_args") or {}).get("graph", "absorb" if d["algo"] == "sedd" else None),
            **{k: d.get(k, np.nan) if d.get(k) is not None else np.nan
               for k in ("gen_ppl", "entropy", "nfe", "seconds_per_sample", "tokens_per_s", "num_tokens",
                         "gen_ppl_before", "entropy_before", "sc_changes_mean", "sc_steps_mean", "length")}})
    if not rows:
        raise ValueError("no gen-PPL JSONs given")
    return pd.DataFrame(rows)


def _over_seeds(df: pd.DataFrame, keys: list[str], cols: list[str]) -> pd.DataFrame:
    """Mean of `cols` over seeds per `keys`, plus gen_ppl_std (ddof 1; NaN for one seed) and n_seeds."""
    g = df.groupby(keys, sort=False, dropna=False)
    out = g[cols].mean()
    out["gen_ppl_std"] = g["gen_ppl"].std()
    out["n_seeds"] = g["gen_ppl"].size()
    return out.reset_index()


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Unconditional samples without self-correction (the papers' gen-PPL protocol)."""
    return df[(df["condition"] == "none") & ~df["self_correct"]]


def with_reference(agg: pd.DataFrame, reference: str | os.PathLike | None,
                   reference_mauve: str | os.PathLike | None = None) -> pd.DataFrame:
    """`agg` with the held-out text's row first (run "reference", algo "data": the gen PPL and entropy of real
    held-out text under the same judge, rule gen_ppl_reference; with `reference_mauve`, held-out text against
    the MAUVE references), so that every gen-PPL table shows what real text scores."""
    if reference is None:
        return agg
    d = read_json(reference)
    row = {"run": "reference", "algo": "data", "sampler": "held-out text", "sampler_kind": "data",
           "gen_ppl": d.get("gen_ppl"), "entropy": d.get("entropy"), "n_seeds": 1}
    if reference_mauve is not None and "mauve" in agg.columns:
        m = read_json(reference_mauve)
        row.update(mauve=m.get("mauve"), mauve_std=m.get("mauve_std"), mauve_seed25=m.get("mauve_seed25"),
                   mauve_n=m.get("num_samples"))
    ref = pd.DataFrame([{c: row.get(c, np.nan) for c in agg.columns}])
    return pd.concat([ref.astype(object), agg.astype(object)], ignore_index=True).infer_objects()


def _with_paper(agg: pd.DataFrame, formats: dict, labels: dict, paper_values, dataset, table: str,
                metrics: Sequence[tuple]) -> pd.DataFrame:
    """The paper's value, our deviation and a tolerance flag for each of `metrics` ((metric, label) pairs, or
    (metric, label, column) to compare the paper with another column of ours)."""
    from dlm.report.tables import _with_paper as add

    for metric, label, *column in metrics:
        col = column[0] if column else metric
        if col in agg.columns:
            agg = add(agg, formats, labels, paper_values, dataset, table, metric, label, col)
    return agg


_REF_NOTE = " The first row is real held-out text under the same judge."


def _noted(agg: pd.DataFrame, entropy_margin: float, columns: dict[str, str] | None = None) -> tuple[pd.DataFrame, str]:
    """`agg` with the Note column of every gen-PPL table ("reference text", "low entropy": `entropy_notes`) and
    the caption's sentence stating the rule."""
    agg = agg.assign(note=entropy_notes(agg, entropy_margin, columns))
    return agg, " Note: " + entropy_rule(reference_entropy(agg), entropy_margin) + "."


def distill_table(json_paths, out_stem, reference=None, paper_values=None, dataset=None,
                  entropy_margin: float = ENTROPY_MARGIN) -> pd.DataFrame:
    df = _plain(sample_metrics(json_paths))
    df = df[df["algo"].isin(["duo", "udlm", "dcd", "mdlm", "sdtt"])
            & df["sampler_kind"].isin(["duo_ancestral", "duo_greedy_tail", "mdlm_ancestral"])]
    if df.empty:
        raise ValueError("distill_table: no DUO/DCD/MDLM/SDTT ancestral or greedy-tail samples")
    agg = _sort(_over_seeds(df, KEYS, ["gen_ppl", "entropy", "nfe"]), ["run", "sampler", "steps"])
    agg = with_reference(agg, reference)
    formats, labels = dict(_FORMATS), dict(_LABELS)
    agg = _with_paper(agg, formats, labels, paper_values, dataset, "gen_ppl", [("gen_ppl", "Gen. PPL"),
                                                                              ("entropy", "entropy")])
    agg, rule = _noted(agg, entropy_margin)
    write_table(agg, out_stem, caption="Few-step generation (DUO Tables 6/7): gen.\\ PPL (mean $\\pm$ sd over "
                "sampling seeds) and entropy of the base models and their distilled students (DCD for DUO, SDTT for "
                "MDLM) per number of steps." + (_REF_NOTE if reference else "") + rule,
                label="tab:distill", formats=formats, pm={"gen_ppl": "gen_ppl_std"}, labels=labels)
    return agg


def mauve_metrics(json_paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One row per MAUVE JSON (dlm.evaluation.mauve): run, sampler, steps, seed, mauve (mean over k-means seeds),
    mauve_per_seed (the list), mauve_seed25 (the papers' k-means seed; NaN when not computed) and mauve_n (the
    number of samples, which sets the clusters)."""
    rows = []
    for p in json_paths:
        d = read_json(p)
        for key in ("run", "sampler", "steps", "mauve", "mauve_per_seed"):
            if d.get(key) is None:
                raise ValueError(f"{p}: required key {key!r} is missing or null")
        rows.append({"run": d["run"], "sampler": d["sampler"], "steps": int(d["steps"]), "seed": d.get("seed"),
                     "mauve": float(d["mauve"]), "mauve_per_seed": [float(v) for v in d["mauve_per_seed"]],
                     "mauve_seed25": float(d["mauve_seed25"]) if d.get("mauve_seed25") is not None else np.nan,
                     "mauve_n": d.get("num_samples", np.nan)})
    return pd.DataFrame(rows, columns=["run", "sampler", "steps", "seed", "mauve", "mauve_per_seed", "mauve_seed25",
                                       "mauve_n"])


def _pooled_sd(lists: pd.Series) -> float:
    """sd (ddof 1) of every value in a column of lists (NaN entries skipped); NaN for fewer than two values."""
    values = [x for lst in lists if isinstance(lst, list) for x in lst]
    return float(np.std(values, ddof=1)) if len(values) > 1 else np.nan


def _with_mauve(df: pd.DataFrame, agg: pd.DataFrame, keys: list[str], mauve_jsons) -> pd.DataFrame:
    """`agg` with mauve (mean over sampling seeds of each file's k-means mean) and mauve_std (sd, ddof 1, of every
    k-means-seed value of those files: the k-means spread for one sampling seed) before gen_ppl; NaN where a
    sample file has no MAUVE JSON."""
    m = mauve_metrics(mauve_jsons)
    on = ["run", "sampler", "steps", "seed"]
    df = df.drop(columns=["mauve"], errors="ignore").merge(m, on=on, how="left", validate="many_to_one")
    g = df.groupby(keys, sort=False, dropna=False)
    stats = pd.DataFrame({"mauve": g["mauve"].mean(), "mauve_std": g["mauve_per_seed"].apply(_pooled_sd),
                          "mauve_seed25": g["mauve_seed25"].mean(), "mauve_n": g["mauve_n"].max()}).reset_index()
    agg = agg.merge(stats, on=keys, how="left")
    new = ["mauve_seed25", "mauve"] if agg["mauve_seed25"].notna().any() else ["mauve"]
    cols = [c for c in agg.columns if c not in ("mauve", "mauve_seed25")]
    at = cols.index("gen_ppl")
    return agg[cols[:at] + new + cols[at:]]


def remdm_table(json_paths, out_stem, mauve_jsons=None, reference=None, reference_mauve=None, paper_values=None,
                dataset=None, entropy_margin: float = ENTROPY_MARGIN) -> pd.DataFrame:
    """ReMDM's OWT table: MAUVE (with `mauve_jsons`: the papers' protocol -- k-means seed 25 -- beside our mean ±
    sd over k-means seeds; the paper's value is compared with the seed-25 one), gen PPL and entropy per T."""
    df = _plain(sample_metrics(json_paths))
    mdlm = (df["algo"] == "mdlm") & (df["sampler_kind"].str.startswith("remdm_") | (df["sampler_kind"] == "mdlm_ancestral"))
    # ReMDM Table 1's reference rows: SEDD (absorb) with its analytic sampler, AR (with nucleus: its AR† row)
    ref_rows = ((df["algo"] == "sedd") & (df["graph"] == "absorb") & (df["sampler_kind"] == "sedd_analytic")) | (
        (df["algo"] == "ar") & (df["sampler_kind"] == "ar"))
    if not mdlm.any():
        raise ValueError("remdm_table: no MDLM ancestral or ReMDM samples")
    df = df[mdlm | ref_rows]
    keys = KEYS + ["nucleus_p"]
    agg = _over_seeds(df, keys, ["gen_ppl", "entropy", "nfe"])
    pm = {"gen_ppl": "gen_ppl_std"}
    if mauve_jsons:
        agg = _with_mauve(df, agg, keys, mauve_jsons)
        pm["mauve"] = "mauve_std"
    agg = with_reference(_sort(agg, ["run", "steps", "sampler"]), reference, reference_mauve)
    formats = {**_FORMATS, "mauve": ".3f", "mauve_std": ".3f", "mauve_seed25": ".3f", "mauve_n": ".0f"}
    labels = {**_LABELS, "nucleus_p": "top-p", "mauve": "MAUVE (mean)", "mauve_seed25": "MAUVE (seed 25)",
              "mauve_n": "MAUVE samples"}
    paper_mauve = ("mauve", "MAUVE", "mauve_seed25") if "mauve_seed25" in agg.columns else ("mauve", "MAUVE")
    agg = _with_paper(agg, formats, labels, paper_values, dataset, "remdm",
                      [paper_mauve, ("gen_ppl", "Gen. PPL"), ("entropy", "entropy")])
    agg, rule = _noted(agg, entropy_margin)
    seed25 = "mauve_seed25" in agg.columns
    write_table(agg, out_stem, caption="ReMDM (Wang et al.\\ 2025): MDLM ancestral against the remasking strategies "
                "(cap, rescale, conf, loop) and the forward-backward and DFM correctors, per number of steps, with "
                "SEDD (absorb, analytic sampler) and AR as reference rows"
                + ((": MAUVE " + ("at k-means seed 25 (the papers' protocol, compared with the paper) and " if seed25
                                  else "") + "mean $\\pm$ sd over k-means seeds, on MAUVE-samples samples (the "
                   "clusters grow with them), gen.\\ PPL (mean $\\pm$ sd over sampling seeds) and entropy.")
                   if mauve_jsons else ".")
                + (_REF_NOTE if reference else "") + rule,
                label="tab:remdm", formats=formats, pm=pm, labels=labels)
    return agg


def speed_table(json_paths, out_stem, reference=None, paper_values=None, dataset=None,
                entropy_margin: float = ENTROPY_MARGIN) -> pd.DataFrame:
    df = _plain(sample_metrics(json_paths))
    agg = _sort(_over_seeds(df, KEYS, ["seconds_per_sample", "nfe", "tokens_per_s", "gen_ppl", "entropy"]),
                ["run", "sampler", "steps"])
    agg = with_reference(agg, reference)
    agg, rule = _noted(agg, entropy_margin)
    formats, labels = dict(_FORMATS), dict(_LABELS)
    agg = _with_paper(agg.drop(columns=["gen_ppl_std", "n_seeds"]), formats, labels, paper_values, dataset,
                      "sampler_speed", [("seconds_per_sample", "s / sample")])
    write_table(agg, out_stem,
                caption="Sampling cost (MDLM README): wall-clock seconds and network calls (NFE) per sample and "
                "tokens per second (means over sampling seeds), with the quality each setting buys; the README's "
                "seconds are one A5000's, so only their ratios compare." + (_REF_NOTE if reference else "") + rule,
                label="tab:sampler_speed", formats=formats, labels=labels)
    return agg


def semi_ar_table(json_paths, out_stem, reference=None, entropy_margin: float = ENTROPY_MARGIN) -> pd.DataFrame:
    df = _plain(sample_metrics(json_paths))
    semi = df[df["sampler_kind"] == "mdlm_semi_ar"]
    if semi.empty:
        raise ValueError("semi_ar_table: no mdlm_semi_ar samples")
    ref = df[(df["sampler_kind"] == "mdlm_ancestral") & df["run"].isin(semi["run"])]
    df = pd.concat([ref, semi])
    agg = _sort(_over_seeds(df, KEYS, ["length", "gen_ppl", "entropy", "seconds_per_sample", "nfe"]),
                ["run", "sampler", "steps"])
    agg = with_reference(agg, reference)
    agg, rule = _noted(agg, entropy_margin)
    write_table(agg, out_stem, caption="Semi-autoregressive generation beyond the training length (MDLM Sec. 4.3): "
                "gen.\\ PPL (mean $\\pm$ sd over sampling seeds) and seconds per sequence, against one block of "
                "ancestral sampling." + (_REF_NOTE if reference else "") + rule,
                label="tab:semi_ar", formats=_FORMATS, pm={"gen_ppl": "gen_ppl_std"}, labels=_LABELS)
    return agg


def self_correction_table(json_paths, out_stem, reference=None, entropy_margin: float = ENTROPY_MARGIN) -> pd.DataFrame:
    df = sample_metrics(json_paths)
    df = df[df["self_correct"] & df["gen_ppl_before"].notna()]
    if df.empty:
        raise ValueError("self_correction_table: no self-corrected samples (variants with self_correct: true)")
    agg = _over_seeds(df, KEYS + ["p_uniform"], ["gen_ppl_before", "gen_ppl", "entropy_before", "entropy",
                                                 "sc_changes_mean", "sc_steps_mean"])
    agg = _sort(agg, ["p_uniform", "run", "steps"])
    agg["delta_gen_ppl"] = agg["gen_ppl"] - agg["gen_ppl_before"]
    agg = with_reference(agg, reference)
    agg, rule = _noted(agg, entropy_margin, {"entropy_before": "before", "entropy": "after"})
    write_table(agg.drop(columns=["gen_ppl_std"]), out_stem,
                caption="GIDD self-correction (Rütte et al.\\ 2025, Sec. 5): gen.\\ PPL and entropy of the same samples "
                "before and after correction (means over sampling seeds), by uniform-noise share $p_u$; a lower gen.\\ "
                "PPL after correction is a gain only where the entropy after is not low."
                + (_REF_NOTE if reference else "") + rule,
                label="tab:self_correction",
                formats={**_FORMATS, "p_uniform": ".2f", "gen_ppl_before": ".1f", "entropy_before": ".2f",
                         "sc_changes_mean": ".1f", "sc_steps_mean": ".1f", "delta_gen_ppl": "+.1f"},
                labels={**_LABELS, "p_uniform": "p_u", "gen_ppl_before": "Gen. PPL before", "gen_ppl": "Gen. PPL after",
                        "entropy_before": "Entropy before", "entropy": "Entropy after",
                        "sc_changes_mean": "Tokens changed", "sc_steps_mean": "Correction steps",
                        "delta_gen_ppl": "Δ Gen. PPL"})
    return agg


_FORMATS = {"steps": "d", "length": ".0f", "gen_ppl": ".1f", "gen_ppl_std": ".1f", "entropy": ".2f", "nfe": ".0f", "n_seeds": "d",
            "seconds_per_sample": ".3f", "tokens_per_s": ".0f", "nucleus_p": ".2f"}
_LABELS = {"length": "Tokens", "run": "Run", "algo": "Algo", "sampler": "Sampler", "sampler_kind": "Kind", "steps": "Steps",
           "gen_ppl": "Gen. PPL", "entropy": "Entropy", "nfe": "NFE", "n_seeds": "Seeds",
           "seconds_per_sample": "s / sample", "tokens_per_s": "tokens / s", "note": "Note"}
TABLES = {"distill": distill_table, "remdm": remdm_table, "sampler_speed": speed_table, "semi_ar": semi_ar_table,
          "self_correction": self_correction_table}
