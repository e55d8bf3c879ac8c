"""Config validation and resolution for the workflow (imported by rules/common.smk; no torch here).

`check_config` validates against config/schema.yaml and adds the cross-key checks a schema cannot
express; every problem is reported with the key, the value and what was expected.
"""

from __future__ import annotations

import copy
import difflib
import re
from typing import Any

import yaml

from dlm.sampling_rules import SettingError, check_settings

# The sampler catalogue: which objectives each sampler applies to and its settings with their defaults
# (the papers' defaults). dlm.sampling builds its registry from this table; the config's
# `sampling.variants` may set any of these settings plus the COMMON_SETTINGS below.
MASKED = ("mdlm",)
UNIFORM = ("udlm", "duo", "dcd")
SAMPLER_CATALOG: dict[str, dict] = {
    "ar": {"algos": ("ar",), "settings": {}},
    "ar_nocache": {"algos": ("ar",), "settings": {}},
    "mdlm_ancestral": {"algos": MASKED + ("sdtt",), "settings": {}},
    "mdlm_ddpm": {"algos": MASKED + ("sdtt",), "settings": {}},
    "mdlm_semi_ar": {"algos": MASKED + ("sdtt",), "settings": {"stride_length": None, "num_strides": 1}},
    "d3pm_ancestral": {"algos": ("d3pm",), "settings": {}},
    "sedd_analytic": {"algos": ("sedd",) + MASKED + ("sdtt",), "settings": {}},
    "sedd_euler": {"algos": ("sedd",), "settings": {}},
    "remdm_cap": {"algos": MASKED + ("sdtt",), "settings": {"eta": 0.04}},  # the ReMDM paper's T < L (script: 0.008)
    "remdm_rescale": {"algos": MASKED + ("sdtt",), "settings": {"eta": 0.015}},
    "remdm_conf": {"algos": MASKED + ("sdtt",), "settings": {}},
    "remdm_loop": {"algos": MASKED + ("sdtt",), "settings": {"eta": 0.02, "t_on": 0.55, "t_off": 0.05,
                                                              "alpha_on": 0.9, "boundary": "original"}},
    "remdm_fb": {"algos": MASKED + ("sdtt",), "settings": {}},
    "remdm_dfm": {"algos": MASKED + ("sdtt",), "settings": {}},
    "duo_ancestral": {"algos": UNIFORM, "settings": {}},
    "duo_greedy_tail": {"algos": UNIFORM, "settings": {}},
    "psi": {"algos": UNIFORM + MASKED + ("sdtt",),
            "settings": {"modes": ["pure-posterior", "constant-remdm", "pure-posterior"], "eta": 0.01,
                         "kappa": 1.0, "time_profile": "linear-constant-linear", "loop_alpha": 0.9,
                         "high_frac": 0.45, "middle_frac": 0.5, "final": "ancestral"}},
    "gidd_ancestral": {"algos": ("gidd",), "settings": {"min_p": 0.0}},
}
# settings every sampler takes: the nucleus filter and its rule, the conditioning, and self-correction
COMMON_SETTINGS: dict = {
    "nucleus_p": 1.0, "nucleus_rule": "keep_crossing", "condition": "none",
    "self_correct": False, "sc_steps": 128, "sc_temperature": 0.1, "sc_t0": 0.01, "sc_patience": 32,
    "sc_tokens_per_step": 1, "sc_early_stopping": True,
}
SAMPLER_ALGOS: dict[str, tuple[str, ...]] = {name: spec["algos"] for name, spec in SAMPLER_CATALOG.items()}
# the objectives with a denoiser x_theta(z_t, t) that GIDD self-correction needs (not AR, not SEDD's score model)
SELF_CORRECT_ALGOS: tuple[str, ...] = ("mdlm", "sdtt", "udlm", "duo", "dcd", "gidd", "d3pm")


def sampler_settings(sampler: str, overrides: dict | None = None, nucleus_p: float = 1.0) -> dict:
    """COMMON_SETTINGS (nucleus default `nucleus_p`), then the sampler's defaults, then `overrides` ("sampler"
    ignored). An unknown key raises ValueError(message, key, the keys it takes); a value out of its bounds
    (`dlm.sampling_rules`) raises SettingError(message, key, value)."""
    out = {**COMMON_SETTINGS, "nucleus_p": nucleus_p, **SAMPLER_CATALOG[sampler]["settings"]}
    for key, value in (overrides or {}).items():
        if key == "sampler":
            continue
        if key not in out:
            raise ValueError(f"unknown setting {key!r} of sampler {sampler!r}; it takes {sorted(out)}", key, sorted(out))
        out[key] = value
    check_settings(out)
    return out


def check_applies(sampler: str, algo: str, settings: dict | None = None) -> None:
    """ValueError (one line) unless `sampler` applies to a model of objective `algo` and, with `self_correct`,
    the model has the denoiser that self-correction needs."""
    if algo not in SAMPLER_ALGOS[sampler]:
        raise ValueError(f"sampler {sampler!r} applies to {list(SAMPLER_ALGOS[sampler])}, not to a {algo!r} model")
    if (settings or {}).get("self_correct") and algo not in SELF_CORRECT_ALGOS:
        raise ValueError(f"self_correct = True is invalid for a {algo!r} model: self-correction needs a denoiser "
                         f"x_theta(z_t, t); expected a model of {list(SELF_CORRECT_ALGOS)}")


def load_config_files(paths) -> dict:
    """The workflow config of one YAML file or several (merged in order, later files win, mappings merged
    recursively, as Snakemake merges --configfile)."""
    def merge(a: dict, b: dict) -> dict:
        return {**a, **{k: merge(a[k], v) if isinstance(a.get(k), dict) and isinstance(v, dict) else v
                        for k, v in b.items()}}

    out: dict = {}
    for path in [paths] if isinstance(paths, str) else list(paths):
        with open(path) as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a YAML mapping (a workflow config), got {type(loaded).__name__}")
        out = merge(out, loaded)
    return out


DEFAULT_CONFIG = "config/config.yaml"  # the workflow's default config (Snakefile: configfile), from the working directory


def request_sampler(name: str, settings: dict | None = None, config=None) -> tuple[str, dict, str | None]:
    """(registered sampler, settings, variant name or None) for a sampler or variant `name`, as a sample job of the
    workflow would resolve it, plus the caller's `settings` on top.

    A registered sampler keeps `settings` as given. Any other name is looked up in ``sampling.variants`` of
    `config`: a config dict, a YAML path or a list of paths (merged like Snakemake's --configfile), or None for the
    workflow's default config (`DEFAULT_CONFIG` under the working directory, when it exists); the variant's
    settings (with the config's ``sampling.nucleus_p`` as the nucleus default) are overridden by `settings`.
    An unknown name is a one-line ValueError listing the samplers and the config's variants."""
    if name in SAMPLER_CATALOG:
        return name, dict(settings or {}), None
    import os

    if config is None:
        config = DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else {}
        where = f"{DEFAULT_CONFIG} (not found here)" if not config else DEFAULT_CONFIG
    else:
        where = "the given config" if isinstance(config, dict) else (config if isinstance(config, str) else
                                                                    " + ".join(map(str, config)))
    cfg = config if isinstance(config, dict) else load_config_files(config)
    variants = (cfg.get("sampling") or {}).get("variants") or {}
    if name not in variants:
        close = difflib.get_close_matches(name, [*SAMPLER_CATALOG, *variants], n=1)
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLER_CATALOG)} or a variant of "
                         f"sampling.variants in {where} ({sorted(variants)}; another workflow config: --config FILE / "
                         f"config=...)" + (f"; did you mean {close[0]!r}?" if close else ""))
    try:
        full = resolve_variant(cfg, name)
    except ConfigError as e:
        raise ValueError(f"{where}: {e}") from None
    sampler = full.pop("sampler")
    return sampler, {**full, **(settings or {})}, name


def resolve_variant(config: dict, name: str) -> dict:
    """The full settings of a sampler variant: `sampling.variants[name]` (or the bare sampler `name`)
    over the sampler's defaults over COMMON_SETTINGS, with `sampling.nucleus_p` as the nucleus default.
    Returns {"sampler": ..., **every setting}."""
    variants = config.get("sampling", {}).get("variants", {}) or {}
    entry = dict(variants.get(name) or {"sampler": name})
    sampler = entry.pop("sampler", name)
    if sampler not in SAMPLER_CATALOG:
        where = f"sampling.variants.{name}.sampler" if name in variants else "sampler"
        raise ConfigError(f"key '{where}': value {sampler!r} is invalid: expected a variant of sampling.variants "
                          f"or one of {sorted(SAMPLER_CATALOG)}")
    try:
        settings = sampler_settings(sampler, entry, config.get("sampling", {}).get("nucleus_p", 1.0))
    except SettingError as e:
        raise ConfigError(f"key 'sampling.variants.{name}.{e.args[1]}': {e.args[0]}") from None
    except ValueError as e:
        raise ConfigError(f"key 'sampling.variants.{name}.{e.args[1]}': unknown setting of sampler {sampler!r}; "
                          f"it takes {e.args[2]}") from None
    return {"sampler": sampler, **settings}


# which keys of a run's `algo_args` apply to which objective (the schema documents each key)
ALGO_ARGS: dict[str, tuple[str, ...]] = {
    "ar": (), "mdlm": (), "udlm": (), "sedd": ("graph",),
    "d3pm": ("T",),
    "duo": ("curriculum",),
    "gidd": ("p_uniform", "loss_weighting", "min_loss_weight", "max_loss_weight", "t_eps"),
    "dcd": ("T", "round", "gamma_min", "gamma_max", "loss_type", "transform"),
    "sdtt": ("T", "round", "loss_type", "teacher_grid"),
}


# zero-shot packing (docs/conventions.md): the methods whose zero-shot rows the originals computed WITHOUT an EOS
# between documents -- DUO's scripts/zero_shot_*.sh set data.insert_valid_eos=False for DUO and UDLM (and DCD,
# a distilled DUO); MDLM's code, which produced the AR / SEDD / MDLM rows, appends EOS after every document.
ZERO_SHOT_NO_EOS_ALGOS = ("udlm", "duo", "dcd")


def zero_shot_insert_eos(config: dict, run: str, group: str | None = None) -> bool:
    """Whether run `run`'s zero-shot corpora are packed with an EOS after every document (wrap packing).

    `zero_shot.insert_eos_by_run` names single runs (the run, or `group`: the config entry a training-seed
    run came from); otherwise `zero_shot.insert_eos`: ``original`` (the default) follows the original code of
    the run's method (no EOS for ZERO_SHOT_NO_EOS_ALGOS, EOS for every other method), true / false is one
    setting for every run."""
    zs = config.get("zero_shot") or {}
    by_run = zs.get("insert_eos_by_run") or {}
    for name in (run, group):
        if name in by_run:
            return bool(by_run[name])
    rule = zs.get("insert_eos", "original")
    if isinstance(rule, bool):
        return rule
    return resolve_run(config, run)["algo"] not in ZERO_SHOT_NO_EOS_ALGOS


# which runs a distillation algo takes as its base model
DISTILL_FROM: dict[str, tuple[str, ...]] = {"dcd": ("duo", "udlm"), "sdtt": ("mdlm",)}


class ConfigError(ValueError):
    pass


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def check_config(config: dict, schema_path: str, source: str = "config") -> None:
    """Raise ConfigError listing every schema violation and cross-key inconsistency."""
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    import jsonschema  # here, not at the top: the training/sampling code imports this module on machines without it

    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for err in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        unknown = _unknown_keys(err)
        if unknown:
            problems += unknown
            continue
        problems.append(f"key '{_key(err.absolute_path)}': value {err.instance!r} is invalid: {err.message}"
                        + (f" (expected: {err.schema.get('description')})" if err.schema.get("description") else ""))
    if not problems:
        problems += _cross_checks(config)
    if problems:
        raise ConfigError(f"invalid {source}:\n  " + "\n  ".join(problems))


def _unknown_keys(err: "jsonschema.ValidationError") -> list[str]:
    """One problem per key that `additionalProperties: false` rejects, with its full path, the keys the
    mapping takes and the closest one (a typo); [] for any other error."""
    schema = err.schema
    if err.validator != "additionalProperties" or schema.get("additionalProperties") is not False \
            or not isinstance(err.instance, dict):
        return []
    allowed = sorted(schema.get("properties", {}))
    patterns = list(schema.get("patternProperties", {}))
    extra = [k for k in err.instance if k not in allowed and not any(re.search(p, str(k)) for p in patterns)]
    out = []
    for key in extra:
        close = difflib.get_close_matches(str(key), allowed, n=1)
        out.append(f"key '{_key([*err.absolute_path, key])}': unknown key (Additional properties are not allowed "
                   f"under '{_key(err.absolute_path)}'); expected one of {allowed}"
                   + (f"; did you mean {close[0]!r}?" if close else ""))
    return out


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
        try:
            sampler = resolve_variant(config, entry["sampler"])["sampler"]
        except ConfigError as e:
            out.append(f"key 'sampling.plan.{i}.sampler': {e}")
            continue
        if algo not in SAMPLER_ALGOS[sampler]:
            out.append(f"key 'sampling.plan.{i}.sampler': value {entry['sampler']!r} is invalid: sampler {sampler!r} "
                       f"does not apply to run {run!r} (algo {algo!r}); it applies to {list(SAMPLER_ALGOS[sampler])}")
        elif resolve_variant(config, entry["sampler"])["self_correct"] and algo not in SELF_CORRECT_ALGOS:
            out.append(f"key 'sampling.plan.{i}.sampler': value {entry['sampler']!r} is invalid: it self-corrects, "
                       f"which needs a denoiser; run {run!r} has algo {algo!r}, expected one of "
                       f"{list(SELF_CORRECT_ALGOS)}")
        if entry.get("rounds"):
            spec = runs[run].get("distill")
            bad = [k for k in entry["rounds"] if not spec or not 1 <= k <= spec["rounds"]]
            if bad:
                out.append(f"key 'sampling.plan.{i}.rounds': value {entry['rounds']!r} is invalid: rounds of a distilled "
                           f"run, 1..{spec['rounds']} for run {run!r}" if spec else
                           f"key 'sampling.plan.{i}.rounds': run {run!r} is not distilled (no distill: {{from, rounds}})")
    try:
        plan_jobs(config)
    except ConfigError as e:
        out.append(str(e))
    for name in runs:
        hp = resolve_run(config, name)
        allowed = ALGO_ARGS.get(hp.get("algo"), ())
        for key in hp.get("algo_args", {}) or {}:
            if key not in allowed:
                out.append(f"key 'runs.{name}.algo_args.{key}': does not apply to algo {hp.get('algo')!r}; "
                           f"it takes {list(allowed) or 'no algo_args'}")
    for name in runs:
        hp = resolve_run(config, name)
        spec, algo = hp.get("distill"), hp.get("algo")
        if algo in DISTILL_FROM and not spec and not (hp.get("import") or hp.get("released")):  # imported students
            out.append(f"key 'runs.{name}.distill': missing: algo {algo!r} distils another run; give "
                       f"{{from: RUN, rounds: N}}")
        elif spec and algo not in DISTILL_FROM:
            out.append(f"key 'runs.{name}.distill': does not apply to algo {algo!r}; use algo dcd or sdtt")
        elif spec:
            base = spec["from"]
            if base not in runs or base == name:
                out.append(f"key 'runs.{name}.distill.from': value {base!r} is invalid: expected another run "
                           f"of this config, one of {sorted(r for r in runs if r != name)}")
            elif resolve_run(config, base)["algo"] not in DISTILL_FROM[algo]:
                out.append(f"key 'runs.{name}.distill.from': value {base!r} is invalid: algo {algo!r} distils a "
                           f"run of algo {list(DISTILL_FROM[algo])}, not {resolve_run(config, base)['algo']!r}")
    for name in (config.get("zero_shot", {}).get("insert_eos_by_run") or {}):
        if name not in runs:
            out.append(f"key 'zero_shot.insert_eos_by_run.{name}': unknown run; expected one of {sorted(runs)}")
    judge = config.get("evaluation", {}).get("judge")
    if judge in runs and resolve_run(config, judge)["algo"] != "ar":
        out.append(f"key 'evaluation.judge': value {judge!r} is invalid: the judge run must have algo 'ar'")
    return out + _image_checks(config.get("images") or {})


def image_config(images: dict) -> dict:
    """The `images` section shaped as the top level `resolve_run` / `resolve_variant` read (train_defaults, runs,
    sampling): resolve_run(image_config(config["images"]), run) gives an image run's settings."""
    return {"train_defaults": images.get("train_defaults") or {}, "runs": images.get("runs") or {},
            "sampling": images.get("sampling") or {}}


def _image_checks(images: dict) -> list[str]:
    """Cross-key checks of the `images` section (rules/images.smk)."""
    out, cfg = [], image_config(images)
    runs = cfg["runs"]
    if (images.get("dataset") or {}).get("kind") == "cifar10" and not images["dataset"].get("path"):
        out.append("key 'images.dataset.path': value None is invalid: kind cifar10 needs the path of "
                   "cifar-10-python.tar.gz (or its extracted folder)")
    for name in runs:
        hp = resolve_run(cfg, name)
        model = hp.get("model") or {}
        if "seeds" in (hp.get("trainer") or {}):
            out.append(f"key 'images.runs.{name}.trainer.seeds': image runs take one trainer.seed")
        if model.get("backbone", "unet") == "dit" and model.get("class_conditional", True):
            out.append(f"key 'images.runs.{name}.model.class_conditional': the DiT takes no class labels; set it "
                       f"false or use backbone unet")
    for i, entry in enumerate((cfg["sampling"].get("plan") or [])):
        run = entry["run"]
        if run not in runs:
            out.append(f"key 'images.sampling.plan.{i}.run': value {run!r} is invalid: expected one of {sorted(runs)}")
            continue
        hp = resolve_run(cfg, run)
        try:
            sampler = resolve_variant(cfg, entry["sampler"])["sampler"]
        except ConfigError as e:
            out.append(f"key 'images.sampling.plan.{i}.sampler': {str(e).replace('sampling.', 'images.sampling.')}")
            continue
        if hp["algo"] not in SAMPLER_ALGOS[sampler]:
            out.append(f"key 'images.sampling.plan.{i}.sampler': value {entry['sampler']!r} is invalid: sampler "
                       f"{sampler!r} does not apply to run {run!r} (algo {hp['algo']!r})")
        if "class" in entry.get("conditions", ["class"]) and not (hp.get("model") or {}).get("class_conditional", True):
            out.append(f"key 'images.sampling.plan.{i}.conditions': run {run!r} is not class-conditional "
                       f"(model.class_conditional false); use conditions [none]")
    return out


def round_run_name(run: str, k: int) -> str:
    """The name under which round k of a distilled run is sampled (sampling.plan rounds): RUN_roundK."""
    return f"{run}_round{k}"


def plan_round_runs(config: dict) -> dict[str, tuple[str, int]]:
    """{RUN_roundK: (RUN, K)} for every round a plan entry samples (`rounds`), in plan order."""
    out: dict[str, tuple[str, int]] = {}
    for entry in config.get("sampling", {}).get("plan", []) or []:
        for k in entry.get("rounds") or []:
            out[round_run_name(entry["run"], int(k))] = (entry["run"], int(k))
    return out


def plan_jobs(config: dict) -> dict[tuple[str, str, int, int], dict[str, int]]:
    """Every planned sample file (run, sampler variant, steps, seed), in plan order without duplicates, with its
    num_samples and batch_size (the entry's, else sampling's). A plan entry with `rounds` also samples those
    rounds of its distilled run (run names `round_run_name`). Two entries giving one file different sizes are
    a ConfigError."""
    sampling = config.get("sampling", {})
    jobs: dict[tuple[str, str, int, int], dict[str, int]] = {}
    for i, entry in enumerate(sampling.get("plan", []) or []):
        sizes = {k: int(entry.get(k, sampling.get(k, 32))) for k in ("num_samples", "batch_size")}
        runs = [entry["run"]] + [round_run_name(entry["run"], int(k)) for k in entry.get("rounds") or []]
        for run in runs:
            for steps in entry["steps"]:
                for seed in entry.get("seeds", sampling.get("seeds", [1])):
                    job = (run, entry["sampler"], int(steps), int(seed))
                    if job in jobs and jobs[job] != sizes:
                        raise ConfigError(f"key 'sampling.plan.{i}': sample file {job} is planned twice with different "
                                          f"sizes {jobs[job]} and {sizes}")
                    jobs.setdefault(job, sizes)
    return jobs


# Training settings of a method's original code that differ from the MDLM / DUO family's (docs/conventions.md):
# they sit between train_defaults and the run's own entry, so a run keeps its method's original convention unless
# its own entry says otherwise. GIDD (dvruette/gidd) trains its DiT without dropout and keeps no EMA of the weights.
METHOD_TRAINING: dict[str, dict[str, dict]] = {
    "gidd": {"model": {"dropout": 0.0}, "trainer": {"ema": 0.0}},
}


def _merge(merged: dict, entry: dict) -> dict:
    for key, value in entry.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **copy.deepcopy(value)}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve_run(config: dict, name: str) -> dict[str, Any]:
    """train_defaults, then the method's original training settings (METHOD_TRAINING), then runs[name] (dict
    values merged one level deep; the run wins)."""
    if name not in config.get("runs", {}):
        raise ConfigError(f"unknown run {name!r}; expected one of {sorted(config.get('runs', {}))}")
    entry = config["runs"][name]
    merged = copy.deepcopy(config.get("train_defaults", {}))
    algo = entry.get("algo", merged.get("algo"))
    if not (entry.get("import") or entry.get("released")):  # an imported or released run is not trained
        _merge(merged, METHOD_TRAINING.get(algo, {}))
    return _merge(merged, entry)


# not filled with schema defaults: run entries inherit train_defaults (through `resolve_run`), and each
# method owns the defaults of its algo_args (filling them in would hand every method every algo's keys)
NOT_FILLED = ("runs", "algo_args", "distill")


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


def seed_run_name(run: str, seed: int) -> str:
    """The name of a further training seed of `run` (runs.RUN.trainer.seeds): RUN_sSEED."""
    return f"{run}_s{seed}"


def expand_seeds(config: dict) -> dict[str, str]:
    """Turn every `trainer.seeds` list into runs (in place); returns {run: the config entry it came from}.

    A run whose resolved trainer has ``seeds: [a, b, ...]`` keeps its name and trains with seed a (so a
    one-seed config and the first seed of a seed list give the same files); each further seed s adds the
    run ``NAME_s<s>``, a copy of the entry with ``trainer.seed: s``. A distilled copy starts from its base's
    run of the same seed when the base has one. ``seeds`` itself is removed (the training job sees one seed).
    Raises ConfigError when an added name is already a run.
    """
    runs = config.get("runs", {})
    defaults = (config.get("train_defaults") or {}).get("trainer") or {}
    group = {name: name for name in runs}
    added: dict[str, dict] = {}
    for name in list(runs):
        seeds = resolve_run(config, name).get("trainer", {}).get("seeds")
        if not seeds:
            continue
        entry = copy.deepcopy(runs[name])
        entry["trainer"] = {k: v for k, v in (entry.get("trainer") or {}).items() if k != "seeds"}
        runs[name] = {**entry, "trainer": {**entry["trainer"], "seed": int(seeds[0])}}
        for s in seeds[1:]:
            new = seed_run_name(name, int(s))
            if new in runs or new in added:
                raise ConfigError(f"key 'runs.{name}.trainer.seeds': seed {s} would add run {new!r}, which already "
                                  f"exists; rename that run")
            copy_entry = {**copy.deepcopy(entry), "trainer": {**entry["trainer"], "seed": int(s)}}
            added[new] = copy_entry
            group[new] = name
    defaults.pop("seeds", None)
    runs.update(added)
    for new, entry in added.items():  # distilled copies: the same seed of the base run, when it has one
        base = (entry.get("distill") or {}).get("from")
        seed = entry["trainer"]["seed"]
        if base and seed_run_name(base, seed) in runs:
            entry["distill"] = {**entry["distill"], "from": seed_run_name(base, seed)}
    return group


# the claims table (dlm.report.claims; config/claims.yaml): read here, without pandas, for rules/common.smk too
CLAIM_TESTS = ("val_better", "val_close", "gen_better", "mauve_better", "same_faster", "sc_lowers", "sc_not_lowers",
               "train_time_less", "train_memory_less", "downstream_better", "downstream_close")


def read_claims(path) -> dict:
    """The claims file, checked: a `claims` list of objects with id, statement, a known test, a (and b but for the
    self-correction tests), and a `margin` for downstream_close (a share of questions, not nats)."""
    with open(path) as f:
        spec = yaml.safe_load(f) or {}
    claims = spec.get("claims")
    if not isinstance(claims, list) or not claims:
        raise ValueError(f"{path}: expected a non-empty list under 'claims'")
    for i, c in enumerate(claims):
        if not isinstance(c, dict):
            raise ValueError(f"{path}: claims[{i}] is {c!r}: expected a mapping")
        need = ["id", "statement", "test", "a"] + ([] if str(c.get("test", "")).startswith("sc_") else ["b"])
        need += ["margin"] if c.get("test") == "downstream_close" else []
        for key in need:
            if key not in c:
                raise ValueError(f"{path}: claims[{i}] ({c.get('id', '?')}) has no {key!r}")
        if c["test"] not in CLAIM_TESTS:
            raise ValueError(f"{path}: claims[{i}] ({c['id']}): unknown test {c['test']!r}; expected one of "
                             f"{list(CLAIM_TESTS)}")
    return spec


def claim_sample_key(side: dict) -> tuple[str, str, int]:
    """(run, sampler, steps) of a sample-file side of a claim."""
    return str(side["run"]), str(side["sampler"]), int(side["steps"])
