"""Samplers. `SAMPLERS[name] = (algos it applies to, function, fixed keyword arguments)`.

Every sampler takes (module, n, steps, generator, nucleus_p, ...) and returns {"tokens": (n, L), "nfe"}.
"""

from __future__ import annotations

from dlm.config import SAMPLER_ALGOS
from dlm.sampling.ar import sample_ar
from dlm.sampling.duo import sample_duo
from dlm.sampling.mdlm import sample_mdlm

_FUNCTIONS = {
    "ar": (sample_ar, {"kv_cache": True}),
    "ar_nocache": (sample_ar, {"kv_cache": False}),
    "mdlm_ancestral": (sample_mdlm, {}),
    "duo_ancestral": (sample_duo, {"final": "ancestral"}),
    "duo_greedy_tail": (sample_duo, {"final": "greedy"}),
}
SAMPLERS: dict[str, tuple[tuple[str, ...], callable, dict]] = {
    name: (SAMPLER_ALGOS[name], fn, kwargs) for name, (fn, kwargs) in _FUNCTIONS.items()}


def get_sampler(name: str, algo: str):
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    algos, fn, kwargs = SAMPLERS[name]
    if algo not in algos:
        raise ValueError(f"sampler {name!r} applies to {algos}, not to a {algo!r} model")
    return fn, kwargs
