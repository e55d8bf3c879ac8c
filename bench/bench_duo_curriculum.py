"""DUO++'s curriculum (top-k sparse input, poly9 transformation) against the original DUO curriculum
(dense softmax(w / tau) over the vocabulary, integral cache): time per training step and peak memory.

Two sizes, both fp32 on CPU with 2 torch threads, L = 128:
  * embedded: the embedded default's `micro` DiT (hidden 128, 3 blocks, 4 heads), K = 2048, batch 16;
  * gpt2-vocab: the same `micro` DiT with the papers' GPT-2 vocabulary K = 50258 and batch BATCH_50K
    (the (B, L, K) tensors are then 50258 / 2048 = 25x larger per token; micro keeps a step around a
    second on 2 cores).
The runs are the config's `duo` (softmax + cache) and `duo_pp` (topk k = 2 + poly9) with curriculum
end 400; every timed step is a curriculum step (`loss(batch, step=i)`, i <= 400). `udlm` (the same
bound with a discrete input, i.e. no curriculum) is measured alongside as the floor a cheaper
curriculum could reach. Each measurement is a fresh subprocess (`bench_train.py --child`), the three
runs alternate over ROUNDS rounds; a round's time is its fastest timed step (every step does the
same work; see bench_train.py) and a run's time is its best round; DUO++/DUO is best / best, with
the per-round ratios as the spread. Memory: peak RSS and the training increment (peak RSS - RSS before
the first step), also in units of one (B, L, K) float32 tensor.

Each DUO subprocess also times the two parts of the step that DUO++ changes (best of 3, after the
timed steps): building the relaxed input, and embedding it forward + backward into the embedding
matrix (dense (B, L, K) @ (K, d) vs embedding_bag over k rows).

Writes bench/results/duo_curriculum.json and bench/results/duo_curriculum.md.
Run: python bench/bench_duo_curriculum.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import RESULTS, THREADS, build_integral_cache, config_runs, machine, measure  # noqa: E402

RUNS = ("duo", "duo_pp", "udlm")
ROUNDS = 3
MIN_ROUNDS, BUDGET_S = 2, 75  # per size: a later round starts only while the size has taken less than BUDGET_S
BATCH_50K = 4
SIZES = [
    {"label": "embedded", "size": "micro", "K": 2048, "L": 128, "B": 16, "warmup": 2, "steps": 6},
    {"label": "gpt2-vocab", "size": "micro", "K": 50258, "L": 128, "B": BATCH_50K, "warmup": 1, "steps": 3},
]


def main() -> None:
    info = machine()
    t_start = time.perf_counter()
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for sz in SIZES:
            runs = config_runs(RUNS, build_integral_cache(sz["K"], tmp))
            base = {k: sz[k] for k in ("size", "K", "L", "B", "warmup", "steps")} | {"threads": THREADS}
            rounds = []
            t_size = time.perf_counter()
            for r in range(ROUNDS):
                if r >= MIN_ROUNDS and time.perf_counter() - t_size > BUDGET_S:
                    print(f"{sz['label']}: time budget spent: {r} rounds", flush=True)
                    break
                res = {}
                for name in RUNS:
                    algo, args = runs[name]
                    res[name] = measure({**base, "name": name, "algo": algo, "algo_args": args,
                                         "breakdown": name != "udlm"})
                    print(f"{sz['label']} round {r + 1} {name}: {res[name]['seconds_per_step']:.3f} s/step, "
                          f"peak {res[name]['peak_rss_mb']:.0f} MB", flush=True)
                rounds.append(res)
            out.append(summarise(sz, rounds))
    info["loadavg_end"] = __import__("os").getloadavg()
    info["wall_seconds"] = time.perf_counter() - t_start
    write(info, out)


def summarise(sz: dict, rounds: list[dict]) -> dict:
    blk_mb = sz["B"] * sz["L"] * sz["K"] * 4 / 2**20  # one (B, L, K) float32 tensor
    runs = {}
    for name in RUNS:
        r = {"params": rounds[0][name]["params"],
             "seconds_per_step": min(rd[name]["seconds_per_step"] for rd in rounds),
             "seconds_per_step_rounds": [rd[name]["seconds_per_step"] for rd in rounds],
             "median_seconds_per_step_rounds": [rd[name]["median_seconds_per_step"] for rd in rounds],
             "loadavg_rounds": [rd[name]["loadavg"] for rd in rounds],
             "peak_rss_mb": statistics.median(rd[name]["peak_rss_mb"] for rd in rounds),
             "training_increment_mb": statistics.median(rd[name]["training_increment_mb"] for rd in rounds)}
        r["increment_in_BLK_tensors"] = r["training_increment_mb"] / blk_mb
        if "breakdown" in rounds[0][name]:
            r["input_s"] = min(rd[name]["breakdown"]["input_s"] for rd in rounds)
            r["embed_fwd_bwd_s"] = min(rd[name]["breakdown"]["embed_fwd_bwd_s"] for rd in rounds)
        runs[name] = r
    d, p, u = runs["duo"], runs["duo_pp"], runs["udlm"]
    return {**sz, "rounds": len(rounds), "BLK_tensor_mb": blk_mb, "runs": runs,
            "time_pp_over_duo": p["seconds_per_step"] / d["seconds_per_step"],
            "time_pp_over_duo_per_round": [rd["duo_pp"]["seconds_per_step"] / rd["duo"]["seconds_per_step"]
                                           for rd in rounds],
            "time_udlm_over_duo": u["seconds_per_step"] / d["seconds_per_step"],
            "peak_rss_pp_over_duo": p["peak_rss_mb"] / d["peak_rss_mb"],
            "increment_pp_over_duo": p["training_increment_mb"] / d["training_increment_mb"]}


def write(info: dict, sizes: list[dict]) -> None:
    from dlm.utils import write_json, write_text

    write_json(RESULTS / "duo_curriculum.json", {"machine": info, "rounds": ROUNDS, "threads": THREADS,
                                                 "sizes": sizes})
    load = f"{info['loadavg_start'][0]:.1f} at start, {info['loadavg_end'][0]:.1f} at end"
    lines = ["## DUO++ curriculum vs the original DUO curriculum (time and memory per training step)", "",
             f"Recorded {info['date']} on {info['platform']} ({info['nproc']} CPU cores shared with other jobs; "
             f"1-min load average {load}), torch {info['torch']}, fp32, {THREADS} threads; "
             f"bench/bench_duo_curriculum.py, {info['wall_seconds']:.0f} s.",
             "`duo` = softmax(w / tau) input over all K + integral cache; `duo_pp` = top-2 sparse input + poly9 "
             "(the config's runs, curriculum end 400); `udlm` = the same bound with a discrete input (no "
             "curriculum), for reference. Every timed step is a curriculum step (loss + backward + clip + AdamW). "
             "Fresh subprocess per measurement, the three runs alternating over 3 rounds (2 when a size has "
             f"taken more than {BUDGET_S} s); s/step = the fastest step of all rounds; DUO++/DUO = best / best, "
             "the per-round ratios in brackets. *train +MB* = peak RSS - RSS before the first step; *in BLK* = that "
             "increment in units of one (B, L, K) float32 tensor. *input build* and *embed fwd+bwd* time the two "
             "parts of a step that DUO++ replaces (best of 3, in the same subprocesses).", "",
             "| size | run | params | s/step | DUO++/DUO time | peak RSS (MB) | train +MB | in BLK | "
             "input build (ms) | embed fwd+bwd (ms) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in sizes:
        label = f"{s['label']}: {s['size']}, K={s['K']}, L={s['L']}, B={s['B']}"
        for name in RUNS:
            r = s["runs"][name]
            ratio = ""
            if name == "duo_pp":
                pr = s["time_pp_over_duo_per_round"]
                ratio = f"**{s['time_pp_over_duo']:.2f}** ({' / '.join(f'{v:.2f}' for v in pr)})"
            elif name == "udlm":
                ratio = f"({s['time_udlm_over_duo']:.2f} udlm/duo)"
            ms = (lambda k: f"{1e3 * r[k]:.1f}" if k in r else "-")
            lines.append(f"| {label} | {name} | {r['params']:,} | {r['seconds_per_step']:.3f} | {ratio} | "
                         f"{r['peak_rss_mb']:.0f} | {r['training_increment_mb']:.0f} | "
                         f"{r['increment_in_BLK_tensors']:.1f} | {ms('input_s')} | {ms('embed_fwd_bwd_s')} |")
    lines += ["", "| size | DUO++/DUO time | DUO++/DUO peak RSS | DUO++/DUO train +MB |", "|---|---:|---:|---:|"]
    for s in sizes:
        lines.append(f"| {s['label']} (K={s['K']}, B={s['B']}) | {s['time_pp_over_duo']:.2f} | "
                     f"{s['peak_rss_pp_over_duo']:.2f} | {s['increment_pp_over_duo']:.2f} |")
    lines += ["", *notes(sizes)]
    write_text(RESULTS / "duo_curriculum.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def notes(sizes: list[dict]) -> list[str]:
    """What the numbers say, per size (computed from them)."""
    out = []
    for s in sizes:
        d, p, u = (s["runs"][k] for k in ("duo", "duo_pp", "udlm"))
        parts_d = d["input_s"] + d["embed_fwd_bwd_s"]
        parts_p = p["input_s"] + p["embed_fwd_bwd_s"]
        param_mb = d["params"] * 16 / 2**20  # fp32 parameters, gradients and two AdamW moments
        out.append(
            f"* {s['label']} (K = {s['K']}, B = {s['B']}): DUO builds its dense input in {1e3 * d['input_s']:.0f} ms "
            f"and embeds it (forward + backward) in {1e3 * d['embed_fwd_bwd_s']:.0f} ms, "
            f"{100 * parts_d / d['seconds_per_step']:.0f}% of its {1e3 * d['seconds_per_step']:.0f} ms step; DUO++ "
            f"does both in {1e3 * parts_p:.1f} ms. Measured step difference "
            f"{1e3 * (d['seconds_per_step'] - p['seconds_per_step']):.0f} ms "
            f"(DUO++/DUO = {s['time_pp_over_duo']:.2f}); DUO++ takes "
            f"{p['seconds_per_step'] / u['seconds_per_step']:.2f}x the step of udlm (no curriculum at all). "
            "What is left is the same for all three: the transformer, "
            "the output layer (B L d K multiply-adds) and the loss over K. Memory: DUO++ saves "
            f"{d['increment_in_BLK_tensors'] - p['increment_in_BLK_tensors']:.1f} (B, L, K) tensors of the "
            f"{d['increment_in_BLK_tensors']:.1f} in DUO's increment: the dense soft input, which the embedding "
            "matmul keeps for its backward (the noise w it is made from is transient). The rest -- the "
            "output side (logits, log-softmax, log xbar_theta of the uniform-state bound and their gradients), the "
            f"transformer's activations, parameters + gradients + AdamW moments ({param_mb:.0f} MB) and torch's "
            "one-time allocations -- is the same with either curriculum.")
    return out


if __name__ == "__main__":
    main()
