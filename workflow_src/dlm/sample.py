"""Draw samples from a checkpoint with a named sampler and write them as JSONL.

Each line: {"tokens", "text", "run", "algo", "sampler", "steps", "seed", "nucleus_p", "nfe",
"seconds"} where seconds is the wall-clock per sample (batch time / batch size) and nfe the network
calls of the batch that produced the sample.
"""

from __future__ import annotations

import json
import logging
import time

import torch
from tqdm import tqdm

from dlm.algos import load_module
from dlm.data.tokenizer import load_tokenizer
from dlm.sampling import get_sampler
from dlm.utils import atomic_path

log = logging.getLogger("dlm.sample")


def generate(ckpt: str, sampler: str, steps: int, seed: int, num_samples: int, batch_size: int, out: str,
             nucleus_p: float = 1.0, run: str = "", device: str = "auto", threads: int | None = None) -> None:
    if threads:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    module = load_module(ckpt, map_location=device)
    fn, kwargs = get_sampler(sampler, module.algo)
    tok = load_tokenizer(module.tokenizer_dir)
    g = torch.Generator(device=device).manual_seed(seed)
    records = []
    with tqdm(total=num_samples, desc=f"{run or ckpt} {sampler} T={steps}", file=None, mininterval=5) as bar:
        while len(records) < num_samples:
            n = min(batch_size, num_samples - len(records))
            t0 = time.perf_counter()
            res = fn(module, n=n, steps=steps, generator=g, nucleus_p=nucleus_p, **kwargs)
            seconds = (time.perf_counter() - t0) / n
            for row in res["tokens"].cpu().tolist():
                records.append({"tokens": row, "text": tok.decode(row, skip_special_tokens=False), "run": run,
                                "algo": module.algo, "sampler": sampler, "steps": steps, "seed": seed,
                                "nucleus_p": nucleus_p, "nfe": res["nfe"], "seconds": seconds})
            bar.update(n)
    with atomic_path(out) as tmp:
        with open(tmp, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    log.info("wrote %d samples to %s (%.3f s/sample)", len(records), out,
             sum(r["seconds"] for r in records) / len(records))


def sample_summary(path: str) -> dict:
    """The settings shared by a samples JSONL (run, algo, sampler, steps, seed, nucleus_p) plus the mean
    network calls and seconds per sample; used to label gen-PPL results."""
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        raise ValueError(f"{path}: no samples")
    first = rows[0]
    out = {k: first.get(k) for k in ("run", "algo", "sampler", "steps", "seed", "nucleus_p")}
    out["nfe"] = sum(r.get("nfe", 0) for r in rows) / len(rows)
    out["seconds_per_sample"] = sum(r.get("seconds", 0.0) for r in rows) / len(rows)
    return out
