"""Figures: generative perplexity and entropy versus the number of sampling steps.

Figures are built on a bare `matplotlib.figure.Figure` (no pyplot, so no GUI backend and no global
figure registry) and saved with the Agg-based PDF / PNG writers; PDFs carry no timestamps, so the
same data gives the same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, NullLocator

from dlm.utils import atomic_path

FIGSIZE = (6.75, 2.4)  # inches: full text width of a two-column paper
PDF_METADATA = {"CreationDate": None, "Producer": None}  # byte-stable PDFs
PNG_DPI = 200


def _load(csv_or_df: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    df = csv_or_df.copy() if isinstance(csv_or_df, pd.DataFrame) else pd.read_csv(csv_or_df)
    missing = [c for c in ("run", "sampler", "steps", "gen_ppl") if c not in df.columns]
    if missing:
        raise ValueError(f"gen_ppl_figure: input lacks column(s) {missing}")
    if df.empty:
        raise ValueError("gen_ppl_figure: no rows to plot")
    if "entropy" not in df.columns:
        df["entropy"] = np.nan
    df["method"] = df["run"].astype(str) + " / " + df["sampler"].astype(str)
    df["steps"] = df["steps"].astype(float)
    return df


def _palette(labels: list[str]) -> dict[str, tuple]:
    """A colour per label: the colour-blind palette (10 colours), evenly spaced hues beyond that (markers or
    dashes tell the labels apart as well)."""
    n = max(len(labels), 1)
    return dict(zip(labels, sns.color_palette("colorblind" if n <= 10 else "husl", n_colors=n)))


def legend_size(size: tuple[float, float], entries: int) -> tuple[float, float]:
    """A figure size whose height fits a one-column legend of `entries` lines (plus a reference line) beside
    the axes, so that no entry is cut off; wider when the legend is long (its labels need the room)."""
    width, height = size
    return (width + (2.0 if entries > 10 else 0.0), max(height, 0.2 * (entries + 2)))


def save_figure(fig: Figure, out_stem: str | os.PathLike, dpi: int = PNG_DPI) -> dict[str, Path]:
    """Write ``{out_stem}.pdf`` (without timestamps) and ``{out_stem}.png`` atomically."""
    out_stem = Path(out_stem)
    paths = {"pdf": out_stem.with_name(out_stem.name + ".pdf"),
             "png": out_stem.with_name(out_stem.name + ".png")}
    with atomic_path(paths["pdf"]) as tmp:
        fig.savefig(tmp, format="pdf", metadata=PDF_METADATA)
    with atomic_path(paths["png"]) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    return paths


def gen_ppl_figure(csv_or_df: str | os.PathLike | pd.DataFrame, out_stem: str | os.PathLike
                   ) -> dict[str, Path]:
    """Gen. PPL (log y) and entropy versus sampling steps (log2 x), one line per run / sampler.

    Input: the per-seed CSV written by `dlm.report.tables.gen_ppl_table` (``{stem}_seeds.csv``)
    or an equivalent DataFrame with columns ``run``, ``sampler``, ``steps``, ``gen_ppl`` and
    (optionally) ``entropy``.  Several rows per (run, sampler, steps) -- seeds -- are averaged and
    drawn with ±1 sd error bars (``errorbar="sd"``).  The aggregated table CSV also works: if it
    has one row per point and a ``gen_ppl_std`` column, those std values are drawn as error bars.
    Rows of the held-out reference text (``algo`` "data", if the column exists) are drawn as a dotted
    horizontal line in both panels. Writes ``{out_stem}.pdf`` and ``{out_stem}.png``; returns their paths.
    """
    df = _load(csv_or_df)
    is_ref = df["algo"].astype(str) == "data" if "algo" in df.columns else pd.Series(False, index=df.index)
    ref, df = df[is_ref], df[~is_ref]
    if df.empty:
        raise ValueError("gen_ppl_figure: no model rows to plot (only the reference text)")
    order = sorted(df["method"].unique())
    palette = _palette(order)
    ticks = sorted(df["steps"].dropna().unique())
    replicated = df.duplicated(["method", "steps"]).any()

    with matplotlib.rc_context():
        sns.set_theme(context="paper", style="whitegrid")
        fig = Figure(figsize=legend_size(FIGSIZE, len(order)), layout="constrained")
        axes = fig.subplots(1, 2)
        panels = (("gen_ppl", "Gen. PPL (↓)", True), ("entropy", "Entropy", False))
        for ax, (col, ylabel, logy) in zip(axes, panels):
            data = df[df[col].notna()]
            if not data.empty:
                sns.lineplot(data=data, x="steps", y=col, hue="method", style="method",
                             hue_order=order, style_order=order, palette=palette,
                             markers=True, dashes=True, errorbar="sd" if replicated else None,
                             err_style="bars", legend=ax is axes[0], ax=ax)
                std_col = f"{col}_std"
                if not replicated and std_col in data.columns:
                    for m, part in data.groupby("method", sort=True):
                        ax.errorbar(part["steps"], part[col], yerr=part[std_col].fillna(0.0),
                                    fmt="none", ecolor=palette[m], capsize=2, lw=0.8)
            if not ref[col].dropna().empty:
                ax.axhline(float(ref[col].mean()), color="black", ls=":", lw=1, label="held-out text")
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks)
            ax.set_xticklabels([f"{int(t)}" if float(t).is_integer() else f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_locator(NullLocator())
            if logy:
                ax.set_yscale("log")
                # plain numbers (e.g. "60") rather than "6 x 10^1" on the log axis
                ax.yaxis.set_major_formatter(LogFormatter())
                ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False,
                                                          minor_thresholds=(2, 0.4)))
            ax.set_xlabel("Sampling steps")
            ax.set_ylabel(ylabel)
        legend = axes[0].get_legend()
        if legend is not None:
            handles, labels = axes[0].get_legend_handles_labels()
            legend.remove()
            fig.legend(handles, labels, loc="outside right upper", frameon=False)
        return save_figure(fig, out_stem)
