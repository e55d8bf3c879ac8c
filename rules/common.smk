# Helpers, input functions and wildcard constraints. The only .smk file with Python functions.
import json
import os
import re
import sys

from dlm.config import apply_defaults, check_config, expand_seeds, resolve_run, resolve_variant, zero_shot_insert_eos

# validate against config/schema.yaml before anything runs (errors name key, value and expectation),
# then fill the schema defaults (run entries inherit train_defaults instead; see dlm.config)
SCHEMA = os.path.join(workflow.basedir, "config", "schema.yaml")
check_config(config, SCHEMA)
apply_defaults(config, SCHEMA)
# trainer.seeds: one run per training seed (NAME, NAME_s2, ...); SEED_GROUP maps each run to its config entry
SEED_GROUP = expand_seeds(config)


CORPUS = config["corpus"]["name"]
RUNS = sorted(config["runs"])
IMPORTED = sorted(r for r in RUNS if config["runs"][r].get("import"))
DISTILLED = sorted(r for r in RUNS if config["runs"][r].get("distill"))
TRAINED = sorted(r for r in RUNS if r not in IMPORTED and r not in DISTILLED)


def srun_launched(run):
    """Whether the run's ranks start as srun tasks (trainer.launch; auto: srun when num_nodes > 1)."""
    tr = resolve_run(config, run).get("trainer", {})
    launch = tr.get("launch", "auto")
    return launch == "srun" or (launch == "auto" and int(tr.get("num_nodes", 1)) > 1)


SRUN_TRAINED = [r for r in TRAINED if srun_launched(r)]
ONE_TASK_TRAINED = [r for r in TRAINED if r not in SRUN_TRAINED]


wildcard_constraints:
    corpus=r"[A-Za-z0-9_.-]+",
    run="|".join(RUNS),
    sampler=r"[a-z][a-z0-9_]*",
    steps=r"\d+",
    seed=r"\d+",


def by_attempt(base):
    """A resource that grows with Snakemake's attempt (retries): base on the first, 2 x base on the second..."""
    return lambda wildcards, attempt: base * attempt


def run_gpus(wildcards):
    """GPUs a training or distillation job asks for: the run's trainer.devices (DDP inside one job)."""
    return int(resolve_run(config, wildcards.run).get("trainer", {}).get("devices", 1))


def run_trainer(wildcards):
    return resolve_run(config, wildcards.run).get("trainer", {})


def srun_tasks(wildcards):
    """Slurm task geometry of an srun-launched run: one task per device on each node."""
    tr = run_trainer(wildcards)
    devices, nodes = int(tr.get("devices", 1)), int(tr.get("num_nodes", 1))
    return {"nodes": nodes, "devices": devices, "world": devices * nodes}


def srun_launcher(wildcards):
    """srun with the task geometry spelled out (Snakemake's job step does not pass the allocation's on)."""
    g = srun_tasks(wildcards)
    return f"srun --nodes={g['nodes']} --ntasks={g['world']} --ntasks-per-node={g['devices']}"


def train_hp_json(wildcards, input):
    """The run's resolved settings for `dlm train --hp` (the integral cache is passed as --integral)."""
    return json.dumps(resolve_run(config, wildcards.run))


def integral_arg(wildcards, input):
    return f"--integral {input.integral}" if "integral" in input.keys() else ""


def only(runs):
    """A wildcard constraint matching exactly these run names (none: matches nothing)."""
    return "|".join(re.escape(r) for r in runs) or "(?!)"


def tokenizer_id():
    """A path-safe name for the tokenizer: CORPUS-bpeK, or the sanitised pretrained name."""
    tok = config["tokenizer"]
    if tok["kind"] == "bpe":
        return f"{CORPUS}-bpe{tok['vocab_size']}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "--", tok["name_or_path"]).strip("-")


def corpus_inputs(wildcards):
    """Local files the corpus is read from (text_files; local hf paths and data_files): inputs of the corpus
    rule, so that a changed file reruns the corpus and everything that depends on it."""
    src = config["corpus"]["source"]
    if src["kind"] == "text_files":
        return [src["train"], src["valid"]]
    if src["kind"] == "hf":
        files = src.get("data_files") or {}
        paths = [src["path"]] + [p for v in (files.values() if isinstance(files, dict) else [files])
                                 for p in (v if isinstance(v, list) else [v])]
        return [p for p in paths if isinstance(p, str) and os.path.isfile(p)]
    return []


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


def distill_inputs(wildcards):
    """Round k starts from round k-1 (round 1: the base run's final checkpoint); DCD reads the integral cache
    (its alpha_t comes from the Gaussian-to-discrete transformation, as in DUO)."""
    run, k = wildcards.run, int(wildcards.k)
    spec = config["runs"][run]["distill"]
    if not 1 <= k <= spec["rounds"]:
        raise ValueError(f"runs.{run}.distill.rounds is {spec['rounds']}: no round {k}")
    init = f"results/models/{run}/round_{k - 1}.ckpt" if k > 1 else f"results/models/{spec['from']}/final.ckpt"
    inputs = {"data": f"results/data/{CORPUS}/packed", "init": init}
    if run_algo(run) == "dcd":
        inputs["integral"] = integral_path()
    return inputs


def last_round(wildcards):
    return f"results/models/{wildcards.run}/round_{config['runs'][wildcards.run]['distill']['rounds']}.ckpt"


# the papers' published numbers, shown beside ours in the tables of a paper config (dlm.report.paper_values)
PAPER_VALUES = config["evaluation"]["paper_values"] or os.path.join(workflow.basedir, "config", "paper_values.yaml")


def judge_is_run():
    return config["evaluation"]["judge"] in config["runs"]


def judge_input(wildcards):
    judge = config["evaluation"]["judge"]
    return [f"results/models/{judge}/final.ckpt"] if judge_is_run() else []


def judge_arg(wildcards, input):
    return input.judge[0] if judge_is_run() else config["evaluation"]["judge"]


def sample_jobs():
    """(run, sampler variant, steps, seed) for every planned sample file (plan order, no duplicates)."""
    jobs = []
    for entry in config["sampling"]["plan"]:
        for steps in entry["steps"]:
            for seed in entry.get("seeds", config["sampling"]["seeds"]):
                job = (entry["run"], entry["sampler"], steps, seed)
                if job not in jobs:
                    jobs.append(job)
    return jobs


def sample_count(wildcards):
    """Samples in a planned file: its plan entry's num_samples, else sampling.num_samples (the config check makes
    every entry that plans the same file agree)."""
    for entry in config["sampling"]["plan"]:
        if (entry["run"] == wildcards.run and entry["sampler"] == wildcards.sampler
                and int(wildcards.steps) in entry["steps"]
                and int(wildcards.seed) in entry.get("seeds", config["sampling"]["seeds"])):
            return entry.get("num_samples", config["sampling"]["num_samples"])
    return config["sampling"]["num_samples"]


def max_sample_count():
    """The largest sample count of any planned file (the MAUVE references are drawn for it)."""
    counts = [e.get("num_samples", config["sampling"]["num_samples"]) for e in config["sampling"]["plan"]]
    return max([config["sampling"]["num_samples"], *counts])


def variant(wildcards):
    """The full settings of the sampler variant of a sample file (a changed setting reruns it)."""
    return resolve_variant(config, wildcards.sampler)


def sample_inputs(wildcards):
    """The checkpoint, and the packed data when the variant takes held-out prompts."""
    inputs = {"ckpt": f"results/models/{wildcards.run}/final.ckpt"}
    prompts = config["sampling"]["prompts"]
    if variant(wildcards)["condition"] != "none" and prompts["source"] == "heldout":
        inputs["data"] = f"results/data/{CORPUS}/packed"
    elif variant(wildcards)["condition"] != "none":
        inputs["prompts"] = prompts["path"]
    return inputs


def gen_ppl_whole(wildcards):
    """Score a semi-autoregressive file (samples longer than a block) over its whole length in chunks of the
    judge's context, as MDLM (evaluation.gen_ppl_semi_ar: whole), or truncated like every file (truncate)."""
    return variant(wildcards)["sampler"] == "mdlm_semi_ar" and config["evaluation"]["gen_ppl_semi_ar"] == "whole"


def gen_ppl_jsons():
    return [f"results/eval/{r}/gen_{s}_T{t}_s{seed}.json" for r, s, t, seed in sample_jobs()]


def job_settings(job):
    """(algo, full sampler settings) of a planned sample job."""
    run, sampler, _, _ = job
    return run_algo(run), resolve_variant(config, sampler)


# which sample files each sampler table reads (a changed setting reruns only the tables that read it)
def _plain(s):
    return s["condition"] == "none" and not s["self_correct"]


SAMPLER_TABLES = {
    "distill": lambda algo, s: _plain(s) and algo in ("duo", "udlm", "dcd", "mdlm", "sdtt")
    and s["sampler"] in ("duo_ancestral", "duo_greedy_tail", "mdlm_ancestral"),
    "remdm": lambda algo, s: _plain(s) and algo == "mdlm"
    and (s["sampler"].startswith("remdm_") or s["sampler"] == "mdlm_ancestral"),
    "sampler_speed": lambda algo, s: _plain(s),
    "semi_ar": lambda algo, s: _plain(s) and s["sampler"] in ("mdlm_semi_ar", "mdlm_ancestral") and algo == "mdlm",
    "self_correction": lambda algo, s: bool(s["self_correct"]),
}


def gen_jsons_for(table):
    """Gen-PPL JSONs of the planned sample files that `table` reads."""
    keep = SAMPLER_TABLES[table]
    return [f"results/eval/{r}/gen_{s}_T{t}_s{seed}.json" for r, s, t, seed in sample_jobs()
            if keep(*job_settings((r, s, t, seed)))]


def plain_jobs():
    """The planned unconditional, not self-corrected sample files (the papers' protocol: MAUVE, the frontier)."""
    return [job for job in sample_jobs() if _plain(job_settings(job)[1])]


def mauve_jsons():
    """MAUVE JSONs of the plain sample files (`plain_jobs`)."""
    return [f"results/eval/{r}/mauve_{s}_T{t}_s{seed}.json" for r, s, t, seed in plain_jobs()]


def mauve_jsons_for(table):
    """The MAUVE JSONs matching the gen-PPL JSONs that `table` reads (the ReMDM table shows MAUVE; others none)."""
    if table != "remdm":
        return []
    keep = SAMPLER_TABLES[table]
    return [f"results/eval/{r}/mauve_{s}_T{t}_s{seed}.json" for r, s, t, seed in sample_jobs()
            if keep(*job_settings((r, s, t, seed)))]


PAPER_SAMPLER_TABLES = ("distill", "remdm")  # sampler tables with the papers' values beside ours


def sampler_table_options(wildcards):
    return {"dataset": CORPUS} if wildcards.table in PAPER_SAMPLER_TABLES else {}


def sampler_table_refs(wildcards):
    """The held-out text's rows of a sampler table (its gen PPL; for the ReMDM table also its MAUVE) and the
    papers' values (for the tables they report)."""
    refs = {"reference": "results/eval/reference/gen_heldout.json"}
    if wildcards.table in PAPER_SAMPLER_TABLES:
        refs["paper"] = PAPER_VALUES
    if mauve_jsons_for(wildcards.table):
        refs["reference_mauve"] = "results/eval/reference/mauve_heldout.json"
    return refs


def mauve_params():
    """Every MAUVE setting (evaluation.mauve) as params of the mauve rules, so a changed one reruns them."""
    m = config["evaluation"]["mauve"]
    keys = ("featurizer", "max_text_length", "batch_size", "num_buckets", "scaling_factor", "kmeans_seeds",
            "kmeans_explained_var", "kmeans_num_redo", "kmeans_max_iter", "divergence_curve_discretization_size",
            "device")
    return {k: m[k] for k in keys}


def sampler_tables():
    """The sampler tables this config has data for (semi-AR and distillation need their own samplers)."""
    jobs = [job_settings(j) for j in sample_jobs()]
    need = {"distill": any(a in ("dcd", "sdtt") for a, _ in jobs),
            "remdm": any(s["sampler"].startswith("remdm_") for _, s in jobs),
            "sampler_speed": any(_plain(s) for _, s in jobs),
            "semi_ar": any(s["sampler"] == "mdlm_semi_ar" for _, s in jobs),
            "self_correction": any(s["self_correct"] for _, s in jobs)}
    return [t for t, ok in need.items() if ok]


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


# zero-shot perplexity (rules/zero_shot.smk): corpora by name, in config order
ZERO_SHOT = list(config["zero_shot"]["corpora"])


def zero_shot_runs():
    """Runs scored on the zero-shot corpora: zero_shot.runs, or (null) every run except the judge."""
    runs = config["zero_shot"].get("runs")  # a key named `runs` gets no schema default (dlm.config.NOT_FILLED)
    if runs is None:
        return [r for r in RUNS if r != config["evaluation"]["judge"]]
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        raise ValueError(f"key 'zero_shot.runs': value {unknown} is invalid: expected runs of this config, one of {RUNS}")
    return list(runs)


def zero_shot_jsons():
    return [f"results/eval/{r}/zero_shot.json" for r in zero_shot_runs()] if ZERO_SHOT else []


def zero_shot_packed(wildcards):
    """The run's packed zero-shot corpora: with an EOS after every document (packed) or without (packed_noeos), by
    zero_shot.insert_eos (dlm.config.zero_shot_insert_eos); pad packing has no separator: always packed."""
    eos = config["data"]["packing"] != "wrap" or zero_shot_insert_eos(config, wildcards.run, SEED_GROUP.get(wildcards.run))
    return [f"results/data/zero_shot/{zs}/{'packed' if eos else 'packed_noeos'}" for zs in ZERO_SHOT]


def zero_shot_corpus_inputs(wildcards):
    """Local files a zero-shot corpus is read from (text_files; a local jsonl or hf data_files): inputs of its
    rule, so that an edited file reruns the corpus and what depends on it."""
    src = config["zero_shot"]["corpora"][wildcards.zs]
    files = src.get("data_files") or {}
    paths = list(src.get("files") or []) + [src.get("path")] + [
        p for v in (files.values() if isinstance(files, dict) else [files]) for p in (v if isinstance(v, list) else [v])]
    return [p for p in paths if isinstance(p, str) and os.path.isfile(p)]


# ---- report: figures, compute cost, paper and table targets (rules/report.smk) ----
def table_files(*names):
    return expand("results/tables/{table}.{ext}", table=names, ext=["csv", "md", "tex"])


def figure_files(*names):
    return expand("results/figures/{figure}.{ext}", figure=names, ext=["pdf", "png"])


def frontier_jsons():
    """Gen-PPL JSONs of the plain sample files (`plain_jobs`: the frontier's points)."""
    return [f"results/eval/{r}/gen_{s}_T{t}_s{seed}.json" for r, s, t, seed in plain_jobs()]


def training_curves():
    """Every training-curve CSV (dlm.train_log) with its run, seed group, round (0: trained) and teacher."""
    curves = [{"csv": f"results/models/{r}/final_metrics.csv", "run": r, "group": SEED_GROUP.get(r, r), "round": 0,
               "from": None} for r in TRAINED]
    for r in DISTILLED:
        spec = config["runs"][r]["distill"]
        curves += [{"csv": f"results/models/{r}/round_{k}_metrics.csv", "run": r, "group": SEED_GROUP.get(r, r),
                    "round": k, "from": spec["from"]} for k in range(1, spec["rounds"] + 1)]
    return curves


def training_curve_csvs():
    return [c["csv"] for c in training_curves()]


def training_curve_params():
    return [{k: v for k, v in c.items() if k != "csv"} for c in training_curves()]


def benchmark_files():
    """The benchmark TSV of every heavy job of the DAG (the compute-cost table's inputs; a benchmark file is a
    product of its job, so the table waits for every job it reports)."""
    files = [f"benchmarks/train/{r}.tsv" for r in TRAINED]
    files += [f"benchmarks/distill/{r}/round_{k}.tsv" for r in DISTILLED
              for k in range(1, config["runs"][r]["distill"]["rounds"] + 1)]
    files += [f"benchmarks/eval/{r}/val_ppl.tsv" for r in RUNS]
    files += [p.replace("results/eval/", "benchmarks/eval/").replace(".json", ".tsv") for p in zero_shot_jsons()]
    jobs = sample_jobs()
    files += [f"benchmarks/sample/{r}/{s}_T{t}_s{seed}.tsv" for r, s, t, seed in jobs]
    files += [f"benchmarks/eval/{r}/gen_{s}_T{t}_s{seed}.tsv" for r, s, t, seed in jobs]
    if jobs:
        files.append("benchmarks/eval/reference/gen_heldout.tsv")
        if mauve_jsons():
            files += [p.replace("results/eval/", "benchmarks/eval/").replace(".json", ".tsv") for p in mauve_jsons()]
            files.append("benchmarks/eval/reference/mauve_heldout.tsv")
    return files


def run_algos():
    return {r: run_algo(r) for r in RUNS}


def report_targets():
    """The figures and the compute-cost table (appended to all_targets)."""
    targets = table_files("cost") + figure_files("training_curves")
    if config["sampling"]["plan"]:
        targets += figure_files("entropy_steps")
        if frontier_jsons():
            targets += figure_files("frontier")
        if mauve_jsons():
            targets += figure_files("mauve_steps")
    return targets


# each paper's tables and figures (a target rule per paper lists those this config produces)
PAPERS = {
    "duo_paper": {"tables": ["val_ppl", "zero_shot", "duo_curriculum", "gen_ppl", "distill", "sampler_speed", "cost"],
                  "figures": ["gen_ppl_steps", "entropy_steps", "mauve_steps", "frontier", "training_curves"]},
    "mdlm_paper": {"tables": ["val_ppl", "zero_shot", "gen_ppl", "semi_ar", "sampler_speed", "cost"],
                   "figures": ["gen_ppl_steps", "entropy_steps", "training_curves"]},
    "remdm_paper": {"tables": ["gen_ppl", "remdm", "sampler_speed"],
                    "figures": ["gen_ppl_steps", "entropy_steps", "mauve_steps", "frontier"]},
    "gidd_paper": {"tables": ["val_ppl", "zero_shot", "gidd_pu", "gen_ppl", "self_correction"],
                   "figures": ["gen_ppl_steps", "entropy_steps", "frontier", "training_curves"]},
}


def paper_targets(paper):
    """The tables and figures of `paper` (a key of PAPERS) that this config's DAG produces."""
    available = set(all_targets())
    wanted = table_files(*PAPERS[paper]["tables"]) + figure_files(*PAPERS[paper]["figures"])
    return [f for f in wanted if f in available]


def all_targets():
    targets = [integral_path()] + val_ppl_jsons() + table_files("val_ppl")
    if ZERO_SHOT and zero_shot_runs():
        targets += zero_shot_jsons() + table_files("zero_shot")
    if any(run_algo(r) == "duo" for r in RUNS):
        targets += table_files("duo_curriculum")
    if any(run_algo(r) == "gidd" for r in RUNS):
        targets += table_files("gidd_pu")
    if config["sampling"]["plan"]:
        targets += gen_ppl_jsons()
        if mauve_jsons():
            targets += mauve_jsons() + ["results/eval/reference/mauve_heldout.json"]
        targets += table_files("gen_ppl") + figure_files("gen_ppl_steps") + table_files(*sampler_tables())
    targets += report_targets()
    return targets
