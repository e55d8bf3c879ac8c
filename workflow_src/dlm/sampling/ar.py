"""Ancestral sampling of the AR baseline, left to right from BOS, with or without a KV cache."""

from __future__ import annotations

import torch

from dlm.sampling.common import Conditioning, sample_categorical, top_p_filter


@torch.no_grad()
def sample_ar(module, n: int, generator: torch.Generator, cond: Conditioning | None = None, nucleus_p: float = 1.0,
              nucleus_rule: str = "keep_crossing", kv_cache: bool = True, length: int | None = None, **_) -> dict:
    """Generate n sequences of length L: position 0 is BOS, then L-1 sampled tokens (MDLM's AR sampler).

    Conditioning: a prompt prefix per row (fixed positions 0..P_i-1; P_i may differ between rows) is copied
    in and generation continues after it (the KV cache is prefilled with the shortest prompt in one call);
    a left-to-right model cannot condition on a suffix or a middle span."""
    L = length or module.hparams.block_length
    device = module.device
    x = torch.full((n, L), module.hparams.special_ids["bos"], dtype=torch.long, device=device)  # (n, L)
    start = 1
    fixed = None
    if cond is not None and cond.any:
        fixed, values = cond.fixed.to(device), cond.values.to(device)  # (n, L)
        P = fixed.long().cumprod(1).sum(1)  # (n,) length of each row's leading run of fixed positions
        if bool(fixed.sum(1).ne(P).any()) or bool(P.ge(L).any()):
            raise ValueError("the AR sampler takes only a prompt prefix (fixed positions 0..P-1 with P < L): a "
                             "left-to-right model cannot condition on a suffix or a middle span")
        x = torch.where(fixed, values, x)
        start = max(int(P.min()), 1)  # rows with longer prompts keep their fixed tokens below
    cache = module.backbone.new_cache() if kv_cache else None
    for i in range(start, L):
        if kv_cache and i == start and start > 1:  # prefill the prompt's keys/values in one call
            logits = module.ar_logits(x[:, :i], kv_cache=cache, start=0)[:, -1]  # (n, K)
        elif kv_cache:  # feed only the newest token; keys/values of the prefix are cached
            logits = module.ar_logits(x[:, i - 1:i], kv_cache=cache, start=i - 1)[:, -1]  # (n, K)
        else:  # recompute the whole prefix (the original repos' behaviour)
            logits = module.ar_logits(x[:, :i])[:, -1]
        probs = top_p_filter(torch.softmax(logits.double(), dim=-1), nucleus_p, nucleus_rule)
        x[:, i] = sample_categorical(probs, generator)
        if fixed is not None:
            x[:, i] = torch.where(fixed[:, i], values[:, i], x[:, i])
    return {"tokens": x, "nfe": L - start}
