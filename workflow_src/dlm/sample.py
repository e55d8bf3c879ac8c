"""Draw samples from a checkpoint with a sampler variant and write them as JSONL (the `sample` rule).

Each line records everything that produced it: {"tokens", "text", "run", "algo", "sampler" (the variant
name), "sampler_kind" (the registered sampler), "settings" (every setting, defaults included), "steps",
"seed", "condition", "prompt_tokens" (fixed positions), "nfe" (network calls per sample), "seconds"
(wall-clock per sample), "tokens_per_s", "algo_args" (the model's method settings, e.g. GIDD's p_u)}, plus "tokens_before"/"text_before" and the self-correction
statistics when the variant self-corrects.
"""

from __future__ import annotations

import json
import logging

import torch

from dlm.api import Model
from dlm.config import ALGO_ARGS, check_applies, request_sampler
from dlm.sampling import resolve_settings
from dlm.sampling.common import Conditioning
from dlm.sampling_rules import CONDITIONS, check_sample_args
from dlm.utils import atomic_path

log = logging.getLogger("dlm.sample")


def heldout_conditioning(data_dir: str, n: int, length: int, condition: str, prefix_tokens: int,
                         suffix_tokens: int, split: str = "valid") -> Conditioning:
    """Prompts cut from held-out blocks (rows 0..n-1 of the packed split, cycled): the first `prefix_tokens`
    (prefix), the last `suffix_tokens` (suffix) or both (infill: the middle is generated)."""
    from dlm.data.dataset import PackedDataset

    ds = PackedDataset(data_dir, split)
    if len(ds) == 0:
        raise ValueError(f"{data_dir}: split {split!r} is empty, no held-out prompts")
    rows = [ds[i % len(ds)]["input_ids"][:length] for i in range(n)]
    values = torch.stack(rows)  # (n, L)
    if values.shape[1] != length:
        raise ValueError(f"{data_dir}: blocks have {values.shape[1]} tokens, the model takes {length}")
    fixed = torch.zeros_like(values, dtype=torch.bool)
    if condition in ("prefix", "infill"):
        fixed[:, :prefix_tokens] = True
    if condition in ("suffix", "infill"):
        fixed[:, length - suffix_tokens:] = True
    if bool(fixed.all(1).any()):
        given = " + ".join([f"prefix_tokens {prefix_tokens}"] * (condition in ("prefix", "infill"))
                           + [f"suffix_tokens {suffix_tokens}"] * (condition in ("suffix", "infill")))
        raise ValueError(f"{given} leave nothing to generate in a block of {length} (condition {condition!r}); "
                         f"expected fewer than {length} prompt tokens")
    return Conditioning(values, fixed)


def file_conditioning(model: Model, path: str, n: int, condition: str) -> Conditioning:
    """Prompts from a file: JSONL objects {"prefix": ..., "suffix": ...} or plain text lines (prefixes),
    used in order and cycled to n."""
    prompts = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            prompts.append(json.loads(line) if line.lstrip().startswith("{") else {"prefix": line})
    if not prompts:
        raise ValueError(f"{path}: no prompts (expected JSONL {{prefix, suffix}} objects or text lines)")
    rows = [prompts[i % len(prompts)] for i in range(n)]
    pre = [r.get("prefix") if condition in ("prefix", "infill") else None for r in rows]
    suf = [r.get("suffix") if condition in ("suffix", "infill") else None for r in rows]
    for i, (p, s) in enumerate(zip(pre, suf)):
        if (condition in ("prefix", "infill") and not p) or (condition in ("suffix", "infill") and not s):
            raise ValueError(f"{path}: prompt {i % len(prompts)} has no {'prefix' if not p else 'suffix'} for "
                             f"condition {condition!r}")
    m = min(n, len(prompts))  # each prompt is tokenized once (so an error names its index in the file), then cycled
    try:
        base = model.conditioning(m, prefix=pre[:m] if any(pre) else None, suffix=suf[:m] if any(suf) else None)
    except ValueError as e:  # a prompt too long for the block: say which file it came from
        raise ValueError(f"{path}: {e}") from None
    idx = [i % m for i in range(n)]
    return Conditioning(base.values[idx], base.fixed[idx])


def build_conditioning(model: Model, condition: str, n: int, prompts: dict | None, data_dir: str | None
                       ) -> Conditioning | None:
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")
    if condition == "none":
        return None
    prompts = prompts or {}
    if prompts.get("source", "heldout") == "file":
        if not prompts.get("path"):
            raise ValueError("sampling.prompts.source is 'file' but sampling.prompts.path is not set")
        return file_conditioning(model, prompts["path"], n, condition).to(model.module.device)
    if not data_dir:
        raise ValueError("held-out prompts need the packed data directory")
    return heldout_conditioning(data_dir, n, model.length, condition, int(prompts.get("prefix_tokens", 32)),
                                int(prompts.get("suffix_tokens", 32))).to(model.module.device)


def generate(ckpt: str, sampler: str, steps: int, seed: int, num_samples: int, batch_size: int, out: str,
             settings: dict | None = None, variant: str | None = None, run: str = "", prompts: dict | None = None,
             data_dir: str | None = None, device: str = "auto", threads: int | None = None, config=None) -> None:
    """Sample `num_samples` sequences from `ckpt` with `sampler` (a registered sampler, or a variant of
    ``sampling.variants`` in `config`: `dlm.config.request_sampler`) and `settings` and write the JSONL `out`.
    Every argument is checked (`dlm.sampling_rules`) before the checkpoint is read."""
    if threads:
        torch.set_num_threads(threads)
    check_sample_args(num_samples=num_samples, steps=steps, batch_size=batch_size, seed=seed)
    sampler, settings, named = request_sampler(sampler, settings, config)
    variant = variant or named
    full = resolve_settings(sampler, settings)
    model = Model.load(ckpt, device)
    try:
        check_applies(sampler, model.algo, full)
    except ValueError as e:
        raise ValueError(f"{ckpt}: {e}") from None
    cond = build_conditioning(model, full["condition"], num_samples, prompts, data_dir)
    own = {k: v for k, v in (settings or {}).items() if k not in ("sampler", "condition")}
    res = model.generate(num_samples, sampler=sampler, steps=steps, seed=seed, batch_size=batch_size, cond=cond,
                         progress=True, **own)
    fixed = res.extra.get("fixed")
    before = res.extra.get("tokens_before")
    stats = {k: v for k, v in res.extra.items() if isinstance(v, float | int)}
    per_sample = res.seconds / num_samples
    algo_args = {k: model.module.hparams[k] for k in ALGO_ARGS.get(model.algo, ()) if k in model.module.hparams}
    with atomic_path(out) as tmp:
        with open(tmp, "w") as f:
            for i, row in enumerate(res.tokens.tolist()):
                rec = {**stats,  # sampler statistics first: they never overwrite the record's own fields
                       "tokens": row, "text": res.texts[i], "run": run, "algo": model.algo, "algo_args": algo_args,
                       "sampler": variant or sampler, "sampler_kind": sampler, "settings": full, "steps": steps,
                       "seed": seed, "condition": full["condition"],
                       "prompt_tokens": int(fixed[i].sum()) if fixed is not None else 0,
                       "fixed": fixed[i].nonzero().flatten().tolist() if fixed is not None else [],
                       "nfe": res.nfe, "seconds": per_sample,
                       "tokens_per_s": res.tokens.shape[1] / per_sample if per_sample > 0 else None}
                if before is not None:
                    rec["tokens_before"] = before[i].tolist()
                    rec["text_before"] = model.decode(before[i:i + 1])[0]
                f.write(json.dumps(rec) + "\n")
    log.info("wrote %d samples to %s (%.3f s/sample, %.1f network calls/sample)", num_samples, out, per_sample,
             res.nfe)


def write_heldout(data_dir: str, tokenizer_dir: str, n: int, out: str, split: str = "valid") -> None:
    """The reference row of gen-PPL tables: `n` held-out blocks (evenly spaced over the packed split, so
    the whole split is represented) decoded with the pipeline's tokenizer, written as a samples JSONL of the
    same length and format as the models' (run "reference", algo "data", sampler "heldout"), so the
    `gen_ppl` script scores it with the same judge and entropy as every sample file."""
    from dlm.data.dataset import PackedDataset
    from dlm.data.tokenizer import load_tokenizer

    ds = PackedDataset(data_dir, split)
    if len(ds) == 0:
        raise ValueError(f"{data_dir}: split {split!r} is empty, no held-out reference text")
    tok = load_tokenizer(tokenizer_dir)
    idx = [(i * len(ds)) // n for i in range(n)] if n <= len(ds) else [i % len(ds) for i in range(n)]
    with atomic_path(out) as tmp:
        with open(tmp, "w") as f:
            for i in idx:
                row = ds[i]["input_ids"].tolist()
                rec = {"tokens": row, "text": tok.decode(row), "run": "reference", "algo": "data",
                       "sampler": "heldout", "sampler_kind": "heldout", "settings": {}, "steps": 0, "seed": 0,
                       "condition": "none", "block": int(i), "nfe": 0, "seconds": 0.0}
                f.write(json.dumps(rec) + "\n")
    log.info("wrote %d held-out blocks of %s to %s", len(idx), data_dir, out)


def sample_summary(path: str) -> dict:
    """The settings shared by a samples JSONL (run, algo, sampler, sampler_kind, settings, steps, seed,
    condition) plus the mean network calls, seconds and tokens/s per sample; used to label metric JSONs."""
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        raise ValueError(f"{path}: no samples")
    first = rows[0]
    out = {k: first.get(k) for k in ("run", "algo", "algo_args", "sampler", "sampler_kind", "steps", "seed",
                                     "condition")}
    out["sampler_settings"] = first.get("settings")
    out["nucleus_p"] = (first.get("settings") or {}).get("nucleus_p", first.get("nucleus_p"))
    out["length"] = len(first["tokens"])
    out["nfe"] = sum(r.get("nfe", 0) for r in rows) / len(rows)
    out["seconds_per_sample"] = sum(r.get("seconds", 0.0) for r in rows) / len(rows)
    out["tokens_per_s"] = len(first["tokens"]) / out["seconds_per_sample"] if out["seconds_per_sample"] else None
    for k in ("sc_steps_mean", "sc_changes_mean", "sc_init_acc", "sc_final_acc", "sc_converged", "sc_early_stopped"):
        if k in first:
            out[k] = first[k]
    return out
