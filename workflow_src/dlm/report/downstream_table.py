"""The downstream table (DUO Ch. II / GIDD): one row per run, one column per lm-eval task, each cell the
multiple-choice accuracy in % ± lm-eval's standard error over the questions, then the average over tasks
(with more than one task), how many standard errors it lies above chance, the Monte-Carlo draws per
log-likelihood and the share of questions the Monte-Carlo error could decide. The first row is chance
(the mean of 1 / number of choices over the questions). Runs trained with several seeds become one row: the
mean over seeds, the combined standard error sqrt(sum se^2) / n, and the spread over seeds in ``{task}_sd``.
With a paper-values file whose entries are for this dataset (table downstream, metric accuracy, the task in
``corpus``), the paper's row of each of our runs follows ours, as in the zero-shot table.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .tables import _algo_rank, has_seed_lists, over_train_seeds, write_table
from .zero_shot_table import paper_rows, read_column_jsons, tolerance_flags

METRICS = ("acc", "acc_norm")


def downstream_frame(json_paths: Sequence[str | os.PathLike], metric: str = "acc") -> tuple[pd.DataFrame, list[str]]:
    """(frame, tasks): per run ``run``, ``group``, ``algo``, ``mc_draws``, per task ``{task}`` and ``{task}_se``
    (in %), ``chance_{task}`` (in %) and ``mc_ambiguous`` (in %, mean over tasks)."""
    if metric not in METRICS:
        raise ValueError(f"downstream table: metric must be one of {METRICS}, got {metric!r}")
    if not json_paths:
        raise ValueError("downstream table: no downstream JSONs given")
    rows, chance = [], {}
    objs, tasks = read_column_jsons(json_paths, "tasks", "downstream", "downstream.tasks")
    for p, obj in objs:
        row = {"source": "ours", "run": obj["run"], "group": obj.get("group") or obj["run"], "algo": obj["algo"],
               "mc_draws": obj.get("mc_draws", np.nan)}
        for name, t in obj["tasks"].items():
            if t.get(metric) is None:
                raise ValueError(f"{p}: task {name} has no {metric!r} (set downstream.metric to one it reports)")
            row[name], row[f"{name}_se"] = 100 * t[metric], 100 * t.get(f"{metric}_stderr", np.nan)
            if name in chance and not math.isclose(chance[name], t["chance"]):
                raise ValueError(f"{p}: task {name} has chance {t['chance']} but other JSONs {chance[name]}: "
                                 f"were they scored on other questions? rerun them")
            chance[name] = t["chance"]
        row["mc_ambiguous"] = 100 * float(np.mean([t.get("mc_ambiguous", np.nan) for t in obj["tasks"].values()]))
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(tasks) > 1:  # the papers' average over tasks; its s.e. treats the tasks as independent samples
        df["avg"] = df[tasks].mean(axis=1)
        df["avg_se"] = np.sqrt((df[[f"{t}_se" for t in tasks]] ** 2).sum(axis=1)) / len(tasks)
    for name in tasks:
        df[f"chance_{name}"] = 100 * chance[name]
    return df, tasks


def downstream_table(json_paths: Sequence[str | os.PathLike], out_stem: str | os.PathLike, metric: str = "acc",
                     paper_values_path: str | os.PathLike | None = None, dataset: str | None = None) -> pd.DataFrame:
    """Write ``{out_stem}.csv/.md/.tex/.html`` and return the frame (module docstring). The highest accuracy of
    each task among our rows is bold."""
    df, tasks = downstream_frame(json_paths, metric)
    summary = "avg" if len(tasks) > 1 else tasks[0]
    columns = tasks + (["avg"] if len(tasks) > 1 else [])
    if has_seed_lists(df):
        df = over_train_seeds(df, [*columns, "mc_ambiguous"], {c: f"{c}_se" for c in columns})
    else:
        df = df.drop(columns="group")
    df = df.assign(_rank=_algo_rank(df["algo"])).sort_values(["_rank", "run"], kind="mergesort")
    df = df.drop(columns="_rank").reset_index(drop=True)
    chance_row = {"source": "chance", "run": "chance", "algo": "–",
                  **{t: float(df[f"chance_{t}"].iloc[0]) for t in tasks}}
    if len(tasks) > 1:
        chance_row["avg"] = float(np.mean([chance_row[t] for t in tasks]))
    df["z_chance"] = (df[summary] - chance_row[summary]) / df[f"{summary}_se"]
    paper = paper_rows(df, tasks, paper_values_path, dataset, table="downstream", metric="accuracy")
    seeds = "n_seeds" in df.columns
    out_cols = ["source", "run", "algo", *(["n_seeds"] if seeds else [])]
    for c in columns:
        out_cols += [c, f"{c}_se"] + ([f"{c}_sd"] if seeds else [])
    out_cols += ["z_chance", "mc_draws", "mc_ambiguous"]
    caption = (f"Downstream multiple-choice accuracy (\\%, lm-eval-harness, {metric}) $\\pm$ lm-eval's standard "
               "error over the questions. Diffusion models score a choice by minus the token-mean NELBO of prompt "
               "and choice (seeded Monte-Carlo estimate with MC draws per choice), AR by its exact mean "
               "log-likelihood of the choice. Chance: the mean of 1/(number of choices). z vs chance: "
               f"({'Avg.' if len(tasks) > 1 else tasks[0]} $-$ chance) / its standard error. MC-close: the share of "
               "questions whose pick beats the runner-up by less than 2 paired Monte-Carlo standard errors. Bold: "
               "the highest accuracy of each column among our runs.")
    if seeds:
        caption += (" Runs trained with several seeds (Seeds): the mean over seeds $\\pm$ the combined standard "
                    "error; sd: the spread over seeds.")
    if not paper.empty:
        df["tolerance"] = tolerance_flags(df, tasks, paper_values_path, dataset, table="downstream",
                                          metric="accuracy")
        out_cols.append("tolerance")
        caption += (" Rows whose source is a paper show its published accuracies (sources in "
                    "config/paper\\_values.yaml; some unverified); Tolerance: the tasks outside the file's tolerance.")
    df = pd.concat([pd.DataFrame([chance_row]), df, paper], ignore_index=True)
    df = df.reindex(columns=out_cols)
    labels = {"source": "Source", "run": "Run", "algo": "Algo", "n_seeds": "Seeds", "avg": "Avg.",
              "z_chance": "z vs chance", "mc_draws": "MC draws", "mc_ambiguous": "MC-close %",
              "tolerance": "Tolerance", **{f"{c}_sd": f"{'Avg.' if c == 'avg' else c} sd" for c in columns}}
    formats = {**{c: ".2f" for name in columns for c in (name, f"{name}_se", f"{name}_sd")},
               "z_chance": ".1f", "mc_draws": ".0f", "mc_ambiguous": ".0f", "n_seeds": ".0f"}
    write_table(df, out_stem, caption=caption, label="tab:downstream", formats=formats,
                best={c: "max" for c in columns}, pm={c: f"{c}_se" for c in columns}, labels=labels,
                eligible=df["source"] == "ours")
    return df
