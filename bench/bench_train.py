"""Training throughput (tokens/s) and peak memory of every method at the embedded default's size.

What is measured: one optimiser step = `Method.loss(batch, step=i)` (the training objective, so DUO runs
its curriculum step: start <= i <= end), backward, grad-norm clip 1.0, AdamW step; the config's model
size, vocabulary K, block length L and batch size (config/config.yaml: micro, 2048, 128, 16), fp32 on
CPU, 2 torch threads, glibc malloc tuned as in every pipeline job (`dlm.utils.tune_malloc`). Random
token ids (the step cost does not depend on the data). Each run's `algo` and `algo_args` are the
config's (`runs.*`): duo = softmax input + integral cache (a K = 2048 cache built here in a temporary
directory with `dlm.diffusion.integral`, as the `integral` rule does), duo_pp = top-2 input + poly9,
d3pm T = 1000, gidd p_u = 0.1.

Every measurement is a fresh subprocess (so its peak RSS is its own). Methods are measured in ROUNDS
alternating rounds (ar, mdlm, ..., gidd, ar, mdlm, ...). Every step of a run does the same work, so
a round's time is its fastest timed step (the least disturbed by the other jobs on the shared cores:
with 2 OpenMP threads a step slows down several-fold whenever one of them is descheduled); a method's
time is its best round, and the ratio to AR (the baseline, measured in the same run) is best / best.
Medians and means are in the JSON. Memory: peak RSS of the process (ru_maxrss, includes the ~0.3 GB
of torch itself) and the training increment = peak RSS - RSS just before the first step (optimiser
state, gradients, activations).

The malloc-tuning comparison (same step with glibc's default allocator settings) is kept for two
methods only (ar, duo), alternated with the tuned runs in the same rounds: it costs ~6 subprocesses.

Writes bench/results/train.json and bench/results/train.md. Run: python bench/bench_train.py
`python bench/bench_train.py --child SPEC_JSON` is the measuring subprocess (also used by
bench_duo_curriculum.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
RUNS = ("ar", "mdlm", "udlm", "sedd", "d3pm", "duo", "duo_pp", "gidd_pu01")
MALLOC_RUNS = ("ar", "duo")
ROUNDS, WARMUP, STEPS = 3, 2, 6
MIN_ROUNDS, BUDGET_S = 2, 150  # a later round starts only while the run has taken less than BUDGET_S
THREADS = 2


# ------------------------------------------------------------------------------ measuring subprocess
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(spec: dict) -> dict:
    """One measurement in this (fresh) process: build the method, warm up, time `steps` optimiser steps."""
    import resource

    import torch

    torch.set_num_threads(int(spec.get("threads", THREADS)))
    if spec.get("malloc", "tuned") == "tuned":
        from dlm.utils import tune_malloc

        tune_malloc()
    from dlm.algos import get_method

    K, L, B = int(spec["K"]), int(spec["L"]), int(spec["B"])
    cls = get_method(spec["algo"])
    torch.manual_seed(0)
    m = cls(vocab_size=K, block_length=L, special_ids={"bos": 0, "eos": 0, "pad": None, "mask": 1},
            tokenizer_dir="-", model={"size": spec["size"], "dropout": 0.0},
            time_conditioning=cls.default_time_conditioning, **spec.get("algo_args", {}))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(int(spec["warmup"]) + int(spec["steps"])):
        x = torch.randint(2, K, (B, L), generator=g)
        batches.append({"input_ids": x, "attention_mask": torch.ones_like(x)})

    def step(i: int) -> None:
        s, n = m.loss(batches[i], step=i)  # DUO: curriculum step while start <= i <= end
        (s / n).backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    rss0 = _rss_mb()
    for i in range(int(spec["warmup"])):
        step(i)
    times = []
    for i in range(int(spec["warmup"]), len(batches)):
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
    out = {"name": spec["name"], "params": m.num_params(), "step_seconds": times,
           "seconds_per_step": min(times), "median_seconds_per_step": statistics.median(times),
           "mean_seconds_per_step": sum(times) / len(times), "loadavg": os.getloadavg(),
           "rss_before_training_mb": rss0,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    out["training_increment_mb"] = out["peak_rss_mb"] - rss0
    if spec.get("breakdown"):
        out["breakdown"] = duo_breakdown(m, batches[0], int(spec.get("breakdown_reps", 3)))
    return out


def duo_breakdown(m, batch: dict, reps: int) -> dict:
    """Seconds (best of `reps`) of the two parts of a DUO curriculum step that DUO++ changes:
    building the relaxed input (dense softmax(w / tau) over K, or the top-k sparse input) and the
    embedding of it, forward + backward into the embedding matrix ((B, L, K) @ (K, d), or embedding_bag)."""
    import torch

    from dlm.algos.duo import gaussian_latent, sample_topk_input

    cur = m.hparams.curriculum
    x = batch["input_ids"]
    K = m.hparams.vocab_size
    gamma = torch.full((x.shape[0],), 0.5 * (cur["gamma_min"] + cur["gamma_max"]), dtype=torch.float64)

    def make_input():
        with torch.no_grad():
            if cur["input"] == "softmax":
                w = gaussian_latent(x, gamma, K)
                w.argmax(dim=-1)
                return torch.softmax(w / float(cur["tau"]), dim=-1)
            ids, weights, _ = sample_topk_input(x, gamma, K, int(cur["top_k"]), float(cur["tau"]))
            return ids, weights

    def best(fn) -> float:
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return min(ts)

    inp = make_input()

    def embed_fwd_bwd():
        m.backbone.embed(inp).sum().backward()
        m.zero_grad(set_to_none=True)

    return {"input_s": best(make_input), "embed_fwd_bwd_s": best(embed_fwd_bwd)}


# ------------------------------------------------------------------------------------------- driver
def measure(spec: dict) -> dict:
    """Run `child(spec)` in a fresh interpreter and return its result."""
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_integral_cache(vocab_size: int, directory: str | os.PathLike) -> str:
    """The DUO integral cache for `vocab_size` on the config's gamma grid (as the `integral` rule)."""
    import yaml

    from dlm.diffusion.integral import compute_cache, save_cache

    p = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["integral"]
    path = os.path.join(directory, f"integral_K{vocab_size}.npz")
    save_cache(path, compute_cache(vocab_size, p["gamma_min"], p["gamma_max"], p["points"]))
    return path


def config_runs(names, integral_path: str | None) -> dict[str, tuple[str, dict]]:
    """(algo, algo_args) of the config's runs; the integral cache path is added where DUO reads it."""
    import yaml

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    out = {}
    for name in names:
        run = cfg["runs"][name]
        args = dict(run.get("algo_args", {}))
        if run["algo"] == "duo" and args.get("curriculum", {}).get("transform", "cache") == "cache":
            args["integral_path"] = integral_path
        out[name] = (run["algo"], args)
    return out


def machine() -> dict:
    import torch

    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "nproc": os.cpu_count(),
            "loadavg_start": os.getloadavg()}


def main() -> None:
    import yaml

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    size = cfg["train_defaults"]["model"]["size"]
    K, L = cfg["tokenizer"]["vocab_size"], cfg["data"]["block_length"]
    B = cfg["train_defaults"]["trainer"]["batch_size"]
    info = machine()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runs = config_runs(RUNS, build_integral_cache(K, tmp))
        base = dict(size=size, K=K, L=L, B=B, warmup=WARMUP, steps=STEPS, threads=THREADS)
        rounds: list[dict[str, dict]] = []
        for r in range(ROUNDS):
            if r >= MIN_ROUNDS and time.perf_counter() - t_start > BUDGET_S:
                print(f"time budget spent: {r} rounds", flush=True)
                break
            res = {}
            for name in RUNS:
                algo, args = runs[name]
                res[name] = measure({**base, "name": name, "algo": algo, "algo_args": args})
                if name in MALLOC_RUNS:
                    res[name + "/default_malloc"] = measure({**base, "name": name, "algo": algo, "algo_args": args,
                                                             "malloc": "default"})
                print(f"round {r + 1} {name}: {res[name]['seconds_per_step']:.3f} s/step, "
                      f"peak {res[name]['peak_rss_mb']:.0f} MB", flush=True)
            rounds.append(res)
    info["loadavg_end"] = os.getloadavg()
    info["wall_seconds"] = time.perf_counter() - t_start

    def best(name):
        return min(rd[name]["seconds_per_step"] for rd in rounds)

    rows = []
    for name in RUNS:
        per_round_ratio = [rd["ar"]["seconds_per_step"] / rd[name]["seconds_per_step"] for rd in rounds]
        row = {"run": name, "algo": runs[name][0], "algo_args": {k: v for k, v in runs[name][1].items()
                                                                   if k != "integral_path"},
               "params": rounds[0][name]["params"], "seconds_per_step": best(name),
               "tokens_per_s": B * L / best(name), "throughput_vs_ar": best("ar") / best(name),
               "vs_ar_per_round": per_round_ratio,
               "peak_rss_mb": statistics.median(rd[name]["peak_rss_mb"] for rd in rounds),
               "training_increment_mb": statistics.median(rd[name]["training_increment_mb"] for rd in rounds),
               "seconds_per_step_rounds": [rd[name]["seconds_per_step"] for rd in rounds],
               "median_seconds_per_step_rounds": [rd[name]["median_seconds_per_step"] for rd in rounds],
               "loadavg_rounds": [rd[name]["loadavg"] for rd in rounds]}
        if name in MALLOC_RUNS:
            row["tuned_vs_default_malloc"] = best(name + "/default_malloc") / best(name)
            row["tuned_vs_default_malloc_per_round"] = [
                rd[name + "/default_malloc"]["seconds_per_step"] / rd[name]["seconds_per_step"] for rd in rounds]
            row["default_malloc_seconds_per_step_rounds"] = [rd[name + "/default_malloc"]["seconds_per_step"]
                                                             for rd in rounds]
            row["default_malloc_peak_rss_mb"] = statistics.median(rd[name + "/default_malloc"]["peak_rss_mb"]
                                                                  for rd in rounds)
        rows.append(row)
    write(info, dict(size=size, vocab_size=K, block_length=L, batch_size=B, rounds=len(rounds), warmup=WARMUP,
                     steps=STEPS, threads=THREADS), rows)


def write(info: dict, setup: dict, rows: list[dict]) -> None:
    from dlm.utils import write_json, write_text

    write_json(RESULTS / "train.json", {"machine": info, **setup, "rows": rows})
    s = setup
    load = f"{info['loadavg_start'][0]:.1f} at start, {info['loadavg_end'][0]:.1f} at end"
    lines = [f"## Training throughput (model `{s['size']}`, K = {s['vocab_size']}, L = {s['block_length']}, "
             f"batch {s['batch_size']}, fp32, {s['threads']} threads)", "",
             f"Recorded {info['date']} on {info['platform']} ({info['nproc']} CPU cores shared with other jobs; "
             f"1-min load average {load}), torch {info['torch']}; bench/bench_train.py, {info['wall_seconds']:.0f} s.",
             "One step = `loss(batch, step)` (the training objective: DUO runs its curriculum step) + backward + "
             "grad clip + AdamW, with each run's algo_args from config/config.yaml. Each measurement is a fresh "
             f"subprocess: {s['warmup']} warm-up + {s['steps']} timed steps; {s['rounds']} alternating rounds over "
             "all methods; s/step = the fastest step of all rounds (every step does the same work; the rounds' "
             "own fastest and median steps show the noise of the shared machine). *vs AR* = AR's best s/step / "
             "the method's best s/step, AR measured in the same run. Peak "
             "RSS includes torch itself (~0.3 GB); *train +MB* = peak RSS - RSS before the first step (optimiser "
             "state, gradients, activations).", "",
             "| run | algo / args | parameters | s/step | tokens/s | vs AR | rounds: fastest (median) step | "
             "peak RSS (MB) | train +MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        args = short_args(r["algo_args"])
        each = " / ".join(f"{v:.3f} ({m:.3f})" for v, m in zip(r["seconds_per_step_rounds"],
                                                                r["median_seconds_per_step_rounds"]))
        lines.append(f"| {r['run']} | {r['algo']}{' (' + args + ')' if args else ''} | {r['params']:,} | "
                     f"{r['seconds_per_step']:.3f} | {r['tokens_per_s']:,.0f} | {r['throughput_vs_ar']:.2f}x | "
                     f"{each} | {r['peak_rss_mb']:.0f} | {r['training_increment_mb']:.0f} |")
    lines += ["", "Allocator tuning (`dlm.utils.tune_malloc`, applied by every pipeline job) against glibc's "
              "defaults, same step, alternated in the same rounds; kept for two methods only (ar, and duo whose "
              "curriculum allocates the largest (B, L, K) temporaries) to keep the benchmark short:", "",
              "| run | tuned vs default (best / best) | default s/step of each round | peak RSS tuned / default (MB) |",
              "|---|---:|---:|---:|"]
    for r in rows:
        if "tuned_vs_default_malloc" in r:
            each = " / ".join(f"{v:.3f}" for v in r["default_malloc_seconds_per_step_rounds"])
            lines.append(f"| {r['run']} | {r['tuned_vs_default_malloc']:.2f}x | {each} | "
                         f"{r['peak_rss_mb']:.0f} / {r['default_malloc_peak_rss_mb']:.0f} |")
    lines += ["", "d3pm runs the network twice per step (the reconstruction term on the clean input, then the "
              "diffusion term), hence ~0.6x. duo's curriculum step builds and embeds a dense (B, L, K) soft input "
              "(see the DUO++ section); duo_pp's sparse top-2 input costs about as much as a discrete one. The "
              "allocator comparison costs 6 extra subprocesses (~25 s on a quiet machine), so it is kept, for two "
              "methods only."]
    write_text(RESULTS / "train.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def short_args(args: dict) -> str:
    """The algo_args that change the step's cost, briefly: 'softmax, cache', 'topk k=2, poly9', 'T=1000'."""
    cur = args.get("curriculum")
    if cur:
        inp = cur.get("input", "softmax") + (f" k={cur.get('top_k', 2)}" if cur.get("input") == "topk" else "")
        return f"{inp}, {cur.get('transform', 'cache')}"
    return ", ".join(f"{'p_u' if k == 'p_uniform' else k}={v}" for k, v in args.items())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
    else:
        main()
