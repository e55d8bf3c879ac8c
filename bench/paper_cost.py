"""Compute and disk needs of the paper configs, from each config and measured per-token costs.

    python bench/paper_cost.py [--configs config/paper/owt.yaml ...] [--gpu-check bench/results/gpu_check.json]
                               [--partition-hours 24] [--out bench/results/paper_cost]

For every run of a config: GPU-hours of training (max_steps x global batch x L tokens at the method's training
tokens/s per GPU), the wall-clock on its trainer.devices x num_nodes GPUs, and the number of jobs of a chain that
the partition's time limit cuts it into; distillation rounds (student step + teacher forwards); validation; every
planned sample file (network calls x tokens at the forward rate) with its gen-PPL and MAUVE passes under the
judge; and disk (packed data, checkpoints, samples). Written as JSON and as the Markdown table docs/paper_scale.md
quotes.

Per-token costs, in this order of preference:
  measured  `throughput` of bench/gpu_check.py in the JSON given (DiT-small, L = 1024, K = 50258, bf16 autocast,
            tokens/s per GPU of each method's training step and of the forward), with the GPU it ran on;
  reference without that measurement: MDLM's authors' figure, 1M steps of OWT in about 5 days on one 8 x A100 node
            (kuleshov-group/mdlm issue 19) = 152k training tokens/s per A100, for every method but D3PM (x 2: its
            step runs the network twice, for the loss and for the reconstruction term); the forward at 3 x the
            training rate (a forward is about a third of forward + backward).
Both: a distillation step = the student's training step + one teacher forward (DCD) or two (SDTT); the judge
(gpt2-large, 774M parameters) at the forward rate x 170M / 774M; a network call costs at least the batch-1
latency (measured; reference: the MDLM README's ddpm at T = 10k, 206.6 s per sample on an A5000 = 20.7 ms per call);
AR sampling with its KV cache as one forward per token (a lower bound: single-token calls are latency-bound); MDLM's cached sampler at its expected number of calls
(steps at which any of the batch's positions unmasks; exact for the log-linear schedule); every other sampler one
call per step plus the final one; the LM1B rates are the L = 1024 ones (attention is cheaper at L = 128: an upper
bound). Not estimated: zero-shot PPL (seven validation splits, 0.1-40M tokens each: minutes) and data
preparation (CPU).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import yaml

from dlm.config import expand_seeds, plan_jobs, resolve_run, resolve_variant
from dlm.diffusion.schedules import get_schedule
from dlm.models.dit import DiT, make_config
from dlm.sampling.common import time_grid
from dlm.utils import read_json, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["config/paper/owt.yaml", "config/paper/lm1b.yaml", "config/paper/lm1b_packed.yaml"]
# the corpora's sizes (tokens of the training / validation splits with the config's tokenizer and packing)
CORPORA = {
    # nanoGPT data/openwebtext/prepare.py: 9,035,582,489 GPT-2 tokens (with one EOT per document) in 8,013,769
    # documents (the HF card); the last 100k documents are the validation split
    "owt": {"train": 9.0356e9 * (1 - 100_000 / 8_013_769), "valid": 9.0356e9 * 100_000 / 8_013_769},
    # HF lm1b card: 30,301,028 train / 306,688 test sentences; pad mode stores 128 positions per sentence
    "lm1b": {"train": 30_301_028 * 128, "valid": 306_688 * 128},
    # packed: about 30 BERT tokens per detokenized sentence with its separator (an estimate: LM1B averages ~27 words)
    "lm1b_packed": {"train": 30_301_028 * 30, "valid": 306_688 * 30},
}
A100_REFERENCE = {"tokens_per_s": 1_000_000 * 512 * 1024 / (5 * 86400 * 8), "gpu": "A100 (reference: mdlm issue 19)"}
README_LATENCY = 206.6 / 10_001  # MDLM README: ddpm at T = 10k, L = 1024, batch 1, A5000: seconds per call
JUDGE_RATIO = 170e6 / 774e6  # gpt2-large vs DiT-small parameters
BYTES_PER_PARAM_CKPT = 16  # fp32 weights + EMA + AdamW's two moments


def rates(gpu_check: Path | None) -> dict:
    """Training tokens/s per GPU for each algo and the forward rate, measured (gpu_check.json `throughput`) or the
    reference (module docstring)."""
    tp = (read_json(gpu_check).get("throughput") or {}) if gpu_check and gpu_check.exists() else {}
    if tp.get("ok") and tp.get("size") == "small" and tp.get("train"):
        gpu = tp.get("device_name", "GPU")
        train = {k: v["tokens_per_s"] for k, v in tp["train"].items()}
        f = (tp.get("forward") or {}).get("mdlm", {})
        return {"source": f"measured on {gpu} (bench/gpu_check.py throughput)", "gpu": gpu, "train": train,
                "forward": f.get("tokens_per_s") or 3 * train["mdlm"],
                "latency": f.get("seconds_per_call_batch1") or README_LATENCY}
    base = A100_REFERENCE["tokens_per_s"]
    train = {a: base for a in ("ar", "mdlm", "sedd", "udlm", "duo", "duo_pp", "gidd")} | {"d3pm": base / 2}
    return {"source": "reference: MDLM OWT, 1M steps in ~5 days on 8 A100 (kuleshov-group/mdlm issue 19); "
            "not measured here", "gpu": A100_REFERENCE["gpu"], "train": train, "forward": 3 * base,
            "latency": README_LATENCY}


def n_params(K: int, L: int, size, causal: bool = False) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in DiT(make_config(K, L, size, causal=causal)).parameters())


def cached_mdlm_calls(steps: int, positions: int, eps: float = 1e-3) -> float:
    """Expected network calls of `mdlm_ancestral` for `positions` = batch x L masked positions: a call at each step
    where at least one position unmasks (each unmasks at step i with probability (a_s - a_t) / (1 - a_1)), plus
    the noise-removal call if one is left."""
    sched = get_schedule("loglinear", eps)
    a = sched.alpha(time_grid(steps))  # (steps + 1,)
    q = (a[1:] - a[:-1]) / (1 - a[0])  # (steps,)
    calls = (1 - (1 - q) ** positions).sum()
    left = (1 - a[-1]) / (1 - a[0])
    return float(calls + 1 - (1 - left) ** positions)


def sampler_calls(settings: dict, steps: int, L: int, batch: int) -> tuple[float, str]:
    kind = settings["sampler"]
    if kind in ("ar", "ar_nocache"):
        return 1.0, "one forward per token (KV cache; lower bound)"
    if kind == "mdlm_ancestral":
        return cached_mdlm_calls(steps, batch * L), "expected cached calls"
    calls = steps + 1
    if kind == "mdlm_semi_ar":
        calls *= 1 + int(settings.get("num_strides") or 1)
    if settings.get("self_correct"):
        calls += int(settings.get("sc_steps", 128))
    return float(calls), "steps + 1"


def config_cost(path: Path, R: dict, partition_h: float) -> dict:
    cfg = yaml.safe_load(path.read_text())
    expand_seeds(cfg)
    corpus = cfg["corpus"]["name"]
    K = 50258 if cfg["tokenizer"].get("name_or_path") == "gpt2" else 30522
    L = int(cfg["data"]["block_length"])
    sizes = CORPORA[corpus]
    fwd = R["forward"]
    runs, rows = cfg["runs"], []
    gb = lambda b: b / 1e9  # noqa: E731
    for name in runs:
        hp = resolve_run(cfg, name)
        tr = hp.get("trainer", {})
        algo, gpus = hp["algo"], int(tr.get("devices", 1)) * int(tr.get("num_nodes", 1))
        tokens_per_step = int(tr.get("global_batch_size") or tr.get("batch_size", 32)) * L
        params = n_params(K, L, hp.get("model", {}).get("size", "small"), causal=algo == "ar")
        if hp.get("distill"):
            rounds = int(hp["distill"]["rounds"])
            base = "udlm" if algo == "dcd" else "mdlm"
            teacher = 1 if algo == "dcd" else 2
            sec_per_token = 1 / R["train"][base] + teacher / fwd
            gpu_h = rounds * int(tr["max_steps"]) * tokens_per_step * sec_per_token / 3600
            disk = rounds * 2 * params * BYTES_PER_PARAM_CKPT
            stage = f"distill ({rounds} rounds)"
        else:
            steps = int(tr["max_steps"])
            cur = (hp.get("algo_args") or {}).get("curriculum")
            if algo == "duo" and cur:  # curriculum steps at the curriculum's cost, the rest at the plain loss's
                key = "duo_pp" if cur.get("input") == "topk" else "duo"
                n_cur = max(0, min(steps, int(cur.get("end", 0))) - int(cur.get("start", 0)) + 1)
                secs = n_cur / R["train"][key] + (steps - n_cur) / R["train"]["udlm"]
            else:
                secs = steps / R["train"][algo]
            gpu_h = secs * tokens_per_step / 3600
            disk = 2 * params * BYTES_PER_PARAM_CKPT  # last.ckpt (resume) + final.ckpt
            stage = "train"
        val_h = sizes["valid"] / fwd / 3600
        rows.append({"run": name, "algo": algo, "stage": stage, "gpus": gpus, "gpu_hours": gpu_h,
                     "wall_hours": gpu_h / gpus, "jobs": max(1, math.ceil(gpu_h / gpus / partition_h)),
                     "val_gpu_hours": val_h, "disk_gb": gb(disk), "params_m": params / 1e6})
    samples = []
    for (run, variant, steps, seed), size in plan_jobs(cfg).items():
        settings = resolve_variant(cfg, variant)
        n, batch = size["num_samples"], size["batch_size"]
        calls, how = sampler_calls(settings, steps, L, batch)
        if settings["sampler"] in ("ar", "ar_nocache"):
            secs = n * L / fwd
        else:  # per batch: each call costs its tokens at the forward rate, at least the batch-1 latency
            secs = math.ceil(n / batch) * calls * max(batch * L / fwd, R["latency"])
        judge = n * L / (fwd * JUDGE_RATIO)  # gen PPL; MAUVE featurises the same tokens with gpt2-large
        samples.append({"run": run, "sampler": variant, "steps": steps, "seed": seed, "num_samples": n, "batch": batch,
                        "calls": calls, "calls_rule": how, "gpu_hours": secs / 3600,
                        "judge_gpu_hours": 2 * judge / 3600, "disk_gb": gb(n * L * 10)})
    data_bytes = sum(sizes.values()) * (2 if K <= 65535 else 4) * (1.5 if cfg["data"]["packing"] == "pad" else 1)
    total = {"train_gpu_hours": sum(r["gpu_hours"] for r in rows if r["stage"] == "train"),
             "distill_gpu_hours": sum(r["gpu_hours"] for r in rows if r["stage"] != "train"),
             "val_gpu_hours": sum(r["val_gpu_hours"] for r in rows),
             "sample_gpu_hours": sum(s["gpu_hours"] for s in samples),
             "judge_gpu_hours": sum(s["judge_gpu_hours"] for s in samples),
             # GPU jobs: each run's chain, its val PPL and zero-shot jobs; per sample file sample, gen PPL, MAUVE
             "jobs": sum(r["jobs"] + 1 + bool((cfg.get("zero_shot") or {}).get("corpora")) for r in rows)
             + 3 * len(samples),
             "disk_gb": gb(data_bytes) + sum(r["disk_gb"] for r in rows) + sum(s["disk_gb"] for s in samples),
             "data_gb": gb(data_bytes)}
    total["gpu_hours"] = sum(v for k, v in total.items() if k.endswith("gpu_hours"))
    return {"config": str(path.relative_to(ROOT)), "corpus": corpus, "K": K, "L": L, "runs": rows, "samples": samples,
            "total": total}


def markdown(results: list[dict], R: dict, partition_h: float) -> str:
    out = ["## Compute and disk of the paper configs (bench/paper_cost.py)", "",
           f"Per-token costs: {R['source']}. Training {R['train']['mdlm'] / 1e3:.0f}k tokens/s per GPU (MDLM), "
           f"forward {R['forward'] / 1e3:.0f}k tokens/s, {1e3 * R['latency']:.1f} ms per call at batch 1; partition limit "
           f"{partition_h:g} h per job.", "",
           "| config | runs | training GPU-h | distillation GPU-h | sampling GPU-h | judge GPU-h (gen PPL, MAUVE) | "
           "validation GPU-h | total GPU-h | GPU jobs | disk (GB) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        t = r["total"]
        out.append(f"| `{r['config']}` | {len(r['runs'])} | {t['train_gpu_hours']:,.0f} | {t['distill_gpu_hours']:,.0f} | "
                   f"{t['sample_gpu_hours']:,.0f} | {t['judge_gpu_hours']:,.0f} | {t['val_gpu_hours']:,.1f} | "
                   f"{t['gpu_hours']:,.0f} | {t['jobs']:,} | {t['disk_gb']:,.0f} |")
    out += ["", "Per run (training or distillation; wall-clock on the run's own GPUs, jobs = the chain a "
            f"{partition_h:g} h limit cuts it into):", "", "| config | run | algo | GPUs | GPU-h | wall h | jobs | "
            "checkpoints (GB) |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        for x in r["runs"]:
            out.append(f"| {r['corpus']} | {x['run']} | {x['algo']} | {x['gpus']} | {x['gpu_hours']:,.0f} | "
                       f"{x['wall_hours']:,.0f} | {x['jobs']} | {x['disk_gb']:.1f} |")
    heavy = sorted((s | {"corpus": r["corpus"]} for r in results for s in r["samples"]),
                   key=lambda s: -s["gpu_hours"])[:8]
    out += ["", "The most expensive sample files:", "", "| config | run | sampler | T | samples x batch | calls | "
            "GPU-h |", "|---|---|---|---:|---:|---:|---:|"]
    for s in heavy:
        out.append(f"| {s['corpus']} | {s['run']} | {s['sampler']} | {s['steps']} | {s['num_samples']} x {s['batch']} | "
                   f"{s['calls']:,.0f} | {s['gpu_hours']:,.1f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="*", default=CONFIGS)
    ap.add_argument("--gpu-check", default=str(ROOT / "bench" / "results" / "gpu_check.json"))
    ap.add_argument("--partition-hours", type=float, default=24.0, help="the partition's time limit per job")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "paper_cost"),
                    help="output stem (.json, .md); '-' prints only")
    a = ap.parse_args()
    R = rates(Path(a.gpu_check))
    results = [config_cost(ROOT / c, R, a.partition_hours) for c in a.configs]
    md = markdown(results, R, a.partition_hours)
    if a.out != "-":
        write_json(Path(a.out + ".json"), {"rates": R, "partition_hours": a.partition_hours, "configs": results})
        write_text(Path(a.out + ".md"), md)
        print(f"wrote {a.out}.json and {a.out}.md", file=sys.stderr)
    print(md)


if __name__ == "__main__":
    main()
