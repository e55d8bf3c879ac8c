"""Record the embedded default's end-to-end run: wall-clock, per-rule compute (Snakemake `benchmark:`
files) and the resulting paper tables, into bench/results/default_run.md.

    /usr/bin/time -f %e make run 2> time.txt; python bench/record_default_run.py --wall "$(tail -1 time.txt)"
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import pandas as pd

from dlm.utils import write_text

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wall", type=float, required=True, help="end-to-end wall-clock seconds of `make run`")
    ap.add_argument("--workdir", default=str(ROOT))
    ap.add_argument("--note", default="", help="a sentence on how the run was made (shown under the wall-clock)")
    a = ap.parse_args()
    work = Path(a.workdir)
    per_rule: dict[str, list[float]] = defaultdict(list)
    for tsv in sorted((work / "benchmarks").rglob("*.tsv")):
        rule = tsv.relative_to(work / "benchmarks").parts[0]
        df = pd.read_csv(tsv, sep="\t")
        key = "train " + tsv.stem if rule == "train" else rule
        per_rule[key].append(float(df["s"].iloc[-1]))
    lines = ["## The embedded default end to end (`make run`, config/config.yaml)", "",
             f"Wall-clock: **{a.wall / 60:.1f} min** on 2 CPU cores (budget: at most 60 min with every capability; "
             "the training share at most about 40 min).", "",
             *([a.note, ""] if a.note else []),
             "| job group | jobs | compute seconds |", "|---|---:|---:|"]
    lines += [f"| {k} | {len(v)} | {sum(v):.0f} |" for k, v in sorted(per_rule.items())]
    train = sum(sum(v) for k, v in per_rule.items() if k.startswith("train "))
    lines += ["", f"Training, all runs: {train / 60:.1f} min of compute."]
    for name in ("val_ppl", "duo_curriculum", "gidd_pu", "zero_shot", "gen_ppl", "remdm", "cost"):
        md = work / "results" / "tables" / f"{name}.md"
        if md.exists():
            lines += ["", f"`results/tables/{name}.md`:", "", md.read_text().strip()]
    write_text(ROOT / "bench" / "results" / "default_run.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
