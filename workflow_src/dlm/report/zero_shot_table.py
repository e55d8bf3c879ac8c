"""The zero-shot perplexity table, laid out like MDLM Table 3 / DUO Table 2: one row per run, one column
per corpus, each cell the perplexity bound ± its Monte-Carlo standard error (diffusion rows are upper
bounds); a run trained with several seeds shows the mean ± the sd over its seeds instead. The first corpus column is the run's own held-out split (its val-PPL JSON), so the table also
shows the in-domain / out-of-domain gap. With a paper-values file (config/paper_values.yaml,
`dlm.report.paper_values`) whose entries are for this dataset (the training corpus's name, e.g. owt), the
paper's row of each of our runs follows ours (DUO Table 2 / MDLM Table 3; the corpora are matched by name:
ptb, wikitext, lm1b, lambada, ag_news, pubmed, arxiv in config/paper/owt.yaml).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from dlm.utils import read_json

from . import paper_values
from .tables import _algo_rank, has_seed_lists, over_train_seeds, write_table

log = logging.getLogger(__name__)

def read_column_jsons(paths: Sequence[str | os.PathLike], key: str, kind: str,
                      setting: str) -> tuple[list[tuple[str | os.PathLike, dict]], list[str]]:
    """([(path, metric JSON)], names): JSONs with ``run``, ``algo`` and a dict `key` of one entry per table
    column (zero-shot corpora, downstream tasks), which must name the same columns in the same order; errors
    name the file, the `kind` of JSON expected and the config `setting` to rerun them with."""
    objs, names = [], None
    for p in paths:
        obj = read_json(p)
        for k in ("run", "algo", key):
            if k not in obj:
                raise ValueError(f"{p}: required key {k!r} is missing; expected a {kind} metric JSON")
        mine = list(obj[key])
        if names is None:
            names = mine
        elif mine != names:
            raise ValueError(f"{p}: {key} {mine} differ from the other {kind} JSONs' {names}; rerun them with the "
                             f"same {setting}")
        objs.append((p, obj))
    return objs, names or []


def zero_shot_frame(zero_shot_jsons: Sequence[str | os.PathLike], val_jsons: Sequence[str | os.PathLike],
                    in_domain: str) -> tuple[pd.DataFrame, list[str]]:
    """(frame, corpus columns): per run ``run``, ``algo``, then per corpus ``{name}`` (PPL) and ``{name}_se``;
    the first corpus is `in_domain`, read from the run's val-PPL JSON (matched by ``run``)."""
    if not zero_shot_jsons:
        raise ValueError("zero_shot_table: no zero-shot JSONs given")
    val = {}
    for p in val_jsons:
        obj = read_json(p)
        val[obj["run"]] = obj
    rows = []
    objs, corpora = read_column_jsons(zero_shot_jsons, "corpora", "zero-shot", "zero_shot.corpora")
    for p, obj in objs:
        if obj["run"] not in val:
            raise ValueError(f"{p}: no val-PPL JSON of run {obj['run']!r} among the inputs (the in-domain column)")
        own = val[obj["run"]]
        row = {"source": "ours", "run": obj["run"], "group": own.get("group") or obj["run"], "algo": obj["algo"],
               in_domain: own["val_ppl"], f"{in_domain}_se": own.get("val_ppl_se", np.nan)}
        if obj.get("insert_eos") is not None:  # the zero-shot packing of this run (docs/conventions.md)
            row["eos"] = "yes" if obj["insert_eos"] else "no"
        for name, r in obj["corpora"].items():
            row[name], row[f"{name}_se"] = r["ppl"], r["ppl_se"]
        rows.append(row)
    columns = [in_domain, *corpora]
    if in_domain in corpora:
        raise ValueError(f"zero-shot corpus {in_domain!r} has the training corpus's name; rename it")
    df = pd.DataFrame(rows)
    if has_seed_lists(df):  # training-seed lists: one row per config entry, mean over its seeds
        df = over_train_seeds(df, columns, {c: f"{c}_se" for c in columns})
    else:
        df = df.drop(columns="group")
    df = df.assign(_rank=_algo_rank(df["algo"])).sort_values(["_rank", "run"], kind="mergesort")
    return df.drop(columns="_rank").reset_index(drop=True), columns


def in_domain_lowest(df: pd.DataFrame, in_domain: str, corpora: Sequence[str]) -> pd.Series:
    """Per row: whether the run's own held-out PPL is below its PPL on every out-of-domain corpus."""
    ood = [c for c in corpora if c != in_domain]
    return pd.concat([df[in_domain] < df[c] for c in ood], axis=1).all(axis=1) if ood else pd.Series(True, df.index)


def paper_rows(df: pd.DataFrame, corpora: Sequence[str], path: str | os.PathLike | None,
               dataset: str | None, table: str = "zero_shot", metric: str = "zero_shot_ppl") -> pd.DataFrame:
    """One row per run of `df` that the paper-values file reports zero-shot PPLs for (table zero_shot, metric
    zero_shot_ppl, this dataset), with the paper's value in each corpus column and its source in ``source``.
    Another `table` / `metric` whose entries are keyed by ``corpus`` (the downstream table's tasks) works alike."""
    if path is None or dataset is None:
        return pd.DataFrame()
    entries, _ = paper_values.load(path)
    aliases = paper_values.same_model(path)
    entries = entries[(entries["dataset"] == dataset) & (entries["table"] == table)
                      & (entries["metric"] == metric) & entries["corpus"].isin(list(corpora))]
    rows = []
    for _, ours in df.iterrows():
        mine = entries[entries["run"] == aliases.get(ours["run"], ours["run"])]
        if not mine.empty:
            rows.append({"source": "; ".join(dict.fromkeys(mine["source"])), "run": ours["run"], "algo": ours["algo"],
                         **{c: float(v) for c, v in zip(mine["corpus"], mine["value"])}})
    return pd.DataFrame(rows)


def tolerance_flags(df: pd.DataFrame, corpora: Sequence[str], path: str | os.PathLike | None,
                    dataset: str | None, table: str = "zero_shot", metric: str = "zero_shot_ppl") -> pd.Series:
    """Per row of ours: which corpora lie outside the paper-values tolerance ("outside ±10%: ptb, lm1b"), or
    "within ±10%" when every corpus the paper reports is inside; "" for runs the paper does not report."""
    out = pd.Series("", index=df.index, dtype=object)
    if path is None or dataset is None:
        return out
    outside: dict[int, list[str]] = {i: [] for i in df.index}
    limit, seen = "", set()
    for c in corpora:
        cmp = paper_values.compare(df.assign(corpus=c), path, dataset, table, metric, column=c)
        if f"{metric}_flag" not in cmp.columns:
            continue
        for i, flag in cmp[f"{metric}_flag"].items():
            if flag:
                seen.add(i)
                limit = flag.split(" ", 1)[1] if " " in flag and flag.startswith(("within", "outside")) else limit
                if not flag.startswith("within"):
                    outside[i].append(c)
    for i in seen:
        out[i] = f"outside {limit}: {', '.join(outside[i])}" if outside[i] else f"within {limit}"
    return out


def zero_shot_table(zero_shot_jsons: Sequence[str | os.PathLike], val_jsons: Sequence[str | os.PathLike],
                    out_stem: str | os.PathLike, in_domain: str, paper_values_path: str | os.PathLike | None = None,
                    dataset: str | None = None) -> pd.DataFrame:
    """Write ``{out_stem}.csv/.md/.tex`` and return the frame. The lowest PPL of each corpus among our rows
    is bold; a run whose held-out PPL is not below every out-of-domain PPL is logged as a warning. With
    `paper_values_path` and `dataset` (the training corpus's name), the paper's rows follow ours."""
    df, corpora = zero_shot_frame(zero_shot_jsons, val_jsons, in_domain)
    ok = in_domain_lowest(df, in_domain, corpora)
    for run in df.loc[~ok, "run"]:
        log.warning("run %s: its held-out %s PPL is not below every out-of-domain PPL", run, in_domain)
    paper = paper_rows(df, corpora, paper_values_path, dataset)
    seeds = "n_seeds" in df.columns
    if seeds:  # ± per row: the spread over training seeds where there are several, else the bound's MC s.e.
        for c in corpora:
            df[f"{c}_pm"] = df[f"{c}_sd"].where(df["n_seeds"] > 1, df[f"{c}_se"])
        caption = ("Zero-shot perplexity (diffusion models: upper bounds). Runs trained with several seeds (Seeds "
                   "$>$ 1): the mean over seeds $\\pm$ their sd; runs with one seed: $\\pm$ the Monte-Carlo standard "
                   "error of the bound (AR: exact, s.e.\\ 0). The CSV has both for every row (\\_sd, \\_se).")
    else:
        caption = ("Zero-shot perplexity (diffusion models: upper bounds; $\\pm$ the Monte-Carlo standard error of "
                   "the bound; AR: exact, s.e.\\ 0).")
    caption += (f" {in_domain}: the training corpus's held-out split. Bold: the lowest PPL of each corpus among "
                "our runs.")
    if "eos" in df.columns:
        caption += (" EOS: whether the corpora were packed with an EOS between documents (MDLM's code, the AR / SEDD / "
                    "MDLM rows) or without (DUO's zero-shot scripts, the UDLM / DUO rows).")
    spread = {c: f"{c}_pm" if seeds else f"{c}_se" for c in corpora}
    columns = ["source", "run", "algo", *(["eos"] if "eos" in df.columns else []), *(["n_seeds"] if seeds else []),
               *[c for name in corpora for c in (name, spread[name])],
               *[c for name in corpora for c in ((f"{name}_se", f"{name}_sd") if seeds else ())]]
    if not paper.empty:
        df["tolerance"] = tolerance_flags(df, corpora, paper_values_path, dataset)
        df = pd.concat([df, paper], ignore_index=True)
        columns.append("tolerance")
        caption += (" Rows whose source is a paper show its published numbers; Tolerance: the corpora where our "
                    "value lies outside the paper-values file's tolerance of the paper's.")
    df = df[columns]
    write_table(df, out_stem, caption=caption, label="tab:zero_shot",
                formats={**{c: ".2f" for name in corpora for c in (name, f"{name}_se", f"{name}_sd", f"{name}_pm")},
                         "n_seeds": "d"},
                best={c: "min" for c in corpora}, pm=spread,
                hidden=[c for name in corpora for c in ((f"{name}_se", f"{name}_sd") if seeds else ())],
                labels={"source": "Source", "run": "Run", "algo": "Algo", in_domain: f"{in_domain} (held-out)",
                        "tolerance": "Tolerance", "n_seeds": "Seeds", "eos": "EOS"},
                eligible=df["source"] == "ours")
    return df
