"""Config validation and resolution for the workflow (imported by rules/common.smk; no torch here).

`check_config` validates against config/schema.yaml and adds the cross-key checks a schema cannot
express; every problem is reported with the key, the value and what was expected.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import yaml

# which sampler applies to which objective (dlm.sampling builds its registry from this table)
SAMPLER_ALGOS: dict[str, tuple[str, ...]] = {
    "ar": ("ar",),
    "ar_nocache": ("ar",),
    "mdlm_ancestral": ("mdlm",),
    "duo_ancestral": ("udlm", "duo"),
    "duo_greedy_tail": ("udlm", "duo"),
}


# which keys of a run's `algo_args` apply to which objective (the schema documents each key)
ALGO_ARGS: dict[str, tuple[str, ...]] = {
    "ar": (), "mdlm": (), "udlm": (), "sedd": (),
    "d3pm": ("T",),
    "duo": ("curriculum",),
    "gidd": ("p_uniform", "loss_weighting", "min_loss_weight", "max_loss_weight", "t_eps"),
}


class ConfigError(ValueError):
    pass


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def check_config(config: dict, schema_path: str, source: str = "config") -> None:
    """Raise ConfigError listing every schema violation and cross-key inconsistency."""
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for err in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        problems.append(f"key '{_key(err.absolute_path)}': value {err.instance!r} is invalid: {err.message}"
                        + (f" (expected: {err.schema.get('description')})" if err.schema.get("description") else ""))
    if not problems:
        problems += _cross_checks(config)
    if problems:
        raise ConfigError(f"invalid {source}:\n  " + "\n  ".join(problems))


def _cross_checks(config: dict) -> list[str]:
    out = []
    runs = config.get("runs", {})
    tok = config.get("tokenizer", {})
    if tok.get("kind") == "pretrained" and not tok.get("name_or_path"):
        out.append("key 'tokenizer.name_or_path': value None is invalid: kind 'pretrained' needs a hub name or path")
    for i, entry in enumerate(config.get("sampling", {}).get("plan", [])):
        run = entry["run"]
        if run not in runs:
            out.append(f"key 'sampling.plan.{i}.run': value {run!r} is invalid: expected one of {sorted(runs)}")
            continue
        algo = resolve_run(config, run)["algo"]
        if algo not in SAMPLER_ALGOS[entry["sampler"]]:
            out.append(f"key 'sampling.plan.{i}.sampler': value {entry['sampler']!r} is invalid: it does not apply "
                       f"to run {run!r} (algo {algo!r}); it applies to {list(SAMPLER_ALGOS[entry['sampler']])}")
    for name in runs:
        hp = resolve_run(config, name)
        allowed = ALGO_ARGS.get(hp.get("algo"), ())
        for key in hp.get("algo_args", {}) or {}:
            if key not in allowed:
                out.append(f"key 'runs.{name}.algo_args.{key}': does not apply to algo {hp.get('algo')!r}; "
                           f"it takes {list(allowed) or 'no algo_args'}")
    judge = config.get("evaluation", {}).get("judge")
    if judge in runs and resolve_run(config, judge)["algo"] != "ar":
        out.append(f"key 'evaluation.judge': value {judge!r} is invalid: the judge run must have algo 'ar'")
    return out


def resolve_run(config: dict, name: str) -> dict[str, Any]:
    """train_defaults merged with runs[name] (dict values merged one level deep; the run wins)."""
    if name not in config.get("runs", {}):
        raise ConfigError(f"unknown run {name!r}; expected one of {sorted(config.get('runs', {}))}")
    merged = copy.deepcopy(config.get("train_defaults", {}))
    for key, value in config["runs"][name].items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# not filled with schema defaults: run entries inherit train_defaults (through `resolve_run`), and each
# method owns the defaults of its algo_args (filling them in would hand every method every algo's keys)
NOT_FILLED = ("runs", "algo_args")


def apply_defaults(config: dict, schema_path: str) -> dict:
    """Fill the schema's defaults into `config` (in place) -- except inside `runs`, whose entries
    inherit from `train_defaults` (which does get the schema defaults) through `resolve_run`, and
    inside `algo_args`, whose defaults the methods themselves apply."""
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    definitions = schema.get("definitions", {})

    def deref(node: dict) -> dict:
        while "$ref" in node:
            node = {**definitions[node["$ref"].split("/")[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    def fill(node: dict, value: dict) -> None:
        for key, sub in deref(node).get("properties", {}).items():
            sub = deref(sub)
            if key in NOT_FILLED:
                continue
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            elif key not in value and sub.get("type") == "object" and "properties" in sub:
                value[key] = {}
            if isinstance(value.get(key), dict):
                fill(sub, value[key])

    fill(schema, config)
    return config
