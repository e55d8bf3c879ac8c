"""Sampling throughput (generated tokens/s) per sampler at the embedded default's size.

Untrained modules of the config's size (speed does not depend on the weights): AR with and without
the KV cache (the cache-free sampler, as in the original repos, is the baseline measured in the same
run), MDLM ancestral, DUO ancestral and greedy-tail, at 32 steps for the diffusion samplers.

Writes bench/results/sample.json and bench/results/sample.md. Run: python bench/bench_sample.py
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import yaml

from dlm.algos import get_method
from dlm.sampling import get_sampler
from dlm.utils import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
N, STEPS, REPEATS = 16, 32, 2


def module(algo, size, K, L):
    m = get_method(algo)(vocab_size=K, block_length=L, special_ids={"bos": 0, "eos": 0, "pad": None, "mask": 1},
                         tokenizer_dir="-", model={"size": size, "dropout": 0.0}, time_conditioning=algo == "udlm")
    with torch.no_grad():  # leave the zero-initialised (uniform) output: give the net some signal
        for p in m.backbone.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return m.eval()


def main() -> None:
    torch.set_num_threads(2)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    size, K, L = cfg["train_defaults"]["model"]["size"], cfg["tokenizer"]["vocab_size"], cfg["data"]["block_length"]
    rows = []
    for algo, sampler in [("ar", "ar_nocache"), ("ar", "ar"), ("mdlm", "mdlm_ancestral"), ("udlm", "duo_ancestral"),
                          ("udlm", "duo_greedy_tail")]:
        m = module(algo, size, K, L)
        fn, kw = get_sampler(sampler, algo)
        best = float("inf")
        for r in range(REPEATS):
            t0 = time.perf_counter()
            out = fn(m, n=N, steps=STEPS, generator=torch.Generator().manual_seed(r), **kw)
            best = min(best, time.perf_counter() - t0)
        rows.append({"sampler": sampler, "steps": out["nfe"] if algo == "ar" else STEPS, "nfe": out["nfe"],
                     "seconds": best, "tokens_per_s": N * L / best})
    base = rows[0]["tokens_per_s"]
    for r in rows:
        r["vs_ar_nocache"] = r["tokens_per_s"] / base
    write_json(RESULTS / "sample.json", {"size": size, "vocab_size": K, "block_length": L, "n": N, "rows": rows})
    lines = [f"## Sampling throughput (model `{size}`, K = {K}, L = {L}, {N} samples per batch, fp32, 2 threads)", "",
             "| sampler | steps | network calls | seconds / batch | tokens/s | vs AR without cache |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {r['seconds']:.2f} | {r['tokens_per_s']:,.0f} | "
              f"{r['vs_ar_nocache']:.2f}x |" for r in rows]
    write_text(RESULTS / "sample.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
