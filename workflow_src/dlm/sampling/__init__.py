"""Samplers: one module per family, registered here by name.

Every sampler is a function
    fn(module, n, steps, generator, cond, nucleus_p, nucleus_rule, **settings) -> {"tokens": (n, L), "nfe", ...}
where `cond` (a `Conditioning`, never None) fixes the prompt positions, which the sampler must never change.
`dlm.config.SAMPLER_CATALOG` says which objectives each sampler applies to and lists its settings with their
defaults; `run_sampler` is the one entry point (the Snakemake rule, the CLI and the Python API all use it):
it resolves the settings, runs the sampler and, when asked, GIDD self-correction afterwards.
"""

from __future__ import annotations

import importlib

import torch

from dlm.config import COMMON_SETTINGS, SAMPLER_CATALOG, check_applies, sampler_settings
from dlm.sampling_rules import check_sample_args
from dlm.sampling.common import Conditioning, conditioning_or_none

# name -> (module, function, fixed keyword arguments)
_FUNCTIONS: dict[str, tuple[str, str, dict]] = {
    "ar": ("ar", "sample_ar", {"kv_cache": True}),
    "ar_nocache": ("ar", "sample_ar", {"kv_cache": False}),
    "mdlm_ancestral": ("mdlm", "sample_mdlm", {"cache": True}),
    "mdlm_ddpm": ("mdlm", "sample_mdlm", {"cache": False}),
    "mdlm_semi_ar": ("mdlm", "sample_semi_ar", {}),
    "d3pm_ancestral": ("d3pm", "sample_d3pm", {}),
    "sedd_analytic": ("sedd", "sample_sedd", {"predictor": "analytic"}),
    "sedd_euler": ("sedd", "sample_sedd", {"predictor": "euler"}),
    "remdm_cap": ("remdm", "sample_remdm", {"strategy": "cap"}),
    "remdm_rescale": ("remdm", "sample_remdm", {"strategy": "rescale"}),
    "remdm_conf": ("remdm", "sample_remdm", {"strategy": "conf"}),
    "remdm_loop": ("remdm", "sample_remdm", {"strategy": "loop"}),
    "remdm_fb": ("remdm", "sample_remdm", {"strategy": "fb"}),
    "remdm_dfm": ("remdm", "sample_dfm", {}),
    "duo_ancestral": ("duo", "sample_duo", {"final": "ancestral"}),
    "duo_greedy_tail": ("duo", "sample_duo", {"final": "greedy"}),
    "psi": ("psi", "sample_psi", {}),
    "gidd_ancestral": ("gidd", "sample_gidd", {}),
}
assert set(_FUNCTIONS) == set(SAMPLER_CATALOG), "sampler registry and catalogue disagree"
SAMPLERS = sorted(_FUNCTIONS)


def get_sampler(name: str, algo: str):
    """(function, fixed kwargs) of sampler `name`, checked to apply to objective `algo`."""
    if name not in _FUNCTIONS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {SAMPLERS}")
    check_applies(name, algo)
    mod, fn, kwargs = _FUNCTIONS[name]
    return getattr(importlib.import_module(f"dlm.sampling.{mod}"), fn), dict(kwargs)


def resolve_settings(sampler: str, settings: dict | None = None) -> dict:
    """The sampler's defaults and the common settings, overridden by `settings` (unknown keys are an error)."""
    if sampler not in SAMPLER_CATALOG:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
    try:
        return sampler_settings(sampler, settings)
    except ValueError as e:
        raise ValueError(e.args[0]) from None


@torch.no_grad()
def run_sampler(module, sampler: str, n: int, steps: int, generator: torch.Generator,
                cond: Conditioning | None = None, settings: dict | None = None, labels: torch.Tensor | None = None,
                guidance: float = 1.0) -> dict:
    """Draw n sequences with `sampler` (and its `settings`) from `module`; all randomness from `generator`.
    `labels` (n,) class ids of a class-conditional model (`num_classes` = no class) with the classifier-free
    guidance weight `guidance` (`Method.class_conditioned`); None samples without classes.

    Returns {"tokens": (n, L) long, "nfe": network calls for the batch, ...sampler statistics}; with
    `self_correct` also "tokens_before" (the sampler's output) and the self-correction statistics.
    """
    check_sample_args(num_samples=n, steps=steps)
    fn, fixed = get_sampler(sampler, module.algo)
    s = resolve_settings(sampler, settings)
    check_applies(sampler, module.algo, s)
    L = module.hparams.block_length
    cond = conditioning_or_none(cond, n, L, module.device)
    own = {k: v for k, v in s.items() if k not in COMMON_SETTINGS}
    if labels is not None:
        if tuple(labels.shape) != (n,):
            raise ValueError(f"class labels have shape {tuple(labels.shape)}, expected ({n},)")
        with module.class_conditioned(labels.to(module.device), guidance):
            return _run(module, fn, fixed, own, s, n, steps, generator, cond)
    return _run(module, fn, fixed, own, s, n, steps, generator, cond)


def _run(module, fn, fixed: dict, own: dict, s: dict, n: int, steps: int, generator: torch.Generator,
         cond: Conditioning) -> dict:
    """The sampler, then GIDD self-correction when the settings ask for it."""
    out = fn(module, n=n, steps=steps, generator=generator, cond=cond, nucleus_p=float(s["nucleus_p"]),
             nucleus_rule=s["nucleus_rule"], **fixed, **own)
    if s["self_correct"]:
        from dlm.sampling.self_correct import self_correct

        sc = self_correct(module, out["tokens"], generator, cond=cond, steps=int(s["sc_steps"]),
                          temperature=float(s["sc_temperature"]), t0=float(s["sc_t0"]),
                          patience=int(s["sc_patience"]), tokens_per_step=int(s["sc_tokens_per_step"]),
                          early_stopping=bool(s["sc_early_stopping"]))
        out = {**out, "tokens_before": out["tokens"], "tokens": sc.pop("tokens"),
               "nfe": out["nfe"] + sc.pop("nfe"), **sc}
    return out
