"""Figures: generative perplexity and entropy versus the number of sampling steps, one row of panels per model
family, so that every point can be matched to its legend entry.

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
import matplotlib.ticker
from matplotlib.ticker import LogFormatter

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


# model families of the gen-PPL figure's rows (a distilled student is drawn with its base method)
FAMILIES = {"ar": "AR", "mdlm": "MDLM", "sdtt": "MDLM", "sedd": "SEDD", "d3pm": "D3PM", "gidd": "GIDD",
            "udlm": "DUO", "duo": "DUO", "dcd": "DUO"}
FAMILY_ORDER = ("AR", "SEDD", "D3PM", "MDLM", "GIDD", "DUO")
MIN_FAMILY = 3  # families with fewer lines share one row
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*", "d", "H", "8"]


def family_rows(df: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """(row title, methods) per row of the gen-PPL figure: one row per model family (`FAMILIES`, by the run's
    algo; no algo column: one row) with at least `MIN_FAMILY` run / sampler lines, the smaller families together."""
    if "algo" not in df.columns:
        return [("", sorted(df["method"].unique()))]
    fam = df["algo"].astype(str).map(lambda a: FAMILIES.get(a, a.upper()))
    members = {f: sorted(df.loc[fam == f, "method"].unique()) for f in fam.unique()}
    rank = {f: (FAMILY_ORDER.index(f) if f in FAMILY_ORDER else len(FAMILY_ORDER), f) for f in members}
    big = sorted((f for f in members if len(members[f]) >= MIN_FAMILY), key=rank.get)
    small = sorted((f for f in members if len(members[f]) < MIN_FAMILY), key=rank.get)
    rows = [(f, members[f]) for f in big]
    if small:
        rows.insert(0, (" · ".join(small), sorted(m for f in small for m in members[f])))
    return rows


def _row_style(order: list[str]) -> tuple[dict, list[str], list]:
    """Colours (the colour-blind palette up to 10 lines), markers and line styles of one row's lines."""
    dashes = ["-", "--", "-.", ":"]
    return (_palette(order), [MARKERS[i % len(MARKERS)] for i in range(len(order))],
            [dashes[i % len(dashes)] for i in range(len(order))])


def build_gen_ppl_figure(csv_or_df: str | os.PathLike | pd.DataFrame) -> Figure:
    """The figure of `gen_ppl_figure`, not saved (tests read its axes)."""
    df = _load(csv_or_df)
    is_ref = df["algo"].astype(str) == "data" if "algo" in df.columns else pd.Series(False, index=df.index)
    ref, df = df[is_ref], df[~is_ref]
    if df.empty:
        raise ValueError("gen_ppl_figure: no model rows to plot (only the reference text)")
    rows = family_rows(df)
    replicated = bool(df.duplicated(["method", "steps"]).any())
    heights = [max(FIGSIZE[1], 0.2 * (len(methods) + 3)) for _, methods in rows]
    width = FIGSIZE[0] + (2.0 if max(len(m) for _, m in rows) > 10 else 0.0)
    fig = Figure(figsize=(width, sum(heights)), layout="constrained")
    grid = fig.subplots(len(rows), 2, squeeze=False, gridspec_kw={"height_ratios": heights})
    panels = (("gen_ppl", "Gen. PPL (↓)", True), ("entropy", "Entropy (nats)", False))
    for (title, methods), axes in zip(rows, grid):
        part = df[df["method"].isin(methods)]
        steps = sorted(part["steps"].unique())
        palette, markers, lines = _row_style(methods)
        for ax, (col, ylabel, logy) in zip(axes, panels):
            data = part[part[col].notna()]
            if not data.empty:
                present = [m for m in methods if m in set(data["method"])]
                sns.pointplot(data=data, x="steps", y=col, hue="method", order=steps, hue_order=present,
                              palette=palette, markers=[markers[methods.index(m)] for m in present],
                              linestyles=[lines[methods.index(m)] for m in present],
                              dodge=0.8 if len(present) > 1 else False, errorbar="sd" if replicated else None,
                              capsize=0.05 if replicated else 0, legend=ax is axes[1], ax=ax,
                              markersize=4, linewidth=0.9)
            if not ref[col].dropna().empty:
                ax.axhline(float(ref[col].mean()), color="black", ls=":", lw=1, label="held-out text")
            ax.set_xticks(range(len(steps)))
            ax.set_xticklabels([f"{int(t)}" if float(t).is_integer() else f"{t:g}" for t in steps])
            if logy:
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(LogFormatter())  # plain numbers ("600"), not 6 x 10^2
                ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
                ax.yaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs="auto"))
            ax.set_xlabel("Sampling steps")
            ax.set_ylabel(ylabel)
            if title:
                ax.set_title(title, fontsize="medium")
        legend = axes[1].get_legend()
        if legend is not None:
            handles, labels = axes[1].get_legend_handles_labels()
            legend.remove()
            axes[1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
                           fontsize="small", title="left to right at each step count" if len(methods) > 1 else None,
                           title_fontsize="small")
    return fig


def gen_ppl_figure(csv_or_df: str | os.PathLike | pd.DataFrame, out_stem: str | os.PathLike
                   ) -> dict[str, Path]:
    """Gen. PPL (log y) and entropy versus sampling steps, one row of two panels per model family.

    Input: the per-seed CSV written by `dlm.report.tables.gen_ppl_table` (``{stem}_seeds.csv``) or an
    equivalent DataFrame with columns ``run``, ``sampler``, ``steps``, ``gen_ppl`` and (optionally) ``algo`` and
    ``entropy``. Each row of panels is one model family (`family_rows`: MDLM with its SDTT student, DUO with
    UDLM and DCD, GIDD; the families with fewer than three run / sampler lines share a row), with its own legend
    in the colour-blind palette. The step counts are categories on the x axis and, at each, the run / sampler
    points are spread sideways in legend order (``pointplot(dodge=...)``), so that points at the same step count
    do not stack. Several rows per (run, sampler, steps) -- seeds -- are averaged and drawn with ±1 sd error
    bars. Rows of the held-out reference text (``algo`` "data") are a dotted horizontal line in every panel.
    Writes ``{out_stem}.pdf`` and ``{out_stem}.png``; returns their paths.
    """
    with matplotlib.rc_context():
        sns.set_theme(context="paper", style="whitegrid")
        return save_figure(build_gen_ppl_figure(csv_or_df), out_stem)
