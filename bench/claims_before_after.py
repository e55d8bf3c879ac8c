"""The claims table of two runs of the embedded default on one host, side by side: the default before a config
change and after it (issue 17 item 2: the rebalance for the claims, bench/results/claims_before_after.md; the
fit to the make-run budget, bench/results/claims_budget_fit.md).

    python bench/claims_before_after.py --before WORKDIR_A --after WORKDIR_B \
        --before-label "config of 7811253" --after-label "config/config.yaml" --before-wall 2990 --after-wall 2900 \
        [--title "..." --out bench/results/NAME.md]

Each workdir is a finished run (its results/tables/claims.csv and benchmarks/). Both runs must come from the
same code and host: only the config differs.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import pandas as pd

from dlm.report.claims import fmt_effect, read_benchmark
from dlm.utils import write_text

ROOT = Path(__file__).resolve().parents[1]


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _interval(row: pd.Series) -> str:
    """The effect and its interval as the claims table prints them (the effect alone where it has none)."""
    if pd.isna(row["effect"]):
        return "–"
    return fmt_effect(*(float(row[k]) for k in ("effect", "lo", "hi")))


def _train_compute(workdir: Path) -> tuple[int, float]:
    """(training runs, training compute in minutes) from the train rule's benchmark files."""
    files = sorted((workdir / "benchmarks" / "train").glob("*.tsv"))
    return len(files), sum(read_benchmark(f)["s"] for f in files) / 60


def compare(before: Path, after: Path) -> pd.DataFrame:
    a = pd.read_csv(before / "results" / "tables" / "claims.csv")
    b = pd.read_csv(after / "results" / "tables" / "claims.csv")
    df = a.merge(b, on="id", how="outer", suffixes=("_before", "_after"), sort=False)
    order = {k: i for i, k in enumerate(b["id"])}
    return df.sort_values("id", key=lambda s: s.map(order)).reset_index(drop=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="workdir of the run before the change")
    ap.add_argument("--after", required=True, help="workdir of the run after it")
    ap.add_argument("--before-label", default="before")
    ap.add_argument("--after-label", default="after")
    ap.add_argument("--before-wall", type=float, help="wall-clock seconds of the workflow run before")
    ap.add_argument("--after-wall", type=float, help="wall-clock seconds of the workflow run after")
    ap.add_argument("--note", default="", help="a sentence on how the runs were made")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "claims_before_after.md"))
    ap.add_argument("--title", default="The claims table before and after the default was rebalanced (issue 17)")
    args = ap.parse_args()
    before, after = Path(args.before), Path(args.after)
    df = compare(before, after)
    lines = [f"## {args.title}", "",
             f"bench/claims_before_after.py on {_cpu()} ({platform.platform()}), 2 cores, the same code for both "
             f"runs; before: {args.before_label}; after: {args.after_label}.", ""]
    if args.note:
        lines += [args.note, ""]
    (n_b, m_b), (n_a, m_a) = _train_compute(before), _train_compute(after)
    wall = [f"{w / 60:.1f} min" if w else "–" for w in (args.before_wall, args.after_wall)]
    lines += ["| | before | after |", "|---|---|---|",
              f"| training runs (training compute) | {n_b} ({m_b:.1f} min) | {n_a} ({m_a:.1f} min) |",
              f"| workflow wall-clock | {wall[0]} | {wall[1]} |"]
    counts = {k: df[f"verdict_{k}"].value_counts() for k in ("before", "after")}
    for verdict in ("holds", "reversed", "degenerate", "inconclusive", "not run"):
        lines.append(f"| claims {verdict} | {int(counts['before'].get(verdict, 0))} | "
                     f"{int(counts['after'].get(verdict, 0))} |")
    lines += ["", "Per claim: effect (a minus b) [95% interval] and verdict, by the rule of docs/evaluation.md.", "",
              "| claim | before | verdict before | after | verdict after |", "|---|---|---|---|---|"]
    for _, r in df.iterrows():
        claim = r["claim_after"] if isinstance(r["claim_after"], str) else r["claim_before"]
        bef = _interval(r.rename(lambda c: c.replace("_before", ""))) if isinstance(r["verdict_before"], str) else "–"
        aft = _interval(r.rename(lambda c: c.replace("_after", ""))) if isinstance(r["verdict_after"], str) else "–"
        lines.append(f"| {claim} | {bef} | {r['verdict_before'] if isinstance(r['verdict_before'], str) else '–'} | "
                     f"{aft} | {r['verdict_after'] if isinstance(r['verdict_after'], str) else '–'} |")
    write_text(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
