"""Training objectives, one module per method, all on the shared `Method` (a plain nn.Module).

`METHODS` maps the config's `algo` name to its class; `load_module` restores any checkpoint without
importing Lightning (sampling and evaluation jobs stay light) and without running anything stored in it.
"""

from __future__ import annotations

import torch

from dlm.algos.ar import AR
from dlm.algos.base import Method
from dlm.algos.d3pm import D3PM
from dlm.algos.dcd import DCD
from dlm.algos.duo import DUO
from dlm.algos.gidd import GIDD
from dlm.algos.mdlm import MDLM
from dlm.algos.sdtt import SDTT
from dlm.algos.sedd import SEDD
from dlm.algos.udlm import UDLM
from dlm.checkpoints.safe_load import load_checkpoint

METHODS: dict[str, type[Method]] = {cls.algo: cls for cls in (AR, MDLM, UDLM, DUO, SEDD, D3PM, GIDD, DCD, SDTT)}


def get_method(algo: str) -> type[Method]:
    if algo not in METHODS:
        raise ValueError(f"unknown algo {algo!r}; expected one of {sorted(METHODS)}")
    return METHODS[algo]


def load_module(path: str, map_location: str | torch.device = "cpu", ema: bool = True) -> Method:
    """Restore the method of a training checkpoint (`dlm.train`'s Lightning .ckpt) in eval mode, with
    the EMA weights swapped in (the papers evaluate and sample with the EMA). A missing, truncated or
    foreign file, one that could run code, or an unknown algo, raises an error naming the file (the file is
    read by `dlm.checkpoints.safe_load.load_checkpoint`: weights only, nothing in it runs)."""
    ckpt = load_checkpoint(path, map_location)
    hp = dict((ckpt.get("hyper_parameters") or {}).get("method") or {})
    if "algo" not in hp or "state_dict" not in ckpt:
        raise ValueError(f"{path}: not a dlm checkpoint (no hyper_parameters.method.algo or no state_dict); "
                         f"import a released checkpoint with `dlm import` first")
    algo = hp.pop("algo")
    if algo not in METHODS:
        raise ValueError(f"{path}: unknown algo {algo!r}; expected one of {sorted(METHODS)}")
    method = get_method(algo)(**hp)
    prefix = "method."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    method.load_state_dict(state)
    if ema and "ema" in ckpt:
        with torch.no_grad():
            params = dict(method.backbone.named_parameters())
            for name, value in ckpt["ema"]["shadow"].items():
                params[name].copy_(value)
    method.global_step = ckpt.get("global_step")
    return method.to(map_location).eval()
