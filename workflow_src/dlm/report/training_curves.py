"""Training curves: in-training validation PPL, training loss and distillation loss against optimiser steps.

Input: the merged CSVLogger files the train and distill rules write (``final_metrics.csv``,
``round_{k}_metrics.csv``; `dlm.train_log`) and, per file, its run, the run's seed group (a run and its
further training seeds, ``NAME_sS``, share one line with a mean ± sd band), for distillation rounds the round
and the run it was distilled from (a distilled run's rounds continue its teacher's curve: round k starts where
round k-1 ended, round 1 at the teacher's last step), and the in-training validation's size (``val_batches``
batches of ``batch_size`` blocks: `trainer.val_batches`).

What the panels measure. The validation curve is the trainer's check every `trainer.val_every` steps: the first
`val_batches` batches of the validation split with one seeded Monte-Carlo draw each, EMA weights -- a cheap,
noisy estimate, not the val_ppl table's bound (the whole split, `evaluation.val_passes` passes), so close runs
may swap order between the two. The training loss is each method's own objective (not comparable across
methods); a distillation round's loss is a KL between student and teacher, so it has a panel of its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from dlm.report.figures import FIGSIZE, _palette, legend_size, save_figure
from dlm.report.sample_figures import _log_y


def curves_frame(curves: Sequence[Mapping]) -> pd.DataFrame:
    """Long frame (run, group, round, step, val_ppl, train_loss) from `curves`: one mapping per CSV with keys
    ``csv`` (path), ``run``, ``group`` (default: run), ``round`` (0 for a training run) and ``from`` (the
    teacher run of a distillation round, or None)."""
    parts, last_step = [], {}
    specs = sorted(curves, key=lambda c: (c.get("round", 0) > 0, c["run"], c.get("round", 0)))
    for c in specs:
        df = pd.read_csv(c["csv"])
        for col in ("step", "val/ppl", "train/loss"):
            if col not in df.columns:
                df[col] = float("nan")
        k = int(c.get("round", 0))
        if k == 0:
            offset = 0
        elif k == 1:
            offset = last_step.get(c.get("from"), 0)
        else:
            offset = last_step.get((c["run"], k - 1), 0)
        steps = df["step"].astype(int) + offset
        end = int(steps.max()) if len(steps) else offset
        last_step[c["run"] if k == 0 else (c["run"], k)] = end
        parts.append(pd.DataFrame({"run": c["run"], "group": c.get("group") or c["run"], "round": k,
                                   "step": steps, "val_ppl": df["val/ppl"], "train_loss": df["train/loss"]}))
    if not parts:
        raise ValueError("curves_frame: no training-curve CSVs given")
    return pd.concat(parts, ignore_index=True)


def _val_label(curves: Sequence[Mapping]) -> str:
    """The validation panel's y label with the size of the in-training validation (when every curve shares it)."""
    sizes = {(c.get("val_batches"), c.get("batch_size")) for c in curves}
    if len(sizes) == 1 and None not in next(iter(sizes)):
        batches, size = next(iter(sizes))
        return f"Val. PPL in training (↓)\nfirst {batches} batches × {size} blocks"
    return "Val. PPL in training (↓)\nfirst trainer.val_batches batches"


def build_training_curves(curves: Sequence[Mapping]) -> Figure:
    """The figure of `training_curves_figure` (not saved): in-training validation PPL (log y, EMA weights) of
    every run, the training loss of the trained runs and, when distillation rounds logged a loss, their loss
    (KL) on an axis of its own; one line per seed group (mean ± sd band over its training seeds)."""
    df = curves_frame(curves)
    order = sorted(df["group"].unique())
    palette = _palette(order)
    replicated = bool(df.groupby("group")["run"].nunique().gt(1).any())
    distilled = df["round"] > 0
    panels = [("val_ppl", df, _val_label(curves), True),
              ("train_loss", df[~distilled], "Training loss\n(each method's objective)", False)]
    if df.loc[distilled, "train_loss"].notna().any():  # rounds shorter than trainer.log_every log no loss
        panels.append(("train_loss", df[distilled], "Distillation loss\n(KL student ‖ teacher)", False))
    with matplotlib.rc_context():
        sns.set_theme(context="paper", style="whitegrid")
        width, height = legend_size(FIGSIZE, len(order))
        fig = Figure(figsize=(width + 2.2 * (len(panels) - 2), height), layout="constrained")
        axes = fig.subplots(1, len(panels))
        for ax, (col, data, ylabel, logy) in zip(axes, panels):
            data = data[data[col].notna()]
            if not data.empty:
                sns.lineplot(data=data, x="step", y=col, hue="group", hue_order=order, palette=palette, style="group",
                             style_order=order, dashes=True,
                             errorbar="sd" if replicated else None, err_style="band", marker="o" if logy else None,
                             markersize=3, lw=1, legend=ax is axes[0], ax=ax)
            if logy:
                _log_y(ax)
            ax.set_xlabel("Optimiser steps")
            ax.set_ylabel(ylabel)
        legend = axes[0].get_legend()
        if legend is not None:
            handles, labels = axes[0].get_legend_handles_labels()
            legend.remove()
            fig.legend(handles, labels, loc="outside right upper", frameon=False, fontsize="small")
        return fig


def training_curves_figure(curves: Sequence[Mapping], out_stem: str | os.PathLike) -> dict[str, Path]:
    """`build_training_curves` written to ``{out_stem}.pdf`` and ``.png``."""
    with matplotlib.rc_context():
        sns.set_theme(context="paper", style="whitegrid")
        return save_figure(build_training_curves(curves), out_stem)
