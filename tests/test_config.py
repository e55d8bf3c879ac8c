"""Config validation: every shipped config is valid; bad values are reported by key, value and expectation."""

import copy
from pathlib import Path

import pytest
import yaml

from dlm.config import SAMPLER_ALGOS, ConfigError, check_config, plan_jobs, resolve_run, resolve_variant

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "config" / "schema.yaml")
CONFIGS = ["config/config.yaml", "config/smoke.yaml", "config/paper/owt.yaml", "config/paper/lm1b.yaml"]


def load(rel):
    return yaml.safe_load((ROOT / rel).read_text())


@pytest.mark.parametrize("rel", CONFIGS)
def test_shipped_configs_are_valid(rel):
    check_config(load(rel), SCHEMA, rel)


def test_every_schema_property_has_description_and_default():
    schema = yaml.safe_load(Path(SCHEMA).read_text())
    for key, prop in schema["properties"].items():
        assert "description" in prop, key
        assert "default" in prop, key


@pytest.mark.parametrize("path,value,fragment", [
    (["data", "packing"], "wrapp", "key 'data.packing': value 'wrapp' is invalid"),
    (["data", "block_length"], 2, "key 'data.block_length': value 2"),
    (["runs", "ar", "algo"], "gpt", "key 'runs.ar.algo': value 'gpt'"),
    (["train_defaults", "trainer", "max_steps"], 0, "train_defaults.trainer.max_steps"),
    (["tokenizer", "kind"], "wordpiece", "tokenizer.kind"),
    (["evaluation", "bogus"], 1, "Additional properties"),
])
def test_bad_values_name_key_value_and_expectation(path, value, fragment):
    cfg = load("config/smoke.yaml")
    node = cfg
    for k in path[:-1]:
        node = node.setdefault(k, {})
    node[path[-1]] = value
    with pytest.raises(ConfigError) as e:
        check_config(cfg, SCHEMA, "smoke.yaml")
    assert fragment in str(e.value)
    assert "smoke.yaml" in str(e.value)


def test_cross_checks():
    cfg = load("config/smoke.yaml")
    bad = copy.deepcopy(cfg)
    bad["sampling"]["plan"].append({"run": "ar", "sampler": "duo_ancestral", "steps": [4]})
    with pytest.raises(ConfigError, match="does not apply to run 'ar'"):
        check_config(bad, SCHEMA)
    bad = copy.deepcopy(cfg)
    n = len(bad["sampling"]["plan"])
    bad["sampling"]["plan"].append({"run": "nope", "sampler": "ar", "steps": [4]})
    with pytest.raises(ConfigError, match=f"sampling.plan.{n}.run"):
        check_config(bad, SCHEMA)
    bad = copy.deepcopy(cfg)
    bad["evaluation"]["judge"] = "mdlm"
    with pytest.raises(ConfigError, match="judge run must have algo 'ar'"):
        check_config(bad, SCHEMA)


def test_plan_sample_counts_per_entry():
    """The paper config samples the ReMDM table's files 5000 times (ReMDM's protocol; MAUVE's clusters depend on
    n) and DUO's 800 elsewhere; two entries that plan one file with different counts are refused."""
    owt = load("config/paper/owt.yaml")
    jobs = plan_jobs(owt)
    counts = {(run, sampler, steps): sizes["num_samples"] for (run, sampler, steps, _), sizes in jobs.items()}
    assert counts["mdlm", "mdlm_p09", 128] == counts["mdlm", "remdm_loop", 1024] == counts["mdlm", "remdm_fb", 4096] == 5000
    assert counts["mdlm", "mdlm_ancestral", 1024] == 800 and owt["sampling"]["variants"]["remdm_cap"]["eta"] == 0.04
    assert counts["mdlm", "mdlm_ancestral", 5000] == 64  # the MDLM README's speed table
    assert resolve_variant({}, "remdm_cap")["eta"] == 0.04  # the ReMDM paper's eta_cap for T < L (script 0.008)
    assert resolve_variant({}, "remdm_loop")["boundary"] == "original"
    bad = load("config/smoke.yaml")
    entry = dict(bad["sampling"]["plan"][0])
    bad["sampling"]["plan"].append({**entry, "num_samples": 7})
    with pytest.raises(ConfigError, match="planned twice with different sizes"):
        check_config(bad, SCHEMA)


def test_resolve_run_merges_one_level_deep():
    cfg = {"train_defaults": {"model": {"size": "nano", "dropout": 0.1}, "trainer": {"max_steps": 5}},
           "runs": {"a": {"algo": "ar", "model": {"size": "mini"}}}}
    run = resolve_run(cfg, "a")
    assert run == {"algo": "ar", "model": {"size": "mini", "dropout": 0.1}, "trainer": {"max_steps": 5}}
    with pytest.raises(ConfigError, match="unknown run"):
        resolve_run(cfg, "b")


def test_sampler_table_matches_registry():
    from dlm.sampling import SAMPLERS, get_sampler

    assert SAMPLERS == sorted(SAMPLER_ALGOS)
    for name, algos in SAMPLER_ALGOS.items():
        fn, _ = get_sampler(name, algos[0])  # every registered sampler imports
        assert callable(fn)


def test_variants_resolve_and_bad_settings_are_named():
    cfg = load("config/smoke.yaml")
    v = resolve_variant(cfg, "remdm_loop_p09")
    assert v["sampler"] == "remdm_loop" and v["nucleus_p"] == 0.9 and v["eta"] == 0.02  # paper default kept
    assert resolve_variant(cfg, "mdlm_ancestral")["nucleus_rule"] == "keep_crossing"
    bad = copy.deepcopy(cfg)
    bad["sampling"]["variants"]["x"] = {"sampler": "remdm_cap", "etaa": 0.1}
    bad["sampling"]["plan"].append({"run": "mdlm", "sampler": "x", "steps": [4]})
    with pytest.raises(ConfigError, match=r"sampling.variants.x.etaa': unknown setting of sampler 'remdm_cap'"):
        check_config(bad, SCHEMA)
    bad = copy.deepcopy(cfg)
    bad["sampling"]["plan"].append({"run": "mdlm", "sampler": "nonesuch", "steps": [4]})
    with pytest.raises(ConfigError, match="nonesuch"):
        check_config(bad, SCHEMA)
    bad = copy.deepcopy(cfg)
    bad["sampling"]["variants"]["y"] = {"sampler": "mdlm_ancestral", "condition": "middle"}
    with pytest.raises(ConfigError, match="sampling.variants.y.condition"):
        check_config(bad, SCHEMA)


def test_distill_cross_checks():
    cfg = load("config/smoke.yaml")
    bad = copy.deepcopy(cfg)
    bad["runs"]["duo_dcd"]["distill"]["from"] = "mdlm"
    with pytest.raises(ConfigError, match="distils a run of algo"):
        check_config(bad, SCHEMA)
    bad = copy.deepcopy(cfg)
    del bad["runs"]["mdlm_sdtt"]["distill"]
    with pytest.raises(ConfigError, match="runs.mdlm_sdtt.distill': missing"):
        check_config(bad, SCHEMA)
    bad = copy.deepcopy(cfg)
    bad["runs"]["mdlm"]["distill"] = {"from": "ar", "rounds": 1}
    with pytest.raises(ConfigError, match="does not apply to algo 'mdlm'"):
        check_config(bad, SCHEMA)


def test_defaults_fill_train_defaults_but_not_runs():
    from dlm.config import apply_defaults

    cfg = {"train_defaults": {"trainer": {"batch_size": 16}}, "runs": {"a": {"algo": "ar", "trainer": {"max_steps": 3}}}}
    apply_defaults(cfg, SCHEMA)
    assert cfg["data"]["packing"] == "wrap" and cfg["tokenizer"]["vocab_size"] == 4096
    assert cfg["train_defaults"]["optim"]["lr"] == 0.0003  # schema default
    assert cfg["train_defaults"]["trainer"]["batch_size"] == 16  # user value kept
    assert cfg["runs"]["a"] == {"algo": "ar", "trainer": {"max_steps": 3}}  # untouched...
    run = resolve_run(cfg, "a")  # ...so the run inherits train_defaults, not the schema defaults
    assert run["trainer"]["batch_size"] == 16 and run["trainer"]["max_steps"] == 3


def test_defaults_do_not_hand_every_method_every_algo_arg():
    import yaml

    from dlm.config import ALGO_ARGS, apply_defaults, check_config, resolve_run

    schema = str(ROOT / "config" / "schema.yaml")
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    check_config(cfg, schema)
    apply_defaults(cfg, schema)
    for run in cfg["runs"]:
        hp = resolve_run(cfg, run)
        assert set(hp.get("algo_args", {})) <= set(ALGO_ARGS[hp["algo"]]), (run, hp.get("algo_args"))
    assert resolve_run(cfg, "mdlm")["trainer"]["grad_clip"] == 1.0  # other schema defaults are still filled


def test_seed_lists_expand_into_runs():
    from dlm.config import expand_seeds

    cfg = load("config/smoke.yaml")
    cfg["runs"]["duo"]["trainer"] = {"seeds": [3, 5, 7]}
    cfg["runs"]["duo_dcd"]["trainer"] = {"max_steps": 4, "seeds": [3, 5]}
    check_config(cfg, SCHEMA, "smoke.yaml")
    before = resolve_run(cfg, "mdlm")
    group = expand_seeds(cfg)
    assert group["duo_s5"] == group["duo_s7"] == group["duo"] == "duo" and group["mdlm"] == "mdlm"
    assert [resolve_run(cfg, r)["trainer"]["seed"] for r in ("duo", "duo_s5", "duo_s7")] == [3, 5, 7]
    assert "seeds" not in resolve_run(cfg, "duo")["trainer"]
    assert resolve_run(cfg, "duo_s5")["algo_args"] == resolve_run(cfg, "duo")["algo_args"]
    assert resolve_run(cfg, "mdlm") == before  # runs without a seed list are untouched
    # a distilled seed copy starts from the base's run of the same seed
    assert cfg["runs"]["duo_dcd"]["distill"]["from"] == "duo"
    assert cfg["runs"]["duo_dcd_s5"]["distill"]["from"] == "duo_s5"
    # train_defaults seeds: every run; a clash with an existing name is an error naming the key
    cfg = load("config/smoke.yaml")
    cfg["train_defaults"]["trainer"]["seeds"] = [1, 2]
    cfg["runs"]["ar_s2"] = {"algo": "ar"}
    with pytest.raises(ConfigError, match="runs.ar.trainer.seeds.*'ar_s2'"):
        expand_seeds(cfg)
    cfg = load("config/smoke.yaml")
    cfg["runs"]["ar"]["trainer"] = {"seeds": [1, 1]}
    with pytest.raises(ConfigError, match="runs.ar.trainer.seeds"):
        check_config(cfg, SCHEMA, "smoke.yaml")


def test_gpu_tier_is_the_default_dag_with_a_larger_training_budget():
    """config/gpu.yaml: the embedded default's runs, data, samplers and claims, with more model and more steps."""
    default, gpu = (yaml.safe_load((ROOT / "config" / name).read_text()) for name in ("config.yaml", "gpu.yaml"))
    for key in ("corpus", "tokenizer", "data", "integral", "zero_shot"):
        assert gpu[key] == default[key], key
    assert gpu["runs"].keys() == default["runs"].keys()
    assert [(r["algo"], r.get("trainer", {}).get("seeds")) for r in gpu["runs"].values()] == \
        [(r["algo"], r.get("trainer", {}).get("seeds")) for r in default["runs"].values()]
    assert gpu["sampling"]["plan"] == default["sampling"]["plan"]
    assert gpu["sampling"]["variants"] == default["sampling"]["variants"]
    assert gpu["evaluation"].get("claims") == default["evaluation"].get("claims")
    g, d = gpu["train_defaults"], default["train_defaults"]
    tokens = lambda t: t["max_steps"] * t["batch_size"]  # noqa: E731
    assert tokens(g["trainer"]) >= 10 * tokens(d["trainer"]) and g["model"]["size"] != d["model"]["size"]
