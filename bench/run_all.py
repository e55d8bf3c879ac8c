"""Run every benchmark and assemble bench/RESULTS.md (plus the last default run's tables, if present)."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def main() -> None:
    for script in ("bench_integral.py", "bench_train.py", "bench_duo_curriculum.py", "bench_loop_overhead.py",
                   "bench_threads.py", "bench_sample.py", "bench_nucleus.py", "paper_cost.py"):
        print(f"== {script}", flush=True)
        subprocess.run([sys.executable, str(BENCH / script)], check=True)
    assemble()


def assemble() -> None:
    parts = ["# Benchmark results", "",
             f"Recorded {dt.date.today().isoformat()} on {platform.platform()}, Python {platform.python_version()}, "
             "2 CPU cores (no GPU). Numbers are ratios against baselines measured in the same run where "
             "stated; absolute seconds vary with machine load.", ""]
    # training_notes.md is written by hand: what the three training benchmarks show
    for name in ("integral", "train", "duo_curriculum", "loop_overhead", "threads", "training_notes", "sample", "nucleus",
                 "default_run", "claims_before_after", "claims_budget_fit", "gidd_ablation", "paper_cost"):
        f = BENCH / "results" / f"{name}.md"
        if f.exists():
            parts += [f.read_text().strip(), ""]
    (BENCH / "RESULTS.md").write_text("\n".join(parts))
    print(f"wrote {BENCH / 'RESULTS.md'}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--assemble"]:
        assemble()
    else:
        main()
