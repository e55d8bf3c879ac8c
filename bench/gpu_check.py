"""The GPU paths, checked on a real GPU: bf16 training of every method family, evaluation, sampling and
generative PPL on CUDA, and how far a GPU rerun moves the numbers (determinism).

    python bench/gpu_check.py --data results/data/kjv/packed --integral resources/integral/<...>.npz \
        --out bench/results/gpu_check.json [--steps 400] [--device cuda]
    python bench/gpu_check.py --throughput-only --out bench/results/gpu_check.json   # only check 6, no data
    python bench/gpu_check.py --throughput-only --dry-run --device cpu --out /tmp/t.json   # the CPU dry path

It uses the embedded default's data and runs (config/config.yaml), through the same functions the rules
call (`dlm.train.train`, `evaluate_ppl`, `generate`, `run_gen_ppl`), with shorter training. Checks:

1. every method family trains with `precision: auto` (bf16-mixed on a GPU) and gives a finite val PPL;
2. bf16-mixed vs 32-true for the same run and seed: the val PPLs (the bf16 path must not move the bound
   beyond run-to-run noise);
3. determinism: the same bf16 run trained twice from scratch on the GPU (weights and val PPL);
   the same checkpoint evaluated twice (val PPL must repeat exactly: seeded draws);
   the same sampler and seed run twice (tokens must repeat);
4. SDPA attention in bf16 vs float32 on the same weights (max logit difference);
5. sampling and generative PPL on CUDA for a sampler of each family, with tokens/s;
6. the paper scale: DiT-small at L = 1024, K = 50258 (GPT-2), bf16 autocast - training tokens/s per GPU (loss,
   backward, AdamW step) of each method's objective at per-GPU batch 16, and the forward alone (what sampling and
   evaluation cost per token; and its latency at batch 1), with torch's SDPA and with the flash-attn package where it is installed; the
   compute estimates of bench/paper_cost.py read these (`throughput` in the JSON). Random tokens, untrained
   weights: the cost of a step does not depend on them. `--dry-run` runs it on a nano model with L = 64 (a
   check that the code path works, e.g. on a CPU; no number from it is meaningful).

Each check records its error instead of stopping the script, so one failure does not hide the rest.
Nothing is asserted: the JSON (and the Markdown beside it) records the numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import shutil
import time
import traceback
from pathlib import Path

import torch
import yaml

from dlm.checkpoints.safe_load import load_checkpoint
from dlm.config import resolve_run
from dlm.evaluation.gen_ppl import run_gen_ppl
from dlm.evaluation.val_ppl import evaluate_ppl
from dlm.sample import generate
from dlm.train import train, with_integral

ROOT = Path(__file__).resolve().parents[1]
RUNS = ["ar", "mdlm", "sedd", "d3pm", "udlm", "duo", "duo_pp", "gidd_pu01"]
SAMPLERS = [("ar", "ar", 127), ("mdlm", "mdlm_ancestral", 64), ("mdlm", "mdlm_ddpm", 64), ("mdlm", "remdm_loop", 64),
            ("sedd", "sedd_analytic", 64), ("d3pm", "d3pm_ancestral", 64), ("duo", "duo_ancestral", 64),
            ("duo", "duo_greedy_tail", 64), ("duo_pp", "psi", 64), ("gidd_pu01", "gidd_ancestral", 64)]


def hp_for(run: str, steps: int, precision: str, integral: str, seed: int = 1) -> dict:
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    hp = resolve_run(config, run)
    curriculum = (hp.get("algo_args") or {}).get("curriculum")
    if curriculum is not None:  # the curriculum takes the first half of the steps, as in the default
        hp["algo_args"] = {**hp["algo_args"], "curriculum": {**curriculum, "end": steps // 2}}
        if curriculum.get("transform", "cache") == "cache":
            hp = with_integral(hp, integral)
    hp["trainer"] = {**hp.get("trainer", {}), "max_steps": steps, "val_every": steps, "ckpt_every": steps,
                     "log_every": max(1, steps // 4), "precision": precision, "seed": seed, "batch_size": 64}
    return hp


THROUGHPUT_ALGOS = ["ar", "mdlm", "sedd", "d3pm", "udlm", "duo", "duo_pp", "gidd"]
# the objectives timed at paper scale; duo times its curriculum (softmax input) with the poly9 transform, which costs
# what the cache lookup does per token but needs no integral file; duo_pp is DUO++'s top-2 sparse input
THROUGHPUT_ARGS = {"d3pm": {"T": 1000}, "gidd": {"p_uniform": 0.1},
                   "duo": {"curriculum": {"input": "softmax", "transform": "poly9", "start": 0, "end": 10 ** 9}},
                   "duo_pp": {"curriculum": {"input": "topk", "transform": "poly9", "top_k": 2, "start": 0,
                                             "end": 10 ** 9}}}


def throughput(device: str, size: str = "small", L: int = 1024, K: int = 50258, batch: int = 16, steps: int = 10,
               algos=THROUGHPUT_ALGOS, warmup: int = 3) -> dict:
    """Tokens/s per device of one training step (loss + backward + AdamW) of each method at `size`, L, K, and of
    the forward alone, under bf16 autocast on CUDA (fp32 elsewhere); SDPA attention, and flash-attn where the
    package is installed (mdlm, for the comparison). See check 6 of the module docstring."""
    import dlm.models.dit as dit
    from dlm.algos import get_method

    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    special = {"bos": 0, "eos": 0, "pad": None, "mask": K - 1}
    backends = ["sdpa"] + (["flash_attn"] if dit.flash_attn_func is not None and cuda else [])
    flash = dit.flash_attn_func
    out: dict = {"size": size, "L": L, "K": K, "batch": batch, "steps": steps, "device": device,
                 "dtype": "bf16-autocast" if cuda else "float32", "backends": backends, "train": {}, "forward": {}}
    g = torch.Generator(device).manual_seed(0)
    x = torch.randint(0, K - 1, (batch, L), device=device, generator=g)  # (B, L) never [MASK]
    batch_ = {"input_ids": x, "attention_mask": torch.ones_like(x)}
    for algo in algos:
        name = "duo" if algo == "duo_pp" else algo
        cls = get_method(name)
        module = cls(vocab_size=K, block_length=L, special_ids=special, tokenizer_dir="-",
                     model={"size": size, "dropout": 0.1}, time_conditioning=cls.default_time_conditioning,
                     **THROUGHPUT_ARGS.get(algo, {})).to(device)
        opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
        for backend in backends if algo == "mdlm" else ["sdpa"]:
            dit.flash_attn_func = flash if backend == "flash_attn" else None
            key = algo if backend == "sdpa" else f"{algo}_{backend}"
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            for i in range(warmup + steps):
                if i == warmup:
                    sync()
                    t0 = time.perf_counter()
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                    total, count = module.loss(batch_, step=0)
                (total / count).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            sync()
            secs = (time.perf_counter() - t0) / steps
            out["train"][key] = {"tokens_per_s": batch * L / secs, "seconds_per_step": secs,
                                 "peak_memory_gb": torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None}
            if algo in ("mdlm", "ar"):
                module.eval()
                t = torch.full((batch,), 0.5, device=device)
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                    for i in range(warmup + steps):
                        if i == warmup:
                            sync()
                            t0 = time.perf_counter()
                        if module.causal:
                            module.backbone(x)
                        else:
                            module.backbone(x, module.sigma_input(t))
                sync()
                secs = (time.perf_counter() - t0) / steps
                out["forward"][key] = {"tokens_per_s": batch * L / secs, "seconds_per_call": secs}
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                    for i in range(warmup + steps):  # one sequence per call: the latency of batch-1 sampling
                        if i == warmup:
                            sync()
                            t0 = time.perf_counter()
                        if module.causal:
                            module.backbone(x[:1])
                        else:
                            module.backbone(x[:1], module.sigma_input(t[:1]))
                sync()
                out["forward"][key]["seconds_per_call_batch1"] = (time.perf_counter() - t0) / steps
                module.train()
        dit.flash_attn_func = flash
        del module, opt
        if cuda:
            torch.cuda.empty_cache()
    return out


def dit_flash_version() -> str | None:
    try:
        import flash_attn
        return flash_attn.__version__
    except ImportError:
        return None


def checked(results: dict, name: str, fn, out: str):
    t0 = time.perf_counter()
    try:
        results[name] = {"ok": True, **fn(), "seconds": round(time.perf_counter() - t0, 2)}
    except Exception as e:  # record and go on: one failed check must not hide the others
        results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-3000:]}
    logging.info("%s: %s", name, json.dumps({k: v for k, v in results[name].items() if k != "trace"})[:600])
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2) + "\n")  # after every check: a killed run keeps its results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="packed data of the embedded default (checks 1-5)")
    p.add_argument("--integral", help="its DUO integral cache (checks 1-5)")
    p.add_argument("--out", required=True)
    p.add_argument("--throughput-only", action="store_true", help="only check 6 (paper-scale tokens/s; no data needed)")
    p.add_argument("--no-throughput", dest="throughput", action="store_false", help="skip check 6")
    p.add_argument("--dry-run", action="store_true", help="check 6 on a nano model, L = 64, 2 steps (code path only)")
    p.add_argument("--work", default="/tmp/gpu_check")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--device", default="cuda")
    p.add_argument("--runs", nargs="*", default=RUNS)
    p.add_argument("--precision-seeds", nargs="*", type=int, default=[1, 2, 3],
                   help="training seeds of the bf16-vs-fp32 comparison (mdlm and duo)")
    p.add_argument("--no-sample", dest="sample", action="store_false", help="skip the sampling checks")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    res: dict = {"torch": torch.__version__, "python": platform.python_version(), "steps": a.steps,
                 "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                 "bf16_supported": bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())}
    res["flash_attn"] = dit_flash_version()
    precision = "auto" if a.device == "cuda" else "32-true"
    if a.throughput:  # 6. paper scale (first: it needs no data and is what the compute estimates read)
        args = dict(size="nano", L=64, K=512, batch=2, steps=2, warmup=1) if a.dry_run else {}
        if a.throughput_only and Path(a.out).exists():  # keep checks 1-5 of an earlier run (and its machine) as they are
            res = json.loads(Path(a.out).read_text())
        machine = {"device_name": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "cpu",
                   "torch": torch.__version__, "flash_attn": dit_flash_version()}
        checked(res, "throughput", lambda: {**machine, **throughput(a.device, **args)}, a.out)
    if a.throughput_only:
        logging.info("wrote %s", a.out)
        return
    if not (a.data and a.integral):
        p.error("--data and --integral are needed for checks 1-5 (or pass --throughput-only)")

    def fit(run: str, prec: str, tag: str, seed: int = 1) -> dict:
        ckpt = work / tag / "final.ckpt"
        t0 = time.perf_counter()
        train(a.data, str(ckpt), str(work / tag), hp_for(run, a.steps, prec, a.integral, seed))
        secs = time.perf_counter() - t0
        val = evaluate_ppl(str(ckpt), a.data, "valid", 64, 0, str(work / tag / "val.json"), run=tag,
                           device=a.device, passes=2)
        return {"ckpt": str(ckpt), "train_seconds": round(secs, 2), "steps_per_s": round(a.steps / secs, 2),
                "val_ppl": val["val_ppl"], "val_ppl_se": val["val_ppl_se"], "finite": math.isfinite(val["val_ppl"])}

    # 1. every method family, precision auto (bf16-mixed on the GPU)
    for run in a.runs:
        checked(res, f"train_{run}", lambda run=run: fit(run, precision, run), a.out)

    # 2. bf16-mixed vs 32-true over training seeds: is the precision gap larger than the seed spread?
    for run in ("mdlm", "duo"):
        for seed in a.precision_seeds:
            if seed != 1:
                checked(res, f"train_{run}_s{seed}", lambda run=run, seed=seed: fit(run, precision, f"{run}_s{seed}",
                                                                                    seed), a.out)
            checked(res, f"fp32_{run}_s{seed}", lambda run=run, seed=seed: fit(run, "32-true", f"{run}_fp32_s{seed}",
                                                                                seed), a.out)

    # 3. determinism: retrain, re-evaluate, resample
    def retrain() -> dict:
        again = fit("mdlm", precision, "mdlm_again")
        w1 = load_checkpoint(res["train_mdlm"]["ckpt"])["state_dict"]
        w2 = load_checkpoint(again["ckpt"])["state_dict"]
        diff = max(float((w1[k].float() - w2[k].float()).abs().max()) for k in w1 if w1[k].is_floating_point())
        return {"val_ppl_first": res["train_mdlm"]["val_ppl"], "val_ppl_again": again["val_ppl"],
                "max_abs_weight_diff": diff}
    checked(res, "determinism_train_mdlm", retrain, a.out)

    def reevaluate() -> dict:
        ckpt = res["train_mdlm"]["ckpt"]
        v = [evaluate_ppl(ckpt, a.data, "valid", 64, 0, str(work / f"reval{i}.json"), device=a.device,
                          passes=2)["val_ppl"] for i in range(2)]
        return {"val_ppl": v, "identical": v[0] == v[1]}
    checked(res, "determinism_eval_mdlm", reevaluate, a.out)

    # 4. the backbone in bf16 autocast (SDPA attention) vs float32 on the same weights and input
    def attention() -> dict:
        from dlm.evaluation.val_ppl import load_module
        module = load_module(res["train_mdlm"]["ckpt"], map_location=a.device)
        g = torch.Generator(a.device).manual_seed(0)
        x = torch.randint(2, module.hparams.vocab_size, (8, 128), device=a.device, generator=g)  # (B, L)
        x = torch.where(torch.rand(x.shape, device=a.device, generator=g) < 0.5, 1, x)  # half [MASK] (id 1)
        sigma = module.sigma_input(torch.full((8,), 0.5, device=a.device))
        with torch.no_grad():
            ref = torch.log_softmax(module.backbone(x, sigma).float(), -1)  # (B, L, K)
            with torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.device == "cuda"):
                low = module.backbone(x, sigma)  # (B, L, K)
            low_dtype = str(low.dtype)
            low = torch.log_softmax(low.float(), -1)
        d = (ref - low).abs()
        agree = (ref.argmax(-1) == low.argmax(-1)).float().mean()
        return {"dtype_under_autocast": low_dtype,
                "max_abs_log_prob_diff": float(d.max()), "mean_abs_log_prob_diff": float(d.mean()),
                "argmax_agreement": float(agree)}
    checked(res, "bf16_vs_fp32_backbone_mdlm", attention, a.out)

    # 5. sampling and generative PPL on the device; the same sampler and seed twice for determinism
    judge = res.get("train_ar", {}).get("ckpt")
    for run, sampler, steps in SAMPLERS if a.sample else []:
        if not res.get(f"train_{run}", {}).get("ok"):
            continue

        def sample(run=run, sampler=sampler, steps=steps) -> dict:
            outs = []
            for i in range(2):
                out = work / f"{run}_{sampler}_{i}.jsonl"
                generate(res[f"train_{run}"]["ckpt"], sampler, steps, 0, 32, 32, str(out), device=a.device,
                         run=run)
                outs.append([json.loads(x) for x in out.read_text().splitlines()])
            g = run_gen_ppl(work / f"{run}_{sampler}_0.jsonl", judge, None, 32,
                            work / f"{run}_{sampler}_gen.json", device=a.device) if judge else {}
            return {"steps": steps, "tokens_per_s": outs[1][0]["tokens_per_s"], "nfe": outs[1][0]["nfe"],
                    "same_tokens_twice": [r["tokens"] for r in outs[0]] == [r["tokens"] for r in outs[1]],
                    "gen_ppl": g.get("gen_ppl"), "entropy": g.get("entropy")}
        checked(res, f"sample_{run}_{sampler}", sample, a.out)

    logging.info("wrote %s", a.out)


if __name__ == "__main__":
    main()
