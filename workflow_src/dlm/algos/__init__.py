"""Training objectives, one module per method, all on the shared `LMModule`.

`METHODS` maps the config's `algo` name to its class; `load_module` restores any checkpoint.
"""

from __future__ import annotations

import torch

from dlm.algos.ar import AR
from dlm.algos.base import LMModule
from dlm.algos.mdlm import MDLM
from dlm.algos.udlm import UDLM

METHODS: dict[str, type[LMModule]] = {cls.algo: cls for cls in (AR, MDLM, UDLM)}


def get_method(algo: str) -> type[LMModule]:
    if algo not in METHODS:
        raise ValueError(f"unknown algo {algo!r}; expected one of {sorted(METHODS)}")
    return METHODS[algo]


def load_module(path: str, map_location: str | torch.device = "cpu", ema: bool = True) -> LMModule:
    """Load a checkpoint of any method in eval mode, with the EMA weights swapped in (papers' convention)."""
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    algo = ckpt.get("hyper_parameters", {}).get("algo")
    if algo is None:
        raise ValueError(f"{path}: not a dlm checkpoint (no hyper_parameters.algo)")
    module = get_method(algo).load_from_checkpoint(path, map_location=map_location)
    if ema:
        module.use_ema_weights()
    return module.eval()
