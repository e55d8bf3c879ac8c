"""The papers' published numbers beside ours (config/paper_values.yaml).

Each entry of the file names a dataset (a config's corpus.name: owt, lm1b), a table, a run of the paper configs,
a metric, the value and its source, and optionally the steps, sampler variant and zero-shot corpus it belongs
to. `compare` adds to a table's frame, for one metric, the paper's value (``paper_{metric}``), our deviation from
it (relative for PPLs, absolute for entropy and MAUVE, as the file's tolerance says) and a flag where the
deviation is outside the tolerance. A config whose corpus matches no entry (the embedded default) gets no
columns: its tables stay as they are. `same_model` maps a run name to the run whose published values are its
own (one released model imported from two copies: config/paper/released.yaml's mdlm_ckpt is the papers' mdlm).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import yaml

MATCH_KEYS = ("steps", "sampler", "corpus")  # optional keys of an entry; absent = matches any row
REQUIRED = ("dataset", "table", "run", "metric", "value", "source")


def load(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """(entries, tolerance per metric) of a paper-values file; every problem names the file and the entry."""
    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    tolerance = doc.get("tolerance") or {}
    for metric, tol in tolerance.items():
        if not isinstance(tol, dict) or len(tol) != 1 or next(iter(tol)) not in ("relative", "absolute") \
                or not isinstance(next(iter(tol.values())), int | float) or next(iter(tol.values())) < 0:
            raise ValueError(f"{path}: tolerance.{metric} must be {{relative: X}} or {{absolute: X}} with X >= 0, "
                             f"got {tol!r}")
    rows = []
    for i, entry in enumerate(doc.get("values") or []):
        missing = [k for k in REQUIRED if k not in entry]
        if missing:
            raise ValueError(f"{path}: values[{i}] lacks {missing} (each entry needs {list(REQUIRED)})")
        unknown = set(entry) - set(REQUIRED) - set(MATCH_KEYS)
        if unknown:
            raise ValueError(f"{path}: values[{i}] has unknown keys {sorted(unknown)}; allowed: "
                             f"{list(REQUIRED) + list(MATCH_KEYS)}")
        if not isinstance(entry["value"], int | float):
            raise ValueError(f"{path}: values[{i}].value must be a number, got {entry['value']!r}")
        if entry["metric"] not in tolerance:
            raise ValueError(f"{path}: values[{i}].metric {entry['metric']!r} has no tolerance; expected one of "
                             f"{sorted(tolerance)}")
        rows.append({k: entry.get(k) for k in REQUIRED + MATCH_KEYS})
    df = pd.DataFrame(rows, columns=list(REQUIRED + MATCH_KEYS))
    dup = df.duplicated(["dataset", "table", "run", "metric", *MATCH_KEYS], keep=False)
    if dup.any():
        raise ValueError(f"{path}: duplicate entries for {df.loc[dup, ['table', 'run', 'metric']].values.tolist()}")
    return df, tolerance


def same_model(path: str | os.PathLike | None) -> dict[str, str]:
    """{run: the run name of the entries that report it} from the file's optional `same_model` mapping."""
    if path is None:
        return {}
    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    aliases = doc.get("same_model") or {}
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise ValueError(f"{path}: same_model must map run names to run names, got {aliases!r}")
    return {str(k): v for k, v in aliases.items()}


def _matches(entry: pd.Series, row: pd.Series) -> bool:
    for key in MATCH_KEYS:
        want = entry[key]
        if want is None or (isinstance(want, float) and np.isnan(want)):
            continue
        if key not in row.index:
            return False
        have = row[key]
        if key == "steps":
            if pd.isna(have) or int(have) != int(want):
                return False
        elif str(have) != str(want):
            return False
    return True


def compare(df: pd.DataFrame, path: str | os.PathLike | None, dataset: str | None, table: str, metric: str,
            column: str | None = None) -> pd.DataFrame:
    """`df` with ``paper_{metric}``, ``{metric}_dev`` and ``{metric}_flag`` columns for the rows the paper
    reports (NaN / "" elsewhere); `column` is our value's column (default `metric`). Rows match on ``run`` and
    the entry's optional steps / sampler / corpus. Unchanged when no entry is for this dataset and table."""
    if path is None or dataset is None:
        return df
    entries, tolerance = load(path)
    entries = entries[(entries["dataset"] == dataset) & (entries["table"] == table) & (entries["metric"] == metric)]
    if entries.empty:
        return df
    column = column or metric
    kind, tol = next(iter(tolerance[metric].items()))
    aliases = same_model(path)
    paper = np.full(len(df), np.nan)
    source: list[Any] = [""] * len(df)
    for i, (_, row) in enumerate(df.iterrows()):
        run = aliases.get(str(row["run"]), str(row["run"]))
        for _, entry in entries[entries["run"] == run].iterrows():
            if _matches(entry, row):
                paper[i], source[i] = float(entry["value"]), entry["source"]
    ours = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)
    dev = (ours - paper) / paper if kind == "relative" else ours - paper
    limit = f"±{tol:.0%}" if kind == "relative" else f"±{tol:g}"
    flag = np.where(np.isnan(paper), "", np.where(np.isnan(dev), "no value of ours",
                                                  np.where(np.abs(dev) > tol, f"outside {limit}", f"within {limit}")))
    out = df.copy()
    out[f"paper_{metric}"] = paper
    out[f"{metric}_dev"] = dev
    out[f"{metric}_flag"] = flag
    out[f"{metric}_source"] = source
    return out


def labels_formats(metric: str, label: str, relative: bool = True) -> tuple[dict[str, str], dict[str, str]]:
    """Column headers and formats of the columns `compare` adds, for `write_table`."""
    return ({f"paper_{metric}": f"Paper {label}", f"{metric}_dev": f"Δ {label} vs paper",
             f"{metric}_flag": f"{label}: tolerance", f"{metric}_source": f"{label}: source"},
            {f"paper_{metric}": ".2f" if metric != "mauve" else ".3f", f"{metric}_dev": "+.1%" if relative else "+.2f"})
