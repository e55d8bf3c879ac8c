"""Validation perplexity of a checkpoint, reported as the papers do: exp of the token-mean NELBO
(diffusion: an upper bound, one Monte-Carlo t per sequence, low-discrepancy across the batch;
AR: the exact NLL of the L-1 predicted tokens per block). EMA weights are used. Every draw is
seeded, several Monte-Carlo passes can be averaged, and the bound's standard error is reported.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from dlm.algos import load_module
from dlm.config import ALGO_ARGS
from dlm.data.dataset import PackedDataset, read_meta, unigram_counts, verify_packed
from dlm.utils import provenance, write_json


def bound_standard_error(pass_nll: np.ndarray, seq_nll: np.ndarray, seq_tokens: np.ndarray) -> tuple[float, str]:
    """Monte-Carlo standard error of the token-mean bound (nats/token) and how it was estimated.

    With several passes (each with its own seeded t and noise over the whole split), the passes are
    i.i.d. estimates of the same bound: SE = std(pass means, ddof=1) / sqrt(passes). With one pass,
    the ratio estimator sum(s_i) / sum(n_i) over sequences i gets the delta-method SE
    sqrt(sum (s_i - r n_i)^2 / (N (N - 1))) / mean(n); this also counts the spread between
    sequences and ignores the stratification of t, so it overstates the Monte-Carlo error (an
    upper estimate). AR's exact NLL has no Monte-Carlo error; its SE is reported the same way.
    seq_nll, seq_tokens: (passes, N) per-sequence sums.
    """
    passes = len(pass_nll)
    if passes >= 2:
        return float(np.std(pass_nll, ddof=1) / math.sqrt(passes)), f"std over {passes} passes / sqrt({passes})"
    s, n = seq_nll[0], seq_tokens[0]
    keep = n > 0
    s, n = s[keep], n[keep]
    if len(n) < 2:
        return float("nan"), "undefined (fewer than 2 sequences)"
    r = s.sum() / n.sum()
    se = math.sqrt(float(((s - r * n) ** 2).sum()) / (len(n) * (len(n) - 1))) / float(n.mean())
    return se, "delta method over sequences (one pass; an upper estimate)"


def check_data_fits(module, data: PackedDataset, ckpt: str) -> None:
    """ValueError (naming both files and both numbers) unless the packed data has the checkpoint's
    vocabulary size K and block length L: another tokenizer's ids, or longer / shorter blocks than the
    model was trained on, would give a meaningless perplexity (or a shape error deep in the network)."""
    hp = module.hparams
    if data.vocab_size != hp.vocab_size:
        raise ValueError(f"packed data {data.data_dir} has vocab_size {data.vocab_size} but the checkpoint {ckpt} "
                         f"has vocab_size {hp.vocab_size}; expected data packed with the model's tokenizer "
                         f"({hp.tokenizer_dir})")
    if data.block_length != hp.block_length:
        raise ValueError(f"packed data {data.data_dir} has block_length {data.block_length} but the checkpoint "
                         f"{ckpt} takes sequences of length {hp.block_length}; expected data packed with "
                         f"block_length {hp.block_length}")


def bound_generator(seed: int, p: int, i: int, device: str | torch.device = "cpu") -> torch.Generator:
    """The generator of the draws (t and forward noise) of batch i in Monte-Carlo pass p (`monte_carlo_bound`)."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + p) * 100_003 + i)


@torch.no_grad()
def monte_carlo_bound(module, data: PackedDataset, batch_size: int, seed: int, passes: int = 1,
                      max_batches: int | None = None, device: str = "cpu", desc: str = "ppl",
                      progress: bool = True) -> dict:
    """The token-mean bound (nats/token) of `module` on the blocks of `data`, the one code path of the
    validation, zero-shot and downstream (dlm.evaluation.downstream) likelihoods: `passes` Monte-Carlo
    passes over the first `max_batches` batches (None: all) in order, the draws (t and forward noise) of
    batch i in pass p from a generator seeded with (seed, p, i). `data`: a PackedDataset, or any dataset of
    {"input_ids", "attention_mask"} rows of one length. Returns {"pass_nll" (passes,) array, "nll" (their
    mean), "se", "se_method" (`bound_standard_error`), "num_tokens" (per pass), "seq_nll" (N,) each
    sequence's summed NLL averaged over the passes, "seq_tokens" (N,) its counted tokens}; ValueError if there
    is no token to evaluate. The per-sequence arrays are the units of the claims table's paired intervals
    (`dlm.report.claims`): every run scored on the same data and seeds sees the same sequences and the same
    seeded draws. `progress`: a progress bar per pass (off for many small calls)."""
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    seq_nll, seq_tokens = [], []
    for p in range(passes):
        nll_p, tok_p = [], []
        for i, batch in enumerate(tqdm(loader, desc=f"{desc} pass {p + 1}/{passes}", mininterval=5,
                                       disable=not progress)):
            if max_batches is not None and i >= max_batches:
                break
            batch = {k: v.to(device) for k, v in batch.items()}
            s, n = module.nelbo_terms(batch, bound_generator(seed, p, i, device))  # (B,), (B,)
            nll_p.append(s.double().cpu())
            tok_p.append(n.double().cpu())
        seq_nll.append(torch.cat(nll_p).numpy() if nll_p else np.zeros(0))
        seq_tokens.append(torch.cat(tok_p).numpy() if tok_p else np.zeros(0))
    seq_nll, seq_tokens = np.stack(seq_nll), np.stack(seq_tokens)  # (passes, N)
    tokens = int(seq_tokens[0].sum())
    if tokens == 0:
        where = f"{data.data_dir}: split {data.split!r}" if hasattr(data, "data_dir") else desc
        raise ValueError(f"{where} has no tokens to evaluate")
    pass_nll = seq_nll.sum(1) / seq_tokens.sum(1)  # (passes,)
    se, se_method = bound_standard_error(pass_nll, seq_nll, seq_tokens)
    return {"pass_nll": pass_nll, "nll": float(pass_nll.mean()), "se": se, "se_method": se_method,
            "num_tokens": tokens, "seq_nll": seq_nll.mean(0), "seq_tokens": seq_tokens[0]}


@torch.no_grad()
def evaluate_ppl(ckpt: str, data_dir: str, split: str, batch_size: int, seed: int, out: str, run: str = "",
                 max_batches: int | None = None, device: str = "auto", threads: int | None = None,
                 passes: int = 1, group: str | None = None, train_seed: int | None = None) -> dict:
    """exp(token-mean bound) over `passes` Monte-Carlo passes of the split, with its standard error.

    `group` (the config entry a training-seed run came from; default `run`) and `train_seed` are recorded,
    so that tables can average over training seeds from the JSONs alone.

    Every draw (t and forward noise) of batch i in pass p comes from a generator seeded with
    (seed, p, i), so the same checkpoint, data and settings give the identical number on every run.
    """
    if threads:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if passes < 1:
        raise ValueError(f"val_passes must be >= 1, got {passes}")
    module = load_module(ckpt, map_location=device)
    verify_packed(data_dir, (split,))
    data = PackedDataset(data_dir, split)
    check_data_fits(module, data, ckpt)
    bound = monte_carlo_bound(module, data, batch_size, seed, passes, max_batches, device, desc=f"val ppl {run}")
    pass_nll, nll, se, se_method, tokens = (bound[k] for k in ("pass_nll", "nll", "se", "se_method", "num_tokens"))
    settings = {"ckpt": ckpt, "data_dir": data_dir, "split": split, "batch_size": batch_size, "seed": seed,
                "max_batches": max_batches, "passes": passes}
    result = {"run": run, "group": group or run, "train_seed": train_seed, "algo": module.algo, "val_nll": nll, "val_nll_se": se, "val_ppl": math.exp(nll),
              "val_ppl_se": math.exp(nll) * se, "se_method": se_method, "pass_nll": pass_nll.tolist(),
              "seq_nll": [round(float(v), 6) for v in bound["seq_nll"]],
              "seq_tokens": [int(v) for v in bound["seq_tokens"]],
              "num_tokens": tokens, "params": module.num_params(), "train_steps": module.global_step,
              "model": module.hparams.model, "time_conditioning": module.hparams.time_conditioning,
              "algo_args": {k: module.hparams[k] for k in ALGO_ARGS.get(module.algo, ()) if k in module.hparams},
              "settings": settings, "provenance": provenance(settings)}
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
    result = {"run": "unigram", "algo": "unigram", "val_nll": nll, "val_nll_se": 0.0, "val_ppl": math.exp(nll),
              "val_ppl_se": 0.0, "se_method": "exact (no Monte-Carlo draw)", "num_tokens": int(n),
              "params": int((probs > 0).sum()), "train_steps": 0, "settings": settings,
              "provenance": provenance(settings)}
    write_json(out, result)
    return result
