"""Autoregressive baseline on the causal DiT (MDLM Sec. 4.1, DUO Table 1 "AR Transformer").

Inputs x[:, :-1] predict targets x[:, 1:]; the [MASK] logit is set to -inf. The reported PPL is an
exact perplexity over the L-1 predicted tokens of each block (the first token is never a target).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dlm.algos.base import Method


class AR(Method):
    algo = "ar"
    causal = True

    def ar_logits(self, input_ids: torch.Tensor, kv_cache: list[dict] | None = None, start: int = 0) -> torch.Tensor:
        """Next-token logits (B, T, K): position i predicts token i+1. [MASK] gets -inf."""
        logits = self.backbone(input_ids, kv_cache=kv_cache, start=start).float()  # (B, T, K)
        logits[..., self.mask_id] = float("-inf")
        return logits

    def token_nll(self, batch, t, generator=None):
        ids = batch["input_ids"]  # (B, L)
        logits = self.ar_logits(ids[:, :-1])  # (B, L-1, K)
        nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # (B, L-1)
        return F.pad(nll, (1, 0))  # (B, L); position 0 is never a target

    def loss_mask(self, batch):
        mask = batch["attention_mask"].clone()
        mask[:, 0] = 0  # the first token is context only
        return mask
