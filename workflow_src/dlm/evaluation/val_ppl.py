"""Validation perplexity of a checkpoint, reported as the papers do: exp of the token-mean NELBO
(diffusion: an upper bound, one Monte-Carlo t per sequence, low-discrepancy across the batch;
AR: the exact NLL of the L-1 predicted tokens per block). EMA weights are used.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from dlm.algos import load_module
from dlm.data.dataset import PackedDataset, read_meta, unigram_counts
from dlm.utils import provenance, write_json


@torch.no_grad()
def evaluate_ppl(ckpt: str, data_dir: str, split: str, batch_size: int, seed: int, out: str, run: str = "",
                 max_batches: int | None = None, device: str = "auto", threads: int | None = None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    module = load_module(ckpt, map_location=device)
    loader = DataLoader(PackedDataset(data_dir, split), batch_size=batch_size, shuffle=False)
    nll, tokens = 0.0, 0
    for i, batch in enumerate(tqdm(loader, desc=f"val ppl {run}", mininterval=5)):
        if max_batches is not None and i >= max_batches:
            break
        batch = {k: v.to(device) for k, v in batch.items()}
        g = torch.Generator(device=device).manual_seed(seed * 100_003 + i)
        s, n = module.nelbo(batch, g)
        nll += float(s.double())
        tokens += int(n)
    if tokens == 0:
        raise ValueError(f"{data_dir}: split {split!r} has no tokens to evaluate")
    settings = {"ckpt": ckpt, "data_dir": data_dir, "split": split, "batch_size": batch_size, "seed": seed,
                "max_batches": max_batches}
    result = {"run": run, "algo": module.algo, "val_nll": nll / tokens, "val_ppl": math.exp(nll / tokens),
              "num_tokens": tokens, "params": module.num_params(), "train_steps": module.global_step,
              "model": module.hparams.model, "settings": settings, "provenance": provenance(settings)}
    write_json(out, result)
    return result


def unigram_ppl(data_dir: str, out: str, smoothing: float = 1.0) -> dict:
    """Baseline: a unigram model fit on the train split (add-`smoothing` counts over the non-[MASK]
    vocabulary), scored on every token of the valid split. Any useful LM must beat it clearly."""
    meta = read_meta(data_dir)
    counts = unigram_counts(data_dir, "train")
    mask_id = meta["special_ids"]["mask"]
    probs = counts + smoothing
    probs[mask_id] = 0.0
    probs /= probs.sum()
    valid = unigram_counts(data_dir, "valid")
    n = valid.sum()
    nll = float(-(valid[valid > 0] * np.log(probs[valid > 0])).sum() / n)
    settings = {"data_dir": data_dir, "smoothing": smoothing}
    result = {"run": "unigram", "algo": "unigram", "val_nll": nll, "val_ppl": math.exp(nll), "num_tokens": int(n),
              "params": int((probs > 0).sum()), "train_steps": 0, "settings": settings,
              "provenance": provenance(settings)}
    write_json(out, result)
    return result
