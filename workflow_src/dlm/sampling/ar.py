"""Ancestral sampling of the AR baseline, left to right from BOS, with or without a KV cache."""

from __future__ import annotations

import torch

from dlm.sampling.common import sample_categorical, top_p_filter


@torch.no_grad()
def sample_ar(module, n: int, generator: torch.Generator, nucleus_p: float = 1.0, kv_cache: bool = True,
              length: int | None = None, **_) -> dict:
    """Generate n sequences of length L: position 0 is BOS, then L-1 sampled tokens (MDLM's AR sampler)."""
    L = length or module.hparams.block_length
    device = module.device
    x = torch.full((n, L), module.hparams.special_ids["bos"], dtype=torch.long, device=device)  # (n, L)
    cache = module.backbone.new_cache() if kv_cache else None
    for i in range(1, L):
        if kv_cache:  # feed only the newest token; keys/values of the prefix are cached
            logits = module.ar_logits(x[:, i - 1:i], kv_cache=cache, start=i - 1)[:, -1]  # (n, K)
        else:  # recompute the whole prefix (the original repos' behaviour)
            logits = module.ar_logits(x[:, :i])[:, -1]
        probs = top_p_filter(torch.softmax(logits.double(), dim=-1), nucleus_p)
        x[:, i] = sample_categorical(probs, generator)
    return {"tokens": x, "nfe": L - 1}
