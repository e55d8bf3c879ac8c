"""Training throughput (tokens/s) and peak memory per method at the embedded default's size.

Each method runs in a fresh subprocess (so peak RSS is its own): the config's model size, vocabulary
and block length, the config's batch size, fp32 on CPU, forward + backward + AdamW. The baseline,
measured in the same run, is the AR model: every method's throughput is also reported as a ratio to it.
Each method also runs once without `dlm.utils.tune_malloc` (glibc's default mmap threshold), to record
what the allocator tuning that every pipeline job applies is worth.

Writes bench/results/train.json and bench/results/train.md. Run: python bench/bench_train.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from dlm.utils import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WARMUP, STEPS = 3, 10

CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(2)
if sys.argv[8] == "tuned":
    from dlm.utils import tune_malloc
    tune_malloc()
from dlm.algos import get_method
algo, size, K, L, B, warmup, steps = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:8])
m = get_method(algo)(vocab_size=K, block_length=L, special_ids={"bos": 0, "eos": 0, "pad": None, "mask": 1},
                     tokenizer_dir="-", model={"size": size, "dropout": 0.0}, time_conditioning=algo == "udlm")
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
g = torch.Generator().manual_seed(0)
def step():
    x = torch.randint(2, K, (B, L), generator=g)
    s, n = m.nelbo({"input_ids": x, "attention_mask": torch.ones_like(x)})
    (s / n).backward(); opt.step(); opt.zero_grad(set_to_none=True)
for _ in range(warmup): step()
t0 = time.perf_counter()
for _ in range(steps): step()
dt = time.perf_counter() - t0
print(json.dumps({"algo": algo, "params": m.backbone.num_params(), "seconds_per_step": dt / steps,
                  "tokens_per_s": steps * B * L / dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    size = cfg["train_defaults"]["model"]["size"]
    K, L = cfg["tokenizer"]["vocab_size"], cfg["data"]["block_length"]
    B = cfg["train_defaults"]["trainer"]["batch_size"]
    rows = []
    def measure(algo, malloc):
        out = subprocess.run([sys.executable, "-c", CHILD, algo, size, str(K), str(L), str(B), str(WARMUP), str(STEPS),
                              malloc], check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    for algo in ("ar", "mdlm", "udlm"):
        row = measure(algo, "tuned")
        row["tuned_vs_default_malloc"] = row["tokens_per_s"] / measure(algo, "default")["tokens_per_s"]
        rows.append(row)
    base = rows[0]["tokens_per_s"]
    for r in rows:
        r["throughput_vs_ar"] = r["tokens_per_s"] / base
    write_json(RESULTS / "train.json", {"size": size, "vocab_size": K, "block_length": L, "batch_size": B, "rows": rows})
    lines = [f"## Training throughput (model `{size}`, K = {K}, L = {L}, batch {B}, fp32, 2 threads)", "",
             "| method | parameters | s/step | tokens/s | vs AR | vs default malloc | peak RSS (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['algo']} | {r['params']:,} | {r['seconds_per_step']:.3f} | {r['tokens_per_s']:,.0f} | "
              f"{r['throughput_vs_ar']:.2f}x | {r['tuned_vs_default_malloc']:.2f}x | {r['peak_rss_mb']:.0f} |"
              for r in rows]
    write_text(RESULTS / "train.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
