"""Training curves: a Lightning CSVLogger per job attempt, merged into one CSV beside the checkpoint.

Lightning's CSVLogger deletes an existing ``metrics.csv`` when it starts, so a resumed run (a preempted or
killed job that Snakemake retries) would lose the rows of the earlier attempts. Each attempt therefore logs
into its own version directory, named by the optimiser step it starts from,

    {ckpt_dir}/csv/from_step_000000120/metrics.csv

and `merge_metrics` joins them: an attempt that started at step s supersedes every row of the earlier
attempts from step s on (those steps were trained again, with the same data and random draws, after the
resume). The merged CSV (``final.ckpt`` -> ``final_metrics.csv``, ``round_2.ckpt`` ->
``round_2_metrics.csv``) is written atomically at the end of training and is a declared output of the
train and distill rules; the version directories live with ``last.ckpt`` and survive a failed job.

Logged columns: ``step`` (optimiser steps done when the row was logged), ``epoch``, ``train/loss`` (every
``trainer.log_every`` steps), ``val/nll`` and ``val/ppl`` (EMA weights, every ``trainer.val_every`` steps).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd

from dlm.utils import write_text

VERSION = "from_step_{:09d}"
_VERSION_RE = re.compile(r"^from_step_(\d+)$")
COLUMNS = ["step", "epoch", "train/loss", "val/nll", "val/ppl"]


def metrics_path(out_ckpt: str | Path) -> Path:
    """The merged training-curve CSV of a checkpoint: ``final.ckpt`` -> ``final_metrics.csv``."""
    p = Path(out_ckpt)
    return p.with_name(f"{p.stem}_metrics.csv")


def attempt_logger(ckpt_dir: str | Path, start_step: int):
    """A CSVLogger for a job attempt that starts (or resumes) at `start_step`; attempts that started later
    (left by a checkpoint directory that was rolled back by hand) are removed, as their steps are redone."""
    from lightning.pytorch.loggers import CSVLogger

    root = Path(ckpt_dir) / "csv"
    for start, d in attempt_dirs(root):
        if start > start_step:
            shutil.rmtree(d)
    # flush every logging call: a killed job keeps the rows logged before its last checkpoint
    return CSVLogger(save_dir=str(ckpt_dir), name="csv", version=VERSION.format(int(start_step)),
                     flush_logs_every_n_steps=1)


def attempt_dirs(root: str | Path) -> list[tuple[int, Path]]:
    """(start step, directory) of every attempt's log directory under `root`, by start step."""
    root = Path(root)
    found = []
    if root.is_dir():
        for d in root.iterdir():
            m = _VERSION_RE.match(d.name)
            if m and d.is_dir():
                found.append((int(m.group(1)), d))
    return sorted(found)


def merge_metrics(root: str | Path) -> pd.DataFrame:
    """The rows of every attempt under `root`, each attempt's rows from its start step on replacing the
    earlier attempts' (a resumed run keeps the rows before its resume point), in logging order; ``step`` is
    the number of optimiser steps done (validation every 200 steps: rows at 200, 400, ...)."""
    parts: list[pd.DataFrame] = []
    for start, d in attempt_dirs(root):
        f = d / "metrics.csv"
        rows = pd.read_csv(f) if f.exists() and f.stat().st_size else pd.DataFrame(columns=["step"])
        parts = [p[p["step"] < start] for p in parts]
        parts.append(rows)
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
    # Lightning logs a step's metrics under the 0-based index of that optimiser step; report steps done
    df["step"] = df["step"].astype(int) + 1
    cols = [c for c in COLUMNS if c in df.columns] + sorted(c for c in df.columns if c not in COLUMNS)
    return df[cols]


def write_metrics(root: str | Path, out_csv: str | Path) -> Path:
    """Merge the attempts under `root` and write `out_csv` atomically."""
    df = merge_metrics(root)
    write_text(out_csv, df.to_csv(index=False, lineterminator="\n"))
    return Path(out_csv)
