"""Figures of sample quality: entropy and MAUVE versus sampling steps, and the gen-PPL / entropy frontier.

* `entropy_figure`  - unigram entropy of the samples vs steps (the companion of gen PPL: a low gen PPL at a
                      low entropy is degenerate text), from the per-seed gen-PPL CSV.
* `mauve_figure`    - MAUVE vs steps, from the MAUVE JSONs (one per sample file).
* `frontier_figure` - gen PPL against entropy for each run and sampler across a nucleus (top-p) sweep,
                      from the gen-PPL JSONs; the held-out reference text is a point of its own.

Every figure draws one line per run / sampler variant; several sampling seeds are averaged and drawn with a
mean ± sd band (seaborn ``errorbar="sd"``). Figures are byte-stable (`dlm.report.figures.save_figure`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, NullLocator

from dlm.report.figures import _palette, legend_size, save_figure
from dlm.report.sampling_tables import sample_metrics
from dlm.utils import read_json

PANEL = (4.5, 2.6)  # inches: one panel with the legend outside on the right
REFERENCE_ALGO = "data"


def _steps_axis(ax, steps) -> None:
    ticks = sorted({float(s) for s in steps})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{int(t)}" if t.is_integer() else f"{t:g}" for t in ticks])
    if any(b / a < 1.5 for a, b in zip(ticks, ticks[1:])):  # close step counts (32, 40): vertical labels
        ax.tick_params(axis="x", labelrotation=90)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("Sampling steps")


def _log_y(ax) -> None:
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(LogFormatter())
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))


def _legend_outside(fig: Figure, ax) -> None:
    legend = ax.get_legend()
    if legend is not None:
        handles, labels = ax.get_legend_handles_labels()
        legend.remove()
        fig.legend(handles, labels, loc="outside right upper", frameon=False, fontsize="small")


def steps_figure(df: pd.DataFrame, y: str, ylabel: str, out_stem: str | os.PathLike, logy: bool = False,
                 reference: float | None = None, reference_label: str = "held-out text") -> dict[str, Path]:
    """One panel: `y` against sampling steps (log2 x), one line per ``run / sampler``.

    `df`: one row per sample file with columns ``run``, ``sampler``, ``steps`` and `y` (``seed`` optional).
    Several rows per (run, sampler, steps) -- seeds -- are drawn as mean ± sd bands. `reference` (e.g. the
    held-out text's value) is a dotted horizontal line. Writes ``{out_stem}.pdf`` and ``.png``.
    """
    missing = [c for c in ("run", "sampler", "steps", y) if c not in df.columns]
    if missing:
        raise ValueError(f"steps_figure({y}): input lacks column(s) {missing}")
    df = df[df[y].notna()].copy()
    if df.empty:
        raise ValueError(f"steps_figure({y}): no rows with a value to plot")
    df["method"] = df["run"].astype(str) + " / " + df["sampler"].astype(str)
    df["steps"] = df["steps"].astype(float)
    order = sorted(df["method"].unique())
    replicated = bool(df.duplicated(["method", "steps"]).any())
    with matplotlib.rc_context():
        sns.set_theme(context="paper", style="whitegrid")
        fig = Figure(figsize=legend_size(PANEL, len(order)), layout="constrained")
        ax = fig.subplots()
        sns.lineplot(data=df, x="steps", y=y, hue="method", style="method", hue_order=order, style_order=order,
                     palette=_palette(order), markers=True, dashes=True, errorbar="sd" if replicated else None,
                     err_style="band", ax=ax)
        if reference is not None and np.isfinite(reference):
            ax.axhline(float(reference), color="black", ls=":", lw=1, label=reference_label)
            ax.legend()  # rebuild so the reference line is listed
        _steps_axis(ax, df["steps"])
        if logy:
            _log_y(ax)
        ax.set_ylabel(ylabel)
        _legend_outside(fig, ax)
        return save_figure(fig, out_stem)


def entropy_figure(seeds_csv: str | os.PathLike | pd.DataFrame, out_stem: str | os.PathLike) -> dict[str, Path]:
    """Unigram entropy of the samples vs steps from the per-seed gen-PPL CSV (`gen_ppl_table`'s
    ``{stem}_seeds.csv``); its held-out reference row (algo ``data``) is the dotted line."""
    df = seeds_csv.copy() if isinstance(seeds_csv, pd.DataFrame) else pd.read_csv(seeds_csv)
    is_ref = df["algo"].astype(str) == REFERENCE_ALGO if "algo" in df.columns else pd.Series(False, index=df.index)
    ref = pd.to_numeric(df.loc[is_ref, "entropy"], errors="coerce").dropna()
    return steps_figure(df[~is_ref], "entropy", "Entropy (nats)", out_stem,
                        reference=float(ref.mean()) if not ref.empty else None)


MAUVE_FIELDS = ("run", "algo", "sampler", "steps", "mauve")


def mauve_frame(json_paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One row per MAUVE JSON (``mauve_{sampler}_T{steps}_s{seed}.json``): run, algo, sampler, steps, seed,
    mauve, mauve_std (spread over the MAUVE k-means seeds of that one sample file)."""
    rows = []
    for p in json_paths:
        d = read_json(p)
        for key in MAUVE_FIELDS:
            if d.get(key) is None:
                raise ValueError(f"{p}: required key {key!r} is missing or null")
        rows.append({**{k: d[k] for k in MAUVE_FIELDS}, "seed": d.get("seed"),
                     "mauve_std": d.get("mauve_std", np.nan)})
    if not rows:
        raise ValueError("mauve_frame: no MAUVE JSONs given")
    df = pd.DataFrame(rows)
    df["steps"] = df["steps"].astype(int)
    return df.sort_values(["run", "sampler", "steps", "seed"], kind="mergesort").reset_index(drop=True)


def mauve_figure(json_paths: Sequence[str | os.PathLike], out_stem: str | os.PathLike,
                 reference_json: str | os.PathLike | None = None) -> dict[str, Path]:
    """MAUVE (↑) vs steps, one line per run / sampler; seeds as mean ± sd bands. `reference_json`: the
    held-out text's MAUVE against the reference set (a second held-out draw), drawn as the dotted line."""
    df = mauve_frame(json_paths)
    ref = read_json(reference_json).get("mauve") if reference_json else None
    return steps_figure(df, "mauve", "MAUVE (↑)", out_stem, reference=None if ref is None else float(ref))


def _boxes_overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


# label offsets (points) tried in order: beside the point first, then above / below, then further out
LABEL_OFFSETS = [(4, 3), (4, -9), (-4, 3), (-4, -9), (6, -3), (-6, -3), (0, 7), (0, -13),
                 (10, 10), (10, -16), (-10, 10), (-10, -16), (16, -3), (-16, -3), (0, 16), (0, -22),
                 (20, 18), (20, -24), (-20, 18), (-20, -24)]


def place_labels(ax, labels: Sequence[tuple[float, float, str, tuple]], fontsize: float = 6.0) -> list:
    """Annotate each (x, y, text, colour) of `labels` (data coordinates) at the first offset of `LABEL_OFFSETS`
    whose text box overlaps no label placed before it, no marker and no line of the axes and stays inside them
    (greedy; the offset with the fewest overlaps if none is free). A label moved further out than the first ring
    gets a thin leader line to its point. Returns the annotations (excluded from the figure layout)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.transforms import Bbox

    fig = ax.figure
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    fig.draw_without_rendering()  # the layout is fixed: display coordinates are final
    renderer = canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    pad = 3.0 * fig.dpi / 72  # half a marker
    obstacles = []
    for line in ax.get_lines():
        xy = ax.transData.transform(np.column_stack(line.get_data()).astype(float))
        xy = xy[np.isfinite(xy).all(1)]
        if line.get_marker() not in (None, "None", "", " "):
            obstacles += [Bbox([[x - pad, y - pad], [x + pad, y + pad]]) for x, y in xy]
        if line.get_linestyle() not in ("None", "", " "):
            for (x0, y0), (x1, y1) in zip(xy, xy[1:]):
                for f in np.linspace(0, 1, 12):
                    x, y = x0 + f * (x1 - x0), y0 + f * (y1 - y0)
                    obstacles.append(Bbox([[x - 1, y - 1], [x + 1, y + 1]]))
    placed, out = [], []
    for x, y, text, colour in labels:
        ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=LABEL_OFFSETS[0], fontsize=fontsize,
                          color=colour)
        ann.set_in_layout(False)
        best, best_cost = LABEL_OFFSETS[0], None
        for offset in LABEL_OFFSETS:
            ann.xyann = offset
            box = ann.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            cost = sum(_boxes_overlap(box, o) for o in placed + obstacles) + (0 if inside else 100)
            if best_cost is None or cost < best_cost:
                best, best_cost = offset, cost
            if cost == 0:
                break
        ann.xyann = best
        if abs(best[0]) > 8 or abs(best[1]) > 13:
            leader = ax.annotate("", (x, y), textcoords="offset points", xytext=best,
                                 arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.4, "shrinkA": 0, "shrinkB": 2})
            leader.set_in_layout(False)
        placed.append(ann.get_window_extent(renderer))
        out.append(ann)
    return out


def build_frontier_figure(json_paths: Sequence[str | os.PathLike],
                          reference_json: str | os.PathLike | None = None) -> Figure:
    """The figure of `frontier_figure`, not saved (tests read its labels)."""
    df = sample_metrics(json_paths)
    df = df[(df["condition"] == "none") & ~df["self_correct"] & df["gen_ppl"].notna() & df["entropy"].notna()]
    if df.empty:
        raise ValueError("frontier_figure: no unconditional samples with a gen PPL and an entropy")
    df = df.assign(group=df["run"] + " / " + df["sampler_kind"] + " T=" + df["steps"].astype(str))
    g = df.groupby(["group", "nucleus_p"], sort=True)
    pts = g[["gen_ppl", "entropy"]].mean().join(g[["gen_ppl", "entropy"]].std().add_suffix("_sd")).reset_index()
    order = sorted(pts["group"].unique())
    palette = _palette(order)
    markers = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*"]
    # the legend (one entry per run / sampler / steps) sets the height, so that no entry is cut off
    fig = Figure(figsize=legend_size((5.5, 3.2), len(order)), layout="constrained")
    ax = fig.subplots()
    labels = []
    for i, name in enumerate(order):
        part = pts[pts["group"] == name].sort_values("nucleus_p")
        ax.errorbar(part["entropy"], part["gen_ppl"], xerr=part["entropy_sd"].fillna(0.0),
                    yerr=part["gen_ppl_sd"].fillna(0.0), color=palette[name], marker=markers[i % len(markers)],
                    ms=4, lw=1, capsize=2, label=name)
        labels += [(row["entropy"], row["gen_ppl"], f"p={row['nucleus_p']:g}", palette[name])
                   for _, row in part[part["nucleus_p"] < 1].iterrows()]
    if reference_json:
        ref = read_json(reference_json)
        if ref.get("gen_ppl") is not None and ref.get("entropy") is not None:
            ax.plot([ref["entropy"]], [ref["gen_ppl"]], marker="*", ms=10, color="black", ls="none",
                    label="held-out text")
    _log_y(ax)
    ax.set_xlabel("Entropy (nats, ↑ more diverse)")
    ax.set_ylabel("Gen. PPL (↓)")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", frameon=False, fontsize="small")
    place_labels(ax, labels)
    return fig


def frontier_figure(json_paths: Sequence[str | os.PathLike], out_stem: str | os.PathLike,
                    reference_json: str | os.PathLike | None = None) -> dict[str, Path]:
    """Gen PPL (log y) against entropy for each run / sampler kind / steps, across its nucleus (top-p) sweep.

    `json_paths`: gen-PPL JSONs (their ``nucleus_p`` and ``sampler_kind`` group the points); conditional and
    self-corrected samples are left out (the papers' unconditional protocol). Points of one group are joined in
    order of top-p and labelled with it (top-p 1 is the plain sampler; `place_labels` keeps the labels off each
    other, the markers and the lines); several seeds give mean ± sd error bars on both axes. `reference_json`:
    the held-out text's gen-PPL JSON, drawn as a black star.
    """
    with matplotlib.rc_context():
        sns.set_theme(context="paper", style="whitegrid")
        return save_figure(build_frontier_figure(json_paths, reference_json), out_stem)
