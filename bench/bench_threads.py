"""Two 1-thread training jobs side by side against one 2-thread job: the pipeline's throughput on 2 cores.

Why: at the embedded size (micro DiT, batch 16 x 128 tokens) a step's matmuls are too small for two
OpenMP threads to use two cores well, so Snakemake running two independent jobs with one thread each
(profiles/local `set-threads`) trains more steps per second in total than one job with two threads.

What is measured, for each run in RUNS (the config's settings, as bench_train.py), in ROUNDS alternating
rounds, every measurement a fresh subprocess (`bench_train.child`, the same optimiser step):
  * single: one job with 2 threads; throughput = 1 / (mean s/step);
  * pair: two jobs with 1 thread each started together; throughput = 1 / mean_a + 1 / mean_b.
The timed steps of the two jobs overlap (same warm-up, same step count, started at once), so the sum
of their rates is the machine's aggregate rate. Ratio = pair / single, per round and overall
(the medians of the rounds' throughputs).

Writes bench/results/threads.json and bench/results/threads.md. Run: python bench/bench_threads.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import RESULTS, ROOT, build_integral_cache, config_runs, machine  # noqa: E402

RUNS = ("mdlm", "duo", "gidd_pu01")
ROUNDS = 3
WARMUP, STEPS = 3, 20


def start(spec: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve().parent / "bench_train.py"), "--child",
                             json.dumps(spec)], stdout=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"measuring subprocess failed with exit code {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    import yaml

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    K, L = cfg["tokenizer"]["vocab_size"], cfg["data"]["block_length"]
    B = cfg["train_defaults"]["trainer"]["batch_size"]
    size = cfg["train_defaults"]["model"]["size"]
    info = machine()
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = config_runs(RUNS, build_integral_cache(K, tmp))
        for name in RUNS:
            algo, args = runs[name]
            base = dict(size=size, K=K, L=L, B=B, warmup=WARMUP, steps=STEPS, name=name, algo=algo, algo_args=args)
            single, pair = [], []
            for r in range(ROUNDS):
                one = result(start({**base, "threads": 2}))
                single.append(1.0 / one["mean_seconds_per_step"])
                a, b = start({**base, "threads": 1}), start({**base, "threads": 1})
                ra, rb = result(a), result(b)
                pair.append(1.0 / ra["mean_seconds_per_step"] + 1.0 / rb["mean_seconds_per_step"])
                print(f"{name} round {r + 1}: 1 x 2 threads {single[-1]:.2f} steps/s, "
                      f"2 x 1 thread {pair[-1]:.2f} steps/s", flush=True)
            rows.append({"run": name, "algo": algo, "single_steps_per_s": single, "pair_steps_per_s": pair,
                         "ratio_per_round": [p / s for p, s in zip(pair, single)],
                         "ratio": statistics.median(pair) / statistics.median(single)})
    info["loadavg_end"] = list(os.getloadavg())
    info["wall_seconds"] = time.perf_counter() - t0
    write(info, dict(size=size, K=K, L=L, B=B, rounds=ROUNDS, warmup=WARMUP, steps=STEPS), rows)


def write(info: dict, setup: dict, rows: list[dict]) -> None:
    from dlm.utils import write_json, write_text

    write_json(RESULTS / "threads.json", {"machine": info, **setup, "rows": rows})
    s = setup
    lines = [f"## Two 1-thread jobs against one 2-thread job (training, `{s['size']}`, K = {s['K']}, L = {s['L']}, "
             f"batch {s['B']})", "",
             f"Recorded {info['date']} on {info['platform']} ({info['nproc']} CPU cores; 1-min load average "
             f"{info['loadavg_start'][0]:.1f} at start, {info['loadavg_end'][0]:.1f} at end), torch {info['torch']}; "
             f"bench/bench_threads.py, {info['wall_seconds']:.0f} s.",
             f"Aggregate optimiser steps per second of the machine: one job with 2 threads, or two jobs with 1 thread "
             f"each started together (sum of their rates); {s['steps']} timed steps after {s['warmup']} warm-up, "
             f"{s['rounds']} alternating rounds, fresh subprocesses. *2 x 1 / 1 x 2* = median pair throughput / median "
             "single throughput (per round in brackets).", "",
             "| run | algo | 1 x 2 threads (steps/s, rounds) | 2 x 1 thread (steps/s, rounds) | 2 x 1 / 1 x 2 |",
             "|---|---|---|---|---:|"]
    for r in rows:
        fmt = " / ".join
        lines.append(f"| {r['run']} | {r['algo']} | {fmt(f'{v:.2f}' for v in r['single_steps_per_s'])} | "
                     f"{fmt(f'{v:.2f}' for v in r['pair_steps_per_s'])} | **{r['ratio']:.2f}x** "
                     f"({fmt(f'{v:.2f}' for v in r['ratio_per_round'])}) |")
    lines += ["", "Hence every local profile gives each job one thread (`set-threads` in profiles/local and "
              "profiles/smoke) and Snakemake runs two jobs at once: the embedded default's training, sampling and "
              "evaluation jobs are independent, so the DAG keeps both cores busy. On a cluster or GPU the rules' "
              "own `threads` apply."]
    write_text(RESULTS / "threads.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
