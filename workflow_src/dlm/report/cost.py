"""Compute cost per run: wall-clock seconds and peak memory from the rules' benchmark files.

Snakemake writes one TSV per job of a rule with ``benchmark:`` (columns ``s`` wall-clock seconds,
``max_rss`` peak resident memory in MB, ``cpu_time`` ...). Their paths name the stage and the run:

    benchmarks/train/{run}.tsv                 -> train
    benchmarks/distill/{run}/round_{k}.tsv     -> distill
    benchmarks/sample/{run}/{sampler}_...tsv   -> sample
    benchmarks/eval/{run}/...tsv (and any other stage directory) -> eval

`cost_table` sums the seconds per run and stage and keeps the largest ``max_rss`` of the run's jobs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dlm.report.tables import _sort, write_table

STAGES = ("train", "distill", "sample", "eval")


def benchmark_key(path: str | os.PathLike) -> tuple[str, str]:
    """(stage, run) of a benchmark file from its path below a ``benchmarks`` directory."""
    parts = Path(path).parts
    if "benchmarks" in parts:
        parts = parts[parts.index("benchmarks") + 1:]
    if len(parts) < 2:
        raise ValueError(f"{path}: expected benchmarks/STAGE/RUN.tsv or benchmarks/STAGE/RUN/JOB.tsv")
    stage = parts[0] if parts[0] in STAGES else "eval"
    run = Path(parts[1]).stem if len(parts) == 2 else parts[1]
    return stage, run


def read_benchmarks(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One row per benchmark file (its last line: a rerun job overwrites it): stage, run, seconds, cpu
    seconds, max_rss (MB; NaN where the job ended before Snakemake could measure it), file."""
    rows = []
    for p in paths:
        df = pd.read_csv(p, sep="\t")
        if df.empty or "s" not in df.columns:
            raise ValueError(f"{p}: not a Snakemake benchmark file (no 's' column or no rows)")
        last = df.iloc[-1]
        stage, run = benchmark_key(p)
        rows.append({"stage": stage, "run": run, "seconds": float(last["s"]),
                     "cpu_seconds": float(pd.to_numeric(last.get("cpu_time", np.nan), errors="coerce")),
                     "max_rss": float(pd.to_numeric(last.get("max_rss", np.nan), errors="coerce")), "file": str(p)})
    return pd.DataFrame(rows, columns=["stage", "run", "seconds", "cpu_seconds", "max_rss", "file"])


def cost_table(paths: Sequence[str | os.PathLike], out_stem: str | os.PathLike,
               algos: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per run: wall-clock seconds of its train / distill / sample / eval jobs, their total, the number of
    jobs and the peak memory (largest max_rss of its jobs, MB); a last row sums all runs (peak: the largest).
    `algos`: run -> algo (the held-out reference text is ``data``). Writes ``{out_stem}.csv/.md/.tex``."""
    if not paths:
        raise ValueError("cost_table: no benchmark files given")
    algos = {"reference": "data", "unigram": "unigram", **(algos or {})}
    jobs = read_benchmarks(paths)
    wide = jobs.pivot_table(index="run", columns="stage", values="seconds", aggfunc="sum", fill_value=0.0)
    wide = wide.reindex(columns=list(STAGES), fill_value=0.0)
    g = jobs.groupby("run")
    df = pd.DataFrame({"run": wide.index, "algo": [algos.get(r, "–") for r in wide.index]})
    for stage in STAGES:
        df[f"{stage}_s"] = wide[stage].to_numpy()
    df["total_s"] = wide.sum(axis=1).to_numpy()
    df["cpu_s"] = g["cpu_seconds"].sum(min_count=1).reindex(wide.index).to_numpy()
    df["jobs"] = g.size().reindex(wide.index).to_numpy()
    df["peak_rss_mb"] = g["max_rss"].max().reindex(wide.index).to_numpy()
    df = _sort(df, ["run"])
    total = {"run": "all", "algo": "–", **{c: df[c].sum() for c in df.columns if c.endswith("_s") or c == "jobs"},
             "peak_rss_mb": df["peak_rss_mb"].max()}
    df = pd.concat([df, pd.DataFrame([total])], ignore_index=True)
    df["jobs"] = df["jobs"].astype(int)
    secs = ".1f"
    write_table(df, out_stem, caption="Compute cost per run from the Snakemake benchmark files: wall-clock seconds "
                "of its training, distillation, sampling and evaluation jobs (sum over jobs), CPU seconds, the "
                "number of jobs and the peak resident memory of any one of them (MB).", label="tab:cost",
                formats={"train_s": secs, "distill_s": secs, "sample_s": secs, "eval_s": secs, "total_s": secs,
                         "cpu_s": secs, "jobs": "d", "peak_rss_mb": ".0f"},
                labels={"run": "Run", "algo": "Algo", "train_s": "Train (s)", "distill_s": "Distill (s)",
                        "sample_s": "Sample (s)", "eval_s": "Eval (s)", "total_s": "Total (s)", "cpu_s": "CPU (s)",
                        "jobs": "Jobs", "peak_rss_mb": "Peak RSS (MB)"})
    return df
