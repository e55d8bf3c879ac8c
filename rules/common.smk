# Helpers, input functions and wildcard constraints. The only .smk file with Python functions.
import os
import re

from dlm.config import apply_defaults, check_config, resolve_run

# validate against config/schema.yaml before anything runs (errors name key, value and expectation),
# then fill the schema defaults (run entries inherit train_defaults instead; see dlm.config)
SCHEMA = os.path.join(workflow.basedir, "config", "schema.yaml")
check_config(config, SCHEMA)
apply_defaults(config, SCHEMA)


CORPUS = config["corpus"]["name"]
RUNS = sorted(config["runs"])
IMPORTED = sorted(r for r in RUNS if config["runs"][r].get("import"))
TRAINED = sorted(r for r in RUNS if r not in IMPORTED)


wildcard_constraints:
    corpus=r"[A-Za-z0-9_.-]+",
    run="|".join(RUNS),
    sampler=r"[a-z_]+",
    steps=r"\d+",
    seed=r"\d+",


def only(runs):
    """A wildcard constraint matching exactly these run names (none: matches nothing)."""
    return "|".join(re.escape(r) for r in runs) or "(?!)"


def tokenizer_id():
    """A path-safe name for the tokenizer: CORPUS-bpeK, or the sanitised pretrained name."""
    tok = config["tokenizer"]
    if tok["kind"] == "bpe":
        return f"{CORPUS}-bpe{tok['vocab_size']}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "--", tok["name_or_path"]).strip("-")


def run_params(wildcards):
    return resolve_run(config, wildcards.run)


def needs_integral(run):
    """DUO's curriculum with the cached transformation reads the integral cache (DAG: integral -> train)."""
    hp = resolve_run(config, run)
    curriculum = (hp.get("algo_args") or {}).get("curriculum", {})
    return hp["algo"] == "duo" and curriculum.get("transform", "cache") == "cache"


def train_inputs(wildcards):
    inputs = {"data": f"results/data/{CORPUS}/packed"}
    if needs_integral(wildcards.run):
        inputs["integral"] = integral_path()
    return inputs


def judge_is_run():
    return config["evaluation"]["judge"] in config["runs"]


def judge_input(wildcards):
    judge = config["evaluation"]["judge"]
    return [f"results/models/{judge}/final.ckpt"] if judge_is_run() else []


def judge_arg(wildcards, input):
    return input.judge[0] if judge_is_run() else config["evaluation"]["judge"]


def sample_jobs():
    """(run, sampler, steps, seed) for every planned sample file."""
    jobs = []
    for entry in config["sampling"]["plan"]:
        for steps in entry["steps"]:
            for seed in config["sampling"]["seeds"]:
                jobs.append((entry["run"], entry["sampler"], steps, seed))
    return jobs


def gen_ppl_jsons():
    return [f"results/eval/{r}/gen_{s}_T{t}_s{seed}.json" for r, s, t, seed in sample_jobs()]


def import_inputs(wildcards):
    """The pipeline's tokenizer when the run names none (the imported model then decodes like the data), and
    the source itself when it is a local path (a changed file reruns the import)."""
    entry = config["runs"][wildcards.run]
    inputs = {}
    if not entry.get("tokenizer"):
        inputs["tokenizer"] = f"resources/tokenizers/{tokenizer_id()}"
    if os.path.exists(entry["import"]):
        inputs["src"] = entry["import"]
    return inputs


def run_algo(run):
    return resolve_run(config, run)["algo"]


def val_ppl_jsons(algos=None):
    """Val-PPL JSONs of every run (and the unigram baseline), or only of runs whose algo is in `algos`."""
    if algos is not None:
        return [f"results/eval/{r}/val_ppl.json" for r in RUNS if run_algo(r) in algos]
    return [f"results/eval/{r}/val_ppl.json" for r in RUNS] + ["results/eval/unigram/val_ppl.json"]


def integral_path():
    i = config["integral"]
    return f"resources/integral/{tokenizer_id()}_g{i['gamma_min']}_{i['gamma_max']}_n{i['points']}.npz"


def all_targets():
    targets = [integral_path()] + val_ppl_jsons()
    targets += expand("results/tables/val_ppl.{ext}", ext=["csv", "md", "tex"])
    if any(run_algo(r) == "duo" for r in RUNS):
        targets += expand("results/tables/duo_curriculum.{ext}", ext=["csv", "md", "tex"])
    if any(run_algo(r) == "gidd" for r in RUNS):
        targets += expand("results/tables/gidd_pu.{ext}", ext=["csv", "md", "tex"])
    if config["sampling"]["plan"]:
        targets += gen_ppl_jsons()
        targets += expand("results/tables/gen_ppl.{ext}", ext=["csv", "md", "tex"])
        targets += expand("results/figures/gen_ppl_steps.{ext}", ext=["pdf", "png"])
    return targets
