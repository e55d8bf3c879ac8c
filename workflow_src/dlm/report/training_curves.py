"""Training curves: validation PPL (and training loss) against optimiser steps for every run.

Input: the merged CSVLogger files the train and distill rules write (``final_metrics.csv``,
``round_{k}_metrics.csv``; `dlm.train_log`) and, per file, its run, the run's seed group (a run and its
further training seeds, ``NAME_sS``, share one line with a mean ± sd band) and, for distillation rounds,
the round and the run it was distilled from: a distilled run's rounds continue its teacher's curve (round k
starts where round k-1 ended, round 1 at the teacher's last step).
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


def training_curves_figure(curves: Sequence[Mapping], out_stem: str | os.PathLike) -> dict[str, Path]:
    """Validation PPL (log y, EMA weights, left) and training loss (right) against optimiser steps, one line
    per seed group (mean ± sd band over its training seeds). Writes ``{out_stem}.pdf`` and ``.png``."""
    df = curves_frame(curves)
    order = sorted(df["group"].unique())
    palette = _palette(order)
    replicated = bool(df.groupby("group")["run"].nunique().gt(1).any())
    with matplotlib.rc_context():
        sns.set_theme(context="paper", style="whitegrid")
        fig = Figure(figsize=legend_size(FIGSIZE, len(order)), layout="constrained")
        axes = fig.subplots(1, 2)
        panels = (("val_ppl", "Val. PPL (↓)", True), ("train_loss", "Training loss", False))
        for ax, (col, ylabel, logy) in zip(axes, panels):
            data = df[df[col].notna()]
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
        return save_figure(fig, out_stem)
