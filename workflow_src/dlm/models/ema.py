"""Exponential moving average of weights with the MDLM/DUO warm-up: decay_n = min(decay, (1+n)/(10+n))."""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.9999):
        self.decay = decay
        self.num_updates = 0
        self.shadow = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for k, p in model.named_parameters():
            if k in self.shadow:
                s = self.shadow[k]
                if s.device != p.device:
                    s = self.shadow[k] = s.to(p.device)
                s.mul_(d).add_(p.detach(), alpha=1 - d)

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module):
        """Temporarily load the EMA weights into `model` (validation, sampling)."""
        backup = {k: p.detach().clone() for k, p in model.named_parameters() if k in self.shadow}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for k, p in model.named_parameters():
                    if k in backup:
                        p.copy_(backup[k])

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for k, p in model.named_parameters():
            if k in self.shadow:
                p.copy_(self.shadow[k].to(p.device))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}
