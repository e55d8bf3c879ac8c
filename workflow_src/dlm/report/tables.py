"""Result tables: collect metric JSONs into a DataFrame and write CSV / Markdown / LaTeX.

`write_table` is the generic writer; `val_ppl_table` and `gen_ppl_table` are the two concrete
tables of the workflow.  Outputs are deterministic text and every file is written atomically.

* ``{stem}.csv`` -- the numeric DataFrame as given, machine-readable column names, full float
  precision (``pd.read_csv`` gives the same frame back).
* ``{stem}.md``  -- ``to_markdown(index=False)`` of the formatted cells (bold best as ``**x**``).
* ``{stem}.tex`` -- a booktabs table from ``DataFrame.style ... .to_latex(hrules=True)``: column
  labels and text cells are LaTeX-escaped, best values are ``\\textbf{...}``, and the few unicode
  symbols used in labels/cells (``±``, ``↓``, ``↑``) become math-mode LaTeX.
* ``{stem}.html`` -- the Markdown table's cells as an HTML table (bold as ``<strong>``) under the caption in
  plain text: the report's page shows it (the CSV stays the download with full precision).

Bold marks the best value of a column only where rows compete: among at least two eligible rows with a
value (per group, where the table groups); a group of one is never bold. A table with bold cells must say in
its caption what bold means (`write_table` refuses a caption without the word).
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlm.utils import read_json, write_text

Format = str | Callable[[Any], str]

NA_MD = "–"
NA_TEX = "--"
_TEX_UNICODE = {"±": r"$\pm$", "↓": r"$\downarrow$", "↑": r"$\uparrow$", "×": r"$\times$", "Δ": r"$\Delta$"}
# Row order of algorithms in the tables (others follow alphabetically).
ALGO_ORDER = ("data", "unigram", "ar", "sedd", "d3pm", "mdlm", "gidd", "udlm", "duo")


# --------------------------------------------------------------------------------------------
# collecting
# --------------------------------------------------------------------------------------------

def collect(json_paths: Sequence[str | os.PathLike], fields: Mapping[str, bool] | Sequence[str],
            source_column: str | None = None) -> pd.DataFrame:
    """One row per metric JSON, one column per field (in the order of `fields`).

    `fields` maps each key to whether it is *required*; a plain sequence of keys means all are
    required.  A missing required key raises ``ValueError`` naming the file and the key; a missing
    (or ``null``) optional key becomes NaN.  With `source_column`, the JSON path is added as a
    column of that name.
    """
    if not isinstance(fields, Mapping):
        fields = {k: True for k in fields}
    rows = []
    for p in json_paths:
        obj = read_json(p)
        if not isinstance(obj, dict):
            raise ValueError(f"{p}: expected a JSON object, got {type(obj).__name__}")
        row: dict[str, Any] = {}
        for key, required in fields.items():
            if key not in obj or obj[key] is None:
                if required:
                    raise ValueError(f"{p}: required key {key!r} is missing or null")
                row[key] = np.nan
            else:
                row[key] = obj[key]
        if source_column:
            row[source_column] = str(p)
        rows.append(row)
    columns = list(fields) + ([source_column] if source_column else [])
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------------

def _is_missing(v: Any) -> bool:
    if v is None or v is pd.NA:
        return True
    try:
        return bool(isinstance(v, float | np.floating) and math.isnan(v))
    except TypeError:
        return False


def format_value(v: Any, fmt: Format | None, na_rep: str = NA_MD) -> str:
    """Format one cell: a callable, a ``str.format`` template (``"{:.2f}"``) or a format spec
    (``".2f"``, ``"d"``, ``","``); integral floats accept integer specs like ``"d"``."""
    if _is_missing(v):
        return na_rep
    if fmt is None:
        if isinstance(v, float | np.floating):
            return f"{float(v):g}"
        return str(v)
    if callable(fmt):
        return fmt(v)
    if isinstance(v, np.generic):
        v = v.item()
    if fmt.rstrip().endswith(("d", "n")) and isinstance(v, float) and v.is_integer():
        v = int(v)
    return fmt.format(v) if "{" in fmt else format(v, fmt)


def best_mask(df: pd.DataFrame, best: Mapping[str, str] | None,
              group_by: str | Sequence[str] | None = None, eligible: pd.Series | None = None,
              min_rows: int = 2) -> pd.DataFrame:
    """Boolean frame: True where a cell holds the min/max of its `best` column (per group), among the rows
    where `eligible` (bool per row; default all) is True, and only where at least `min_rows` such rows have a
    value in that column (per group): a row that competes with nobody is not "best"."""
    mask = pd.DataFrame(False, index=df.index, columns=df.columns)
    for col, how in (best or {}).items():
        if col not in df.columns:
            raise KeyError(f"best: unknown column {col!r}")
        if how not in ("min", "max"):
            raise ValueError(f"best[{col!r}] must be 'min' or 'max', got {how!r}")
        values = pd.to_numeric(df[col], errors="coerce")
        if eligible is not None:
            values = values.where(eligible.to_numpy(dtype=bool))
        if group_by is None:
            target = pd.Series(getattr(values, how)(), index=df.index)
            rivals = pd.Series(int(values.notna().sum()), index=df.index)
        else:
            keys = [group_by] if isinstance(group_by, str) else list(group_by)
            grouped = values.groupby([df[k] for k in keys], dropna=False)
            target, rivals = grouped.transform(how), grouped.transform("count")
        mask[col] = values.notna() & (values == target) & (rivals >= min_rows)
    return mask


def _display_frames(df: pd.DataFrame, formats: Mapping[str, Format], best_cells: pd.DataFrame,
                    pm: Mapping[str, str], na_rep: str, bold: Callable[[str], str] | None,
                    hidden: Sequence[str] = (), text: Mapping[str, pd.Series] | None = None):
    shown = [c for c in df.columns if c not in set(pm.values()) | set(hidden)]
    text = text or {}
    out = pd.DataFrame(index=df.index, columns=shown, dtype=object)
    for c in shown:
        fmt = formats.get(c)
        cells = []
        for i in df.index:
            given = text[c].get(i) if c in text else None
            s = given if isinstance(given, str) else format_value(df.at[i, c], fmt, na_rep)
            if c in pm and not _is_missing(df.at[i, c]) and not _is_missing(df.at[i, pm[c]]):
                s = f"{s} ± {format_value(df.at[i, pm[c]], fmt, na_rep)}"
            if bold is not None and bool(best_cells.at[i, c]):
                s = bold(s)
            cells.append(s)
        out[c] = cells
    return out


def _numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _tex_unicode(text: str) -> str:
    for k, v in _TEX_UNICODE.items():
        text = text.replace(k, v)
    return text


def write_table(df: pd.DataFrame, stem: str | os.PathLike, caption: str, label: str,
                formats: Mapping[str, Format], best: Mapping[str, str] | None = None,
                group_by: str | Sequence[str] | None = None, pm: Mapping[str, str] | None = None,
                labels: Mapping[str, str] | None = None, eligible: pd.Series | None = None,
                hidden: Sequence[str] = (), text: Mapping[str, pd.Series] | None = None) -> dict[str, Path]:
    """Write ``{stem}.csv``, ``{stem}.md``, ``{stem}.tex`` and ``{stem}.html`` atomically; return their paths.

    * `formats`: column -> format (spec like ``".2f"``, template ``"{:.2f}"`` or callable);
      unformatted numbers use ``"g"``; missing values are ``–`` (md) / ``--`` (tex).
    * `best`: column -> ``"min"`` | ``"max"``; that value is bold (per `group_by` group if given), only
      among the rows where `eligible` (bool per row) is True, and only where two or more such rows compete
      (`best_mask`). A table with a bold cell needs a caption that says what bold means (ValueError otherwise).
    * `pm`: mean column -> std column; displayed as ``mean ± std`` (std only if present), and the
      std column is not shown separately (it stays in the CSV).
    * `labels`: column -> header shown in md/tex/html (the CSV keeps the DataFrame's column names).
    * `hidden`: columns kept in the CSV only; `text`: column -> per-row display strings that replace the
      formatted value where given (e.g. a distilled run's steps "800 + 2×120"; the CSV keeps the numbers).
    * `caption` is raw LaTeX (not escaped) in the .tex, plain text above the .html table, omitted from the .md.
    """
    stem = Path(stem)
    pm = dict(pm or {})
    labels = dict(labels or {})
    for mean_col, std_col in pm.items():
        for c in (mean_col, std_col):
            if c not in df.columns:
                raise KeyError(f"pm: unknown column {c!r}")
    df = df.reset_index(drop=True)
    text = {c: pd.Series(v).reset_index(drop=True) for c, v in (text or {}).items()}
    mask = best_mask(df, best, group_by, None if eligible is None else eligible.reset_index(drop=True))
    if mask.to_numpy().any() and "bold" not in caption.lower():
        raise ValueError(f"{stem.name}: the table has bold cells but its caption does not say what bold means")

    # CSV: the data itself.
    write_text(stem.with_name(stem.name + ".csv"), df.to_csv(index=False, lineterminator="\n"))

    # HTML: the Markdown table's cells, bold as <strong> (the report's view of the table).
    plain = _display_frames(df, formats, mask, pm, NA_MD, bold=None, hidden=hidden, text=text)
    write_text(stem.with_name(stem.name + ".html"),
               html_table(plain, mask, [_numeric(df[c]) for c in plain.columns],
                          [labels.get(c, c) for c in plain.columns], caption, stem.name))

    # Markdown.
    md = _display_frames(df, formats, mask, pm, NA_MD, bold=lambda s: f"**{s}**", hidden=hidden, text=text)
    md = md.apply(lambda col: col.str.replace("|", r"\|", regex=False))
    align = ["right" if _numeric(df[c]) else "left" for c in md.columns]
    md.columns = [labels.get(c, c) for c in md.columns]
    md_text = md.to_markdown(index=False, disable_numparse=True, colalign=align) if len(md) else \
        "| " + " | ".join(md.columns) + " |\n"
    write_text(stem.with_name(stem.name + ".md"), md_text.rstrip("\n") + "\n")

    # LaTeX (booktabs).
    tex_cells = _display_frames(df, formats, mask, pm, NA_TEX, bold=None, hidden=hidden, text=text)
    col_format = "".join("r" if _numeric(df[c]) else "l" for c in tex_cells.columns)
    tex_cells.columns = [labels.get(c, c) for c in tex_cells.columns]
    bold_css = pd.DataFrame(np.where(mask[list(plain.columns)].to_numpy(), "textbf:--rwrap;", ""),
                            index=tex_cells.index, columns=tex_cells.columns)
    styler = (tex_cells.style
              .format(escape="latex")  # one .format call: a second one would reset this
              .format_index(escape="latex", axis=1)
              .hide(axis="index")
              .apply(lambda _: bold_css, axis=None))
    tex = styler.to_latex(hrules=True, caption=caption, label=label, column_format=col_format,
                          position_float="centering")
    write_text(stem.with_name(stem.name + ".tex"), _tex_unicode(tex).rstrip("\n") + "\n")
    return {ext: stem.with_name(f"{stem.name}.{ext}") for ext in ("csv", "md", "tex", "html")}


_LATEX_TEXT = {r"$\pm$": "±", r"$\Delta$": "Δ", r"$\times$": "×", r"$\downarrow$": "↓", r"$\uparrow$": "↑",
               "\\ ": " ", r"\_": "_", r"\%": "%", r"\&": "&", "$": ""}
_HTML_STYLE = ("body{font-family:sans-serif;font-size:13px;margin:8px}"
               "table{border-collapse:collapse}th,td{padding:2px 8px;border-bottom:1px solid #ddd}"
               "th{border-bottom:2px solid #444;text-align:left}td.num{text-align:right;white-space:nowrap}"
               "p.caption{max-width:60em}")


def caption_text(caption: str) -> str:
    """A table's LaTeX caption as plain text (the few LaTeX forms the captions use)."""
    for k, v in _LATEX_TEXT.items():
        caption = caption.replace(k, v)
    return re.sub(r"\\[a-z]+\{([^}]*)\}", r"\1", caption)


def html_table(cells: pd.DataFrame, bold: pd.DataFrame, numeric: Sequence[bool], headers: Sequence[str],
               caption: str, title: str) -> str:
    """A standalone, deterministic HTML page: the caption (plain text) and the table of display `cells`, the
    cells where `bold` is True in ``<strong>``, numeric columns right-aligned."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    rows = []
    for i in cells.index:
        tds = []
        for c, num in zip(cells.columns, numeric):
            v = html.escape(str(cells.at[i, c]))
            v = f"<strong>{v}</strong>" if bool(bold.at[i, c]) else v
            tds.append(f'<td class="num">{v}</td>' if num else f"<td>{v}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + html.escape(title) + "</title>"
            f"<style>{_HTML_STYLE}</style></head><body>\n"
            f'<p class="caption">{html.escape(caption_text(caption))}</p>\n'
            f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table>\n"
            "</body></html>\n")


# --------------------------------------------------------------------------------------------
# the workflow's tables
# --------------------------------------------------------------------------------------------

def _algo_rank(algo: pd.Series) -> pd.Series:
    order = {a: i for i, a in enumerate(ALGO_ORDER)}
    return algo.map(lambda a: order.get(str(a).lower(), len(order)))


def _sort(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    df = df.assign(_rank=_algo_rank(df["algo"]))
    return df.sort_values(["_rank", *keys], kind="mergesort").drop(columns="_rank").reset_index(drop=True)


def _params(v: Any) -> str:
    v = float(v)
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(v) >= div:
            return f"{v / div:.1f}{suffix}"
    return f"{v:.0f}"


VAL_PPL_FIELDS = {"run": True, "algo": True, "params": False, "train_steps": False,
                  "val_nll": True, "val_nll_se": False, "val_ppl": True, "val_ppl_se": False, "num_tokens": False}


def over_train_seeds(df: pd.DataFrame, mean_cols: Sequence[str], se_cols: Mapping[str, str] | None = None,
                     group_col: str = "group") -> pd.DataFrame:
    """One row per config entry (`group_col`; the val-PPL JSON's ``group``) from its training-seed runs.

    Each column of `mean_cols` becomes its mean over seeds with ``{col}_sd`` beside it (the spread over training
    seeds, ddof 1; NaN for one seed); ``n_seeds`` counts the runs and ``seed_runs`` names them. A Monte-Carlo
    standard error column (`se_cols`: mean column -> its s.e. column) becomes the s.e. of the mean over seeds,
    sqrt(sum se^2) / n. Other columns keep the first run's value; `run` becomes the group's name.
    """
    se_cols = dict(se_cols or {})
    df = df.copy()
    if group_col not in df.columns:
        df[group_col] = df["run"]
    df[group_col] = _group_names(df, group_col)
    rows = []
    for name, g in df.groupby(group_col, sort=False):
        row = g.iloc[0].to_dict()
        row["run"] = name
        for c in mean_cols:
            vals = pd.to_numeric(g[c], errors="coerce")
            row[c] = float(vals.mean())
            row[f"{c}_sd"] = float(vals.std(ddof=1)) if len(g) > 1 else np.nan
        for c, se in se_cols.items():
            errs = pd.to_numeric(g[se], errors="coerce")
            row[se] = float(np.sqrt((errs ** 2).sum()) / len(g)) if errs.notna().all() else np.nan
        row["n_seeds"] = len(g)
        row["seed_runs"] = " ".join(map(str, g["run"]))
        rows.append(row)
    return pd.DataFrame(rows).drop(columns=[group_col])


def has_seed_lists(df: pd.DataFrame, group_col: str = "group") -> bool:
    """Whether some config entry was trained with more than one seed (a group of several runs)."""
    return group_col in df.columns and bool(_group_names(df, group_col).duplicated().any())


def _group_names(df: pd.DataFrame, group_col: str) -> pd.Series:
    """The group of each row, the run itself where the JSON names none (older JSONs; the unigram baseline)."""
    g = df[group_col].astype(object)
    return g.where(g.notna(), df["run"].astype(object))


def _with_paper(df: pd.DataFrame, formats: dict, labels: dict, paper_values, dataset, table: str, metric: str,
                label: str, column: str | None = None) -> pd.DataFrame:
    """`paper_values.compare` plus the new columns' formats and labels (updated in place)."""
    from dlm.report import paper_values as pv

    out = pv.compare(df, paper_values, dataset, table, metric, column)
    if out is not df:
        more_labels, more_formats = pv.labels_formats(metric, label, relative=metric not in ("entropy", "mauve"))
        labels.update(more_labels)
        formats.update(more_formats)
    return out


def distilled_steps(df: pd.DataFrame, distilled: Mapping[str, Mapping[str, Any]] | None
                    ) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    """A distilled run's steps as they happened: its teacher's training steps plus rounds x steps per round.

    `distilled`: run -> {"from": teacher run, "rounds": N} (the config's `runs.NAME.distill`). The val-PPL JSON
    of a distilled run records the steps of its last round only; the frame gets ``base_steps`` (the teacher's
    ``train_steps``, from the teacher's row) and ``distill_rounds`` (CSV only) and the display text
    "800 + 2×120" for the Steps column. Unchanged when no row is a distilled run."""
    distilled = {r: spec for r, spec in (distilled or {}).items() if r in set(df["run"])}
    if not distilled:
        return df, {}
    steps = dict(zip(df["run"], pd.to_numeric(df["train_steps"], errors="coerce")))
    df = df.assign(base_steps=[steps.get(distilled[r]["from"], np.nan) if r in distilled else np.nan
                               for r in df["run"]],
                   distill_rounds=[float(distilled[r]["rounds"]) if r in distilled else np.nan for r in df["run"]])
    shown = pd.Series([None] * len(df), index=df.index, dtype=object)
    for i, r in df["run"].items():
        if r in distilled and not _is_missing(df.at[i, "train_steps"]):
            base = df.at[i, "base_steps"]
            head = "?" if _is_missing(base) else f"{int(base):,}"
            shown[i] = f"{head} + {int(df.at[i, 'distill_rounds'])}×{int(df.at[i, 'train_steps']):,}"
    return df, {"train_steps": shown}


_VAL_STEPS = ("Steps: optimiser steps trained (a distilled run: its teacher's steps + rounds × steps per round). ")


def _val_bold(judge: str | None) -> str:
    return ("Bold: the lowest NLL / PPL among the compared runs" + (
        f"; {judge}, the judge (the evaluator of gen.\\ PPL, not a compared method), is shown for reference and "
        "never bold." if judge else "."))


def val_ppl_table(json_paths: Sequence[str | os.PathLike], out_stem: str | os.PathLike,
                  paper_values: str | os.PathLike | None = None, dataset: str | None = None,
                  judge: str | None = None, distilled: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """Validation perplexity table, one row per val-PPL JSON.

    Reads from each JSON: required ``run`` (str), ``algo`` (str; ``"unigram"`` for the unigram
    baseline), ``val_nll`` (nats/token), ``val_ppl``; optional ``params`` (parameter count),
    ``train_steps`` (optimizer steps trained), ``num_tokens`` (evaluated tokens) -- NaN when absent.
    Rows are sorted by algorithm (unigram, ar, sedd, mdlm, udlm, duo, then others) and run; the
    lowest NLL / PPL is bold among the runs compared (not the `judge` run, the gen-PPL evaluator).
    Distilled runs (`distilled`: run -> {from, rounds}) show their steps as "teacher + rounds×per round"
    (`distilled_steps`). Diffusion rows are upper bounds (from the ELBO), as in the papers.
    With `paper_values` and a `dataset` it lists (a paper config's corpus), the paper's value, our deviation
    and a tolerance flag follow each row the paper reports (`dlm.report.paper_values`).
    Writes ``{out_stem}.csv/.md/.tex/.html`` and returns the DataFrame.
    """
    if not json_paths:
        raise ValueError("val_ppl_table: no metric JSONs given")
    df = collect(json_paths, {**VAL_PPL_FIELDS, "group": False})
    formats = {"params": _params, "train_steps": ",d", "val_nll": ".4f", "val_nll_se": ".4f",
               "val_ppl": ".2f", "val_ppl_se": ".2f", "num_tokens": ",d"}
    labels = {"run": "Run", "algo": "Algo", "params": "Params", "train_steps": "Steps",
              "val_nll": "Val. NLL ↓", "val_ppl": "Val. PPL ↓", "num_tokens": "Tokens"}
    hidden = ("base_steps", "distill_rounds")
    if not has_seed_lists(df):
        df = _sort(df.drop(columns="group"), ["run"])
        df, text = distilled_steps(df, distilled)
        df = _with_paper(df, formats, labels, paper_values, dataset, "val_ppl", "val_ppl", "Val. PPL")
        write_table(df, out_stem, caption="Validation perplexity (diffusion models: upper bound; $\\pm$ the "
                    "Monte-Carlo standard error of the bound; AR: exact). " + _VAL_STEPS + _val_bold(judge),
                    label="tab:val_ppl", formats=formats,
                    best={"val_nll": "min", "val_ppl": "min"}, pm={"val_nll": "val_nll_se", "val_ppl": "val_ppl_se"},
                    labels=labels, eligible=df["run"] != judge, hidden=hidden, text=text)
        return df
    # training-seed lists: mean over seeds +- their spread; the bound's Monte-Carlo s.e. in its own column
    df = over_train_seeds(df, ["val_nll", "val_ppl"], {"val_ppl": "val_ppl_se", "val_nll": "val_nll_se"})
    df = _sort(df[["run", "algo", "params", "train_steps", "n_seeds", "val_nll", "val_nll_sd", "val_ppl",
                   "val_ppl_sd", "val_ppl_se", "num_tokens", "seed_runs"]], ["run"])
    df, text = distilled_steps(df, distilled)
    formats.update({"n_seeds": "d", "val_nll_sd": ".4f", "val_ppl_sd": ".2f"})
    df = _with_paper(df, formats, labels, paper_values, dataset, "val_ppl", "val_ppl", "Val. PPL")
    write_table(df, out_stem, caption="Validation perplexity (diffusion models: upper bound), mean $\\pm$ sd over "
                "training seeds (Seeds; one seed: no spread); MC s.e.: the Monte-Carlo standard error of the mean bound. "
                + _VAL_STEPS + _val_bold(judge),
                label="tab:val_ppl", formats=formats,
                best={"val_nll": "min", "val_ppl": "min"}, pm={"val_nll": "val_nll_sd", "val_ppl": "val_ppl_sd"},
                labels={**labels, "n_seeds": "Seeds", "val_ppl_se": "MC s.e.", "seed_runs": "Runs"},
                eligible=df["run"] != judge, hidden=hidden, text=text)
    return df


def _val_ppl_rows(json_paths: Sequence[str | os.PathLike], algos: Sequence[str]) -> list[dict]:
    rows = []
    for p in json_paths:
        obj = read_json(p)
        if obj.get("algo") in algos:
            for key in ("run", "algo", "val_nll", "val_ppl"):
                if key not in obj:
                    raise ValueError(f"{p}: required key {key!r} is missing")
            rows.append(obj)
    return rows


def _bound_columns(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {"train_steps": obj.get("train_steps"), "val_ppl": obj["val_ppl"], "val_ppl_se": obj.get("val_ppl_se")}


_BOUND_FORMATS = {"train_steps": ",d", "val_ppl": ".2f", "val_ppl_se": ".2f", "delta_nll": ".4f",
                  "delta_nll_se": ".4f"}
_BOUND_LABELS = {"run": "Run", "train_steps": "Steps", "val_ppl": "Val. PPL ↓"}


def paired_delta(obj: Mapping[str, Any], base: Mapping[str, Any] | None) -> tuple[float, float]:
    """Difference of the per-token bound to a reference run with the same seeded draws (common random
    numbers): mean over passes of (nll_run - nll_base) and its standard error std / sqrt(passes).

    Runs evaluated with the same val_seed, passes, batch size and split share their t draws, so this
    difference is far more precise than the two bounds' own standard errors suggest. NaN when there is
    no reference, the settings differ, or there is only one pass.
    """
    if base is None or base is obj:
        return np.nan, np.nan
    same = ("seed", "passes", "batch_size", "max_batches", "split")
    a, b = obj.get("settings") or {}, base.get("settings") or {}
    pa, pb = obj.get("pass_nll") or [], base.get("pass_nll") or []
    if any(a.get(k) != b.get(k) for k in same) or len(pa) < 2 or len(pa) != len(pb):
        return np.nan, np.nan
    d = np.asarray(pa, dtype=float) - np.asarray(pb, dtype=float)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


def curriculum_table(json_paths: Sequence[str | os.PathLike], out_stem: str | os.PathLike,
                     paper_values: str | os.PathLike | None = None, dataset: str | None = None) -> pd.DataFrame:
    """The DUO curriculum ablation (DUO Sec. 5.1 / Ch. II): uniform-state runs without the curriculum
    (UDLM, i.e. the DUO base loss throughout) against DUO's curriculum (full softmax input, cached
    transformation) and DUO++ (top-k sparse input, 9th-degree polynomial), at the steps each trained.

    Reads the val-PPL JSONs of algos udlm and duo (others are skipped): ``algo_args.curriculum``
    gives the variant (schema defaults where a key is absent).
    """
    rows = []
    objs = _val_ppl_rows(json_paths, ("udlm", "duo"))
    base = next((o for o in sorted(objs, key=lambda o: o["run"]) if o["algo"] == "udlm"), None)
    for obj in objs:
        delta, delta_se = paired_delta(obj, base)
        cur = {"input": "softmax", "transform": "cache", "top_k": 2, "end": 500000,
               **((obj.get("algo_args") or {}).get("curriculum") or {})}
        if obj["algo"] == "udlm":
            variant, curriculum_steps, soft_input = "UDLM (no curriculum)", 0, "–"
        else:
            variant = "DUO++" if cur["input"] == "topk" else "DUO"
            curriculum_steps = min(int(cur["end"]), int(obj.get("train_steps") or cur["end"]))
            soft_input = f"top-{cur['top_k']}" if cur["input"] == "topk" else "softmax"
        rows.append({"run": obj["run"], "group": obj.get("group") or obj["run"], "variant": variant, "soft_input": soft_input,
                     "transform": "–" if obj["algo"] == "udlm" else cur["transform"],
                     "curriculum_steps": curriculum_steps, **_bound_columns(obj), "delta_nll": delta,
                     "delta_nll_se": delta_se})
    if not rows:
        raise ValueError("curriculum_table: no udlm or duo val-PPL JSONs given")
    order = {"UDLM (no curriculum)": 0, "DUO": 1, "DUO++": 2}
    df = pd.DataFrame(rows)
    if has_seed_lists(df):
        return _curriculum_over_seeds(df, order, base, out_stem, paper_values, dataset)
    df = df.drop(columns="group")
    df = df.assign(_o=df["variant"].map(order)).sort_values(["_o", "run"], kind="mergesort").drop(columns="_o")
    formats = {**_BOUND_FORMATS, "curriculum_steps": ",d"}
    labels = {**_BOUND_LABELS, "variant": "Method", "soft_input": "Soft input", "transform": "alpha(t)",
              "delta_nll": f"Δ NLL vs {base['run'] if base else 'UDLM'} (paired)", "curriculum_steps": "Curriculum steps"}
    df = _with_paper(df, formats, labels, paper_values, dataset, "val_ppl", "val_ppl", "Val. PPL")
    write_table(df, out_stem, caption="DUO curriculum ablation: validation perplexity (upper bound $\\pm$ "
                "standard error) of uniform-state models trained without the curriculum, with DUO's curriculum "
                "and with DUO++'s efficient curriculum; $\\Delta$ NLL: the paired difference of the bound to UDLM "
                "over the same seeded Monte-Carlo passes (nats/token, $\\pm$ its standard error). Bold: the lowest validation "
                "PPL of the variants.", label="tab:duo_curriculum",
                formats=formats, best={"val_ppl": "min"}, pm={"val_ppl": "val_ppl_se", "delta_nll": "delta_nll_se"},
                labels=labels)
    return df


def _curriculum_over_seeds(df: pd.DataFrame, order: Mapping[str, int], base: Mapping[str, Any] | None,
                           out_stem: str | os.PathLike, paper_values=None, dataset=None) -> pd.DataFrame:
    """The curriculum ablation when some variant has several training seeds: per config entry, the mean bound
    and its spread over seeds, and the mean paired difference to the first UDLM run with its spread."""
    df = over_train_seeds(df, ["val_ppl", "delta_nll"], {"val_ppl": "val_ppl_se"})
    df = df[["run", "variant", "soft_input", "transform", "curriculum_steps", "train_steps", "n_seeds", "val_ppl",
             "val_ppl_sd", "val_ppl_se", "delta_nll", "delta_nll_sd", "seed_runs"]]
    df = df.assign(_o=df["variant"].map(order)).sort_values(["_o", "run"], kind="mergesort").drop(columns="_o")
    formats = {**_BOUND_FORMATS, "curriculum_steps": ",d", "n_seeds": "d", "val_ppl_sd": ".2f", "delta_nll_sd": ".4f"}
    labels = {**_BOUND_LABELS, "variant": "Method", "soft_input": "Soft input", "transform": "alpha(t)",
              "delta_nll": f"Δ NLL vs {base['run'] if base else 'UDLM'} (paired)", "n_seeds": "Seeds",
              "curriculum_steps": "Curriculum steps", "val_ppl_se": "MC s.e.", "seed_runs": "Runs"}
    df = _with_paper(df, formats, labels, paper_values, dataset, "val_ppl", "val_ppl", "Val. PPL")
    write_table(df, out_stem, caption="DUO curriculum ablation over training seeds: validation perplexity (upper "
                "bound), mean $\\pm$ sd over the seeds (Seeds), MC s.e. the Monte-Carlo standard error of the mean; "
                "$\\Delta$ NLL: the paired difference of each run's bound to the first UDLM run (nats/token), mean $\\pm$ "
                "sd over seeds. Differences smaller than the seed spread are training noise. Bold: the lowest mean "
                "validation PPL of the variants.",
                label="tab:duo_curriculum", formats=formats, best={"val_ppl": "min"},
                pm={"val_ppl": "val_ppl_sd", "delta_nll": "delta_nll_sd"}, labels=labels)
    return df


def gidd_table(json_paths: Sequence[str | os.PathLike], out_stem: str | os.PathLike,
               paper_values: str | os.PathLike | None = None, dataset: str | None = None) -> pd.DataFrame:
    """GIDD by the uniform-noise share p_u (GIDD Sec. 5): validation bound of every gidd run with its
    p_u and training weighting; MDLM runs are shown as the masked-diffusion reference."""
    rows = []
    objs = _val_ppl_rows(json_paths, ("gidd", "mdlm"))
    base = next((o for o in sorted(objs, key=lambda o: o["run"]) if o["algo"] == "mdlm"), None)
    for obj in objs:
        delta, delta_se = paired_delta(obj, base)
        args = obj.get("algo_args") or {}
        is_gidd = obj["algo"] == "gidd"
        rows.append({"run": obj["run"], "algo": obj["algo"],
                     "p_uniform": float(args.get("p_uniform", 0.0)) if is_gidd else np.nan,
                     "weighting": args.get("loss_weighting", "none") if is_gidd else "ELBO",
                     **_bound_columns(obj), "delta_nll": delta, "delta_nll_se": delta_se})
    if not any(r["algo"] == "gidd" for r in rows):
        raise ValueError("gidd_table: no gidd val-PPL JSONs given")
    df = pd.DataFrame(rows).sort_values(["algo", "p_uniform", "weighting", "run"], kind="mergesort",
                                        key=lambda c: c.map({"mdlm": 0, "gidd": 1}) if c.name == "algo" else c)
    formats = {**_BOUND_FORMATS, "p_uniform": ".2f"}
    labels = {**_BOUND_LABELS, "algo": "Algo", "p_uniform": "p_u", "weighting": "Weighting",
              "delta_nll": f"Δ NLL vs {base['run'] if base else 'MDLM'} (paired)"}
    df = _with_paper(df, formats, labels, paper_values, dataset, "val_ppl", "val_ppl", "Val. PPL")
    write_table(df, out_stem, caption="GIDD by uniform-noise share $p_u$: validation perplexity (upper bound "
                "$\\pm$ standard error); MDLM is the masked-diffusion reference; $\\Delta$ NLL: the paired difference of "
                "the bound to MDLM over the same seeded Monte-Carlo passes (nats/token, $\\pm$ its standard error).", label="tab:gidd_pu",
                formats=formats, pm={"val_ppl": "val_ppl_se", "delta_nll": "delta_nll_se"}, labels=labels)
    return df


GEN_PPL_FIELDS = {"run": True, "algo": True, "sampler": True, "steps": True, "seed": False,
                  "condition": False, "gen_ppl": False, "entropy": False, "nfe": False, "seconds_per_sample": False,
                  "num_tokens": False, "num_samples": False}


def gen_ppl_seeds(json_paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Per-seed tidy frame of gen-PPL JSONs (the fields of `gen_ppl_table`), sorted."""
    df = collect(json_paths, GEN_PPL_FIELDS, source_column="file")
    seeded = df[df["seed"].notna()]
    dup = seeded.duplicated(["run", "sampler", "steps", "seed"], keep=False)
    if dup.any():
        files = ", ".join(seeded.loc[dup, "file"])
        raise ValueError(f"duplicate (run, sampler, steps, seed) among gen-PPL JSONs: {files}")
    return _sort(df, ["run", "sampler", "steps", "seed"])


REFERENCE_ALGO = "data"  # the held-out text row of gen-PPL tables (rule gen_ppl_reference)
ENTROPY_MARGIN = 0.5  # config evaluation.entropy_margin's default


def reference_entropy(df: pd.DataFrame) -> float | None:
    """The held-out reference text's mean unigram entropy (its rows: algo ``data``), or None without one."""
    if "algo" not in df.columns or "entropy" not in df.columns:
        return None
    ref = pd.to_numeric(df.loc[df["algo"].astype(str) == REFERENCE_ALGO, "entropy"], errors="coerce").dropna()
    return None if ref.empty else float(ref.mean())


def low_entropy(entropy: pd.Series, reference: float | None, entropy_margin: float = ENTROPY_MARGIN) -> pd.Series:
    """The one low-entropy rule of every gen-PPL table (`evaluation.entropy_margin`): True where the samples'
    mean unigram entropy is below the held-out reference text's minus `entropy_margin` nats. Degenerate samples
    (repeated commas, a collapsed self-correction) score a low gen PPL: the DUO paper's caution. No reference:
    nothing is flagged."""
    values = pd.to_numeric(entropy, errors="coerce")
    if reference is None:
        return pd.Series(False, index=values.index)
    return values < float(reference) - float(entropy_margin)


def entropy_rule(reference: float | None, entropy_margin: float = ENTROPY_MARGIN) -> str:
    """The low-entropy rule as the captions state it."""
    if reference is None:
        return "no held-out reference row, so no row is flagged for low entropy"
    return (f'"low entropy": the samples\' entropy is below the held-out text\'s ({reference:.2f}) minus '
            f"{entropy_margin:g} nats (degenerate text scores a low gen.\\ PPL)")


def entropy_notes(df: pd.DataFrame, entropy_margin: float = ENTROPY_MARGIN,
                  columns: Mapping[str, str] | None = None) -> pd.Series:
    """A note per row of a gen-PPL table: "reference text" on the held-out text's row and "low entropy" (with
    the label of `columns`: entropy column -> label, default {"entropy": ""}) where `low_entropy` holds."""
    columns = dict(columns or {"entropy": ""})
    is_ref = df["algo"].astype(str) == REFERENCE_ALGO
    ref = reference_entropy(df)
    note = pd.Series("", index=df.index, dtype=object)
    note[is_ref] = "reference text"
    for col, label in columns.items():
        if col in df.columns:
            low = low_entropy(df[col], ref, entropy_margin) & ~is_ref
            note[low] = (note[low] + "; low entropy" + (f" {label}" if label else "")).str.lstrip("; ")
    return note


def honest_best(df: pd.DataFrame, entropy_margin: float = ENTROPY_MARGIN) -> tuple[pd.Series, pd.Series]:
    """(eligible, flag) per row of a gen-PPL frame with ``algo``, ``entropy`` (and optionally ``condition``): a
    row may be marked best only if it is a model's (not the reference text's), unconditional (a prompt's real
    tokens lower the gen PPL: noted "prefix/suffix/infill prompt"), and not `low_entropy` (noted "low
    entropy"). Without a reference row (or entropies) no row is flagged for entropy."""
    is_ref = df["algo"].astype(str) == REFERENCE_ALGO
    low = low_entropy(df["entropy"], reference_entropy(df), entropy_margin)
    cond = df["condition"].astype(object).fillna("none").astype(str) if "condition" in df.columns else pd.Series("none", index=df.index)
    prompted = ~cond.isin(["none", ""]) & ~is_ref
    flag = pd.Series("", index=df.index, dtype=object)
    flag[is_ref] = "reference text"
    flag[prompted] = cond[prompted] + " prompt"
    flag[low & ~is_ref] = (flag[low & ~is_ref] + "; low entropy").str.lstrip("; ")
    return ~is_ref & ~low & ~prompted, flag


def gen_ppl_table(json_paths: Sequence[str | os.PathLike], out_stem: str | os.PathLike,
                  entropy_margin: float = ENTROPY_MARGIN, paper_values: str | os.PathLike | None = None,
                  dataset: str | None = None) -> pd.DataFrame:
    """Generative perplexity table: one row per (run, sampler, steps), aggregated over seeds.

    Reads from each JSON: required ``run``, ``algo``, ``sampler`` (str), ``steps`` (sampling steps;
    for AR the sequence length), ``gen_ppl``; optional ``seed``, ``entropy`` (mean unigram entropy,
    nats), ``nfe`` (network evaluations per sample), ``seconds_per_sample``, ``num_tokens``,
    ``num_samples`` -- NaN when absent.  Columns: ``gen_ppl`` (mean over seeds), ``gen_ppl_std``
    (sample std, ddof=1, NaN for a single seed; shown as ``mean ± std``), ``n_seeds``, and the
    means of ``entropy``, ``nfe``, ``seconds_per_sample``, and ``note``.  The held-out reference text
    (algo ``data``, from the `gen_ppl_reference` rule) is the first row. The lowest Gen. PPL per number of
    steps is bold among the rows whose entropy is within `entropy_margin` nats of the reference text's
    (`honest_best`; the others are noted "low entropy"), where two or more such rows compete.  Writes ``{out_stem}.csv/.md/.tex`` plus the per-seed rows to
    ``{out_stem}_seeds.csv`` (input for `dlm.report.figures.gen_ppl_figure`); returns the table.
    """
    if not json_paths:
        raise ValueError("gen_ppl_table: no metric JSONs given")
    seeds = gen_ppl_seeds(json_paths)
    write_text(Path(f"{out_stem}_seeds.csv"),
               seeds.drop(columns="file").to_csv(index=False, lineterminator="\n"))
    keys = ["run", "algo", "sampler", "steps"]
    g = seeds.groupby(keys, sort=False, dropna=False)
    df = g.agg(condition=("condition", "first"), gen_ppl=("gen_ppl", "mean"), gen_ppl_std=("gen_ppl", "std"),
               n_seeds=("gen_ppl", "size"), entropy=("entropy", "mean"), nfe=("nfe", "mean"),
               seconds_per_sample=("seconds_per_sample", "mean")).reset_index()
    df = _sort(df, ["run", "sampler", "steps"])
    eligible, df["note"] = honest_best(df, entropy_margin)
    df = df.drop(columns="condition")
    ref = reference_entropy(df)
    rule = ("Bold: the lowest gen.\\ PPL among the rows with the same number of steps, where at least two model "
            "rows without a prompt and without low entropy compete (a step count with one such row has no bold); "
            + entropy_rule(ref, entropy_margin))
    formats = {"steps": "d", "gen_ppl": ".2f", "gen_ppl_std": ".2f", "n_seeds": "d",
               "entropy": ".2f", "nfe": ".0f", "seconds_per_sample": ".3f"}
    labels = {"run": "Run", "algo": "Algo", "sampler": "Sampler", "steps": "Steps",
              "gen_ppl": "Gen. PPL ↓", "n_seeds": "Seeds", "entropy": "Entropy",
              "nfe": "NFE", "seconds_per_sample": "s / sample", "note": "Note"}
    df = _with_paper(df, formats, labels, paper_values, dataset, "gen_ppl", "gen_ppl", "Gen. PPL")
    df = _with_paper(df, formats, labels, paper_values, dataset, "gen_ppl", "entropy", "entropy")
    write_table(df, out_stem, caption="Generative perplexity (mean $\\pm$ sd over sampling seeds; no $\\pm$: one "
                f"seed) and unigram entropy of samples. {rule}.", label="tab:gen_ppl", formats=formats,
                best={"gen_ppl": "min"}, group_by="steps", pm={"gen_ppl": "gen_ppl_std"}, eligible=eligible,
                labels=labels)
    return df
