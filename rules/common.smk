# Helpers, input functions and wildcard constraints. The only .smk file with Python functions.
import json
import os
import re
import sys

import yaml

from dlm.config import (apply_defaults, check_config, claim_sample_key, expand_seeds, plan_jobs, plan_round_runs, read_claims,
                        resolve_run, resolve_variant,
                        zero_shot_insert_eos)
from dlm.checkpoints.registry import expand_released, import_checks, use_ema

# runs.NAME.released: a checkpoint of workflow_src/dlm/checkpoints/registry.yaml (rules/import.smk); the run gets
# the entry's algo (and tokenizer) before validation. RELEASED maps each such run to its registry entry.
RELEASED = expand_released(config)
# validate against config/schema.yaml before anything runs (errors name key, value and expectation),
# then fill the schema defaults (run entries inherit train_defaults instead; see dlm.config)
SCHEMA = os.path.join(workflow.basedir, "config", "schema.yaml")
check_config(config, SCHEMA)
apply_defaults(config, SCHEMA)
# trainer.seeds: one run per training seed (NAME, NAME_s2, ...); SEED_GROUP maps each run to its config entry
SEED_GROUP = expand_seeds(config)


CORPUS = config["corpus"]["name"]
RUNS = sorted(config["runs"])
IMPORTED = sorted(r for r in RUNS if config["runs"][r].get("import") or r in RELEASED)
DISTILLED = sorted(r for r in RUNS if config["runs"][r].get("distill"))
TRAINED = sorted(r for r in RUNS if r not in IMPORTED and r not in DISTILLED)


def srun_launched(run):
    """Whether the run's ranks start as srun tasks (trainer.launch; auto: srun when num_nodes > 1)."""
    tr = resolve_run(config, run).get("trainer", {})
    launch = tr.get("launch", "auto")
    return launch == "srun" or (launch == "auto" and int(tr.get("num_nodes", 1)) > 1)


SRUN_TRAINED = [r for r in TRAINED if srun_launched(r)]
ONE_TASK_TRAINED = [r for r in TRAINED if r not in SRUN_TRAINED]
# sampled rounds of distilled runs (sampling.plan rounds): RUN_roundK -> (RUN, K), sampled from round_K.ckpt
ROUND_RUNS = plan_round_runs(config)
# every sample file of the plan with its num_samples and batch_size
PLAN_JOBS = plan_jobs(config)


wildcard_constraints:
    corpus=r"[A-Za-z0-9_.-]+",
    run="|".join(RUNS + sorted(ROUND_RUNS)),
    sampler=r"[a-z][a-z0-9_]*",
    steps=r"\d+",
    seed=r"\d+",


def by_attempt(base):
    """A resource that grows with Snakemake's attempt (retries): base on the first, 2 x base on the second...
    For jobs that cannot resume (evaluation, sampling), where a retry after running out of memory or time needs
    more; training and distillation ask for the same on every attempt (they continue from last.ckpt, and a
    time limit requeues them without an attempt: dlm.resume)."""
    return lambda wildcards, attempt: base * attempt


def run_gpus(wildcards):
    """GPUs a training or distillation job asks for: the run's trainer.devices (DDP inside one job)."""
    return int(run_trainer(wildcards).get("devices", 1))


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
# the claims file: a relative path is the working directory's, else the workflow's (config/claims_smoke.yaml)
CLAIMS = config["evaluation"]["claims"] or os.path.join("config", "claims.yaml")
if not os.path.isabs(CLAIMS) and not os.path.exists(CLAIMS):
    CLAIMS = os.path.join(workflow.basedir, CLAIMS)


def judge_is_run():
    return config["evaluation"]["judge"] in config["runs"]


def judge_input(wildcards):
    judge = config["evaluation"]["judge"]
    return [f"results/models/{judge}/final.ckpt"] if judge_is_run() else []


def judge_arg(wildcards, input):
    return input.judge[0] if judge_is_run() else config["evaluation"]["judge"]


def sample_jobs():
    """(run, sampler variant, steps, seed) for every planned sample file (plan order, no duplicates)."""
    return list(PLAN_JOBS)


def sample_size(key):
    """num_samples or batch_size of a sample file (its plan entry's, else sampling's: also for a file asked for
    as a target without a plan entry), for the sample rule."""
    return lambda wildcards: PLAN_JOBS.get((wildcards.run, wildcards.sampler, int(wildcards.steps),
                                            int(wildcards.seed)), config["sampling"])[key]


def max_sample_count():
    """The largest sample count of the files MAUVE scores (`plain_jobs`; the references are drawn for it)."""
    return max([config["sampling"]["num_samples"], *(PLAN_JOBS[job]["num_samples"] for job in plain_jobs())])


def variant(wildcards):
    """The full settings of the sampler variant of a sample file (a changed setting reruns it)."""
    return resolve_variant(config, wildcards.sampler)


def sample_inputs(wildcards):
    """The checkpoint, and the packed data when the variant takes held-out prompts."""
    run, k = ROUND_RUNS.get(wildcards.run, (wildcards.run, None))
    inputs = {"ckpt": f"results/models/{run}/round_{k}.ckpt" if k else f"results/models/{run}/final.ckpt"}
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
    "remdm": lambda algo, s: _plain(s)
    and ((algo == "mdlm" and (s["sampler"].startswith("remdm_") or s["sampler"] == "mdlm_ancestral"))
         or (algo == "sedd" and s["sampler"] == "sedd_analytic") or (algo == "ar" and s["sampler"] == "ar")),
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


PAPER_SAMPLER_TABLES = ("distill", "remdm", "sampler_speed")  # sampler tables with the papers' values beside ours


def sampler_table_options(wildcards):
    options = {"entropy_margin": config["evaluation"]["entropy_margin"]}  # the low-entropy note of gen-PPL tables
    return {**options, "dataset": CORPUS} if wildcards.table in PAPER_SAMPLER_TABLES else options


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
    the source itself when it is a local path (a changed file reruns the import); a released checkpoint's lock
    (its files' sha256, written on the first download and checked by the import)."""
    entry = config["runs"][wildcards.run]
    inputs = {}
    if not entry.get("tokenizer"):
        inputs["tokenizer"] = f"resources/tokenizers/{tokenizer_id()}"
    if wildcards.run in RELEASED:
        inputs["lock"] = released_lock(RELEASED[wildcards.run]["name"])
    elif os.path.exists(entry["import"]):
        inputs["src"] = entry["import"]
    return inputs


def released_lock(name):
    return f"resources/checkpoint_locks/{name}.json"


def released_source(name):
    """What the download of registry checkpoint `name` depends on (its params: a changed source refetches)."""
    e = next(e for e in RELEASED.values() if e["name"] == name)
    return {k: e.get(k) for k in ("name", "source", "sha256", "status")}


def released_import(wildcards):
    """The import settings of a released run: its registry entry's source, the checks the import makes
    (layout, length, time conditioning, p_uniform) and the weights it takes; None for other imports."""
    if wildcards.run not in RELEASED:
        return None
    e = RELEASED[wildcards.run]
    return {"entry": released_source(e["name"]), "expects": import_checks(e), "use_ema": use_ema(e),
            "local_dir": config["released"]["dir"]}


def run_length(run):
    """The context an imported run is built for (its `length`, or its registry entry's), None when unknown."""
    length = config["runs"][run].get("length")
    return length if length is not None else RELEASED.get(run, {}).get("expects", {}).get("length")


def fits_blocks(run):
    """Whether the packed blocks (data.block_length) are the run's context: a run built for another length (the
    released GIDD models: 512 tokens, against OWT's 1024-token blocks) gets no val-PPL or zero-shot job."""
    length = run_length(run)
    return length is None or int(length) == int(config["data"]["block_length"])


SCORED = [r for r in RUNS if fits_blocks(r)]  # runs with a val-PPL (and zero-shot) job


def run_algo(run):
    return resolve_run(config, ROUND_RUNS.get(run, (run,))[0])["algo"]


def val_ppl_jsons(algos=None):
    """Val-PPL JSONs of every run (and the unigram baseline), or only of runs whose algo is in `algos`."""
    if algos is not None:
        return [f"results/eval/{r}/val_ppl.json" for r in SCORED if run_algo(r) in algos]
    return [f"results/eval/{r}/val_ppl.json" for r in SCORED] + ["results/eval/unigram/val_ppl.json"]


def integral_path():
    i = config["integral"]
    return f"resources/integral/{tokenizer_id()}_g{i['gamma_min']}_{i['gamma_max']}_n{i['points']}.npz"


# zero-shot perplexity (rules/zero_shot.smk): corpora by name, in config order
ZERO_SHOT = list(config["zero_shot"]["corpora"])


def scored_runs(section, pool):
    """Runs an evaluation section scores: config[section].runs, or (null) every run of `pool` except the judge."""
    runs = config[section].get("runs")  # a key named `runs` gets no schema default (dlm.config.NOT_FILLED)
    if runs is None:
        return [r for r in pool if r != config["evaluation"]["judge"]]
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        raise ValueError(f"key '{section}.runs': value {unknown} is invalid: expected runs of this config, one of {RUNS}")
    return list(runs)


def zero_shot_runs():
    """Runs scored on the zero-shot corpora: zero_shot.runs, or (null) every run except the judge whose context is
    the packed block length (`fits_blocks`)."""
    return scored_runs("zero_shot", SCORED)


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


# downstream accuracy through lm-eval-harness (rules/downstream.smk): the tasks the pipeline builds, in config order
LOCAL_TASKS = [t for t in config["downstream"]["tasks"] if t in config["downstream"]["local"]]


def downstream_runs():
    """Runs scored on the downstream tasks: downstream.runs, or (null) every run except the judge (any context
    length: a request longer than a run's own is handled by downstream.overlong)."""
    return scored_runs("downstream", RUNS) if config["downstream"]["tasks"] else []


def downstream_jsons():
    return [f"results/eval/{r}/downstream.json" for r in downstream_runs()]


def downstream_task_files():
    """The YAML and JSONL of every local task (their rebuild reruns the downstream jobs)."""
    return [f"results/downstream/tasks/{t}/{name}" for t in LOCAL_TASKS for name in (f"{t}.yaml", "test.jsonl")]


# ---- report: figures, compute cost, paper and table targets (rules/report.smk) ----
def table_files(*names):
    return expand("results/tables/{table}.{ext}", table=names, ext=["csv", "md", "tex", "html"])


def distill_specs():
    """Teacher and rounds of every distilled run (the val-PPL table shows its steps as teacher + rounds x round)."""
    return {r: {"from": config["runs"][r]["distill"]["from"], "rounds": config["runs"][r]["distill"]["rounds"]}
            for r in DISTILLED}


def figure_files(*names):
    return expand("results/figures/{figure}.{ext}", figure=names, ext=["pdf", "png"])


def frontier_jsons():
    """Gen-PPL JSONs of the plain sample files (`plain_jobs`: the frontier's points)."""
    return [f"results/eval/{r}/gen_{s}_T{t}_s{seed}.json" for r, s, t, seed in plain_jobs()]


def training_curves():
    """Every training-curve CSV (dlm.train_log) with its run, seed group, round (0: trained), teacher and the size
    of its in-training validation (trainer.val_batches batches of trainer.batch_size blocks)."""

    def val_size(r):
        tr = resolve_run(config, r).get("trainer", {})
        return {"val_batches": tr.get("val_batches"), "batch_size": tr.get("batch_size")}

    curves = [{"csv": f"results/models/{r}/final_metrics.csv", "run": r, "group": SEED_GROUP.get(r, r), "round": 0,
               "from": None, **val_size(r)} for r in TRAINED]
    for r in DISTILLED:
        spec = config["runs"][r]["distill"]
        curves += [{"csv": f"results/models/{r}/round_{k}_metrics.csv", "run": r, "group": SEED_GROUP.get(r, r),
                    "round": k, "from": spec["from"], **val_size(r)} for k in range(1, spec["rounds"] + 1)]
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
    files += [f"benchmarks/eval/{r}/val_ppl.tsv" for r in SCORED]
    files += [p.replace("results/eval/", "benchmarks/eval/").replace(".json", ".tsv") for p in zero_shot_jsons()]
    files += [p.replace("results/eval/", "benchmarks/eval/").replace(".json", ".tsv") for p in downstream_jsons()]
    jobs = sample_jobs()
    files += [f"benchmarks/sample/{r}/{s}_T{t}_s{seed}.tsv" for r, s, t, seed in jobs]
    files += [f"benchmarks/eval/{r}/gen_{s}_T{t}_s{seed}.tsv" for r, s, t, seed in jobs]
    if jobs:
        files.append("benchmarks/eval/reference/gen_heldout.tsv")
        if mauve_jsons():
            files += [p.replace("results/eval/", "benchmarks/eval/").replace(".json", ".tsv") for p in mauve_jsons()]
            files.append("benchmarks/eval/reference/mauve_heldout.tsv")
    return files


def claims_inputs(wildcards):
    """What the claims table reads: the claims file, the val-PPL JSONs (with the unigram baseline's) and training
    benchmarks of the trained runs, the held-out text's gen-PPL row, and the gen-PPL and MAUVE JSONs (and, for
    same-samples claims, the sample files) of the samples its claims compare, so that a sampler no claim reads
    never reruns it (dlm.report.claims)."""
    inputs = {"spec": CLAIMS, "val": val_ppl_jsons(),  # with the unigram baseline's (vacuous matches)
              "bench": [f"benchmarks/train/{r}.tsv" for r in TRAINED]}
    claims = read_claims(CLAIMS)["claims"]
    if any(c["test"].startswith("downstream_") for c in claims):  # with the per-question results beside
        inputs["downstream"] = downstream_jsons()
        inputs["questions"] = [p.replace("downstream.json", "downstream_questions.jsonl") for p in downstream_jsons()]
    if not config["sampling"]["plan"]:
        return inputs
    sides = [(c["test"], c[k]) for c in claims for k in ("a", "b") if isinstance(c.get(k), dict)]
    wanted = {claim_sample_key(x) for _, x in sides}
    same = {claim_sample_key(x) for test, x in sides if test == "same_faster"}
    jobs = [job for job in sample_jobs() if (job[0], job[1], int(job[2])) in wanted]
    mauve = set(mauve_jsons())
    inputs["gen"] = [f"results/eval/{r}/gen_{s}_T{t}_s{seed}.json" for r, s, t, seed in jobs]
    inputs["mauve"] = [p for p in (f"results/eval/{r}/mauve_{s}_T{t}_s{seed}.json" for r, s, t, seed in jobs)
                       if p in mauve]
    inputs["samples"] = [f"results/samples/{r}/{s}_T{t}_s{seed}.jsonl" for r, s, t, seed in jobs
                         if (r, s, int(t)) in same]
    inputs["reference"] = "results/eval/reference/gen_heldout.json"
    return inputs


def run_algos():
    return {r: run_algo(r) for r in RUNS + sorted(ROUND_RUNS)}


def report_targets():
    """The figures and the compute-cost table (appended to all_targets)."""
    targets = table_files("cost") + (figure_files("training_curves") if training_curves() else [])
    if config["sampling"]["plan"]:
        targets += figure_files("entropy_steps")
        if frontier_jsons():
            targets += figure_files("frontier")
        if mauve_jsons():
            targets += figure_files("mauve_steps")
    return targets


# each paper's tables and figures (a target rule per paper lists those this config produces)
PAPERS = {
    "duo_paper": {"tables": ["val_ppl", "zero_shot", "duo_curriculum", "gen_ppl", "distill", "sampler_speed", "cost",
                             "images", "downstream"],
                  "figures": ["gen_ppl_steps", "entropy_steps", "mauve_steps", "frontier", "training_curves",
                              "images_samples"]},
    "mdlm_paper": {"tables": ["val_ppl", "zero_shot", "gen_ppl", "semi_ar", "sampler_speed", "cost"],
                   "figures": ["gen_ppl_steps", "entropy_steps", "training_curves"]},
    "remdm_paper": {"tables": ["gen_ppl", "remdm", "sampler_speed"],
                    "figures": ["gen_ppl_steps", "entropy_steps", "mauve_steps", "frontier"]},
    "gidd_paper": {"tables": ["val_ppl", "zero_shot", "gidd_pu", "gen_ppl", "self_correction", "downstream"],
                   "figures": ["gen_ppl_steps", "entropy_steps", "frontier", "training_curves"]},
}


def paper_targets(paper):
    """The tables and figures of `paper` (a key of PAPERS) that this config's DAG produces."""
    available = set(all_targets())
    wanted = table_files(*PAPERS[paper]["tables"]) + figure_files(*PAPERS[paper]["figures"])
    return [f for f in wanted if f in available]


def all_targets():
    integral = any(needs_integral(r) for r in TRAINED) or any(run_algo(r) == "dcd" for r in DISTILLED)
    targets = ([integral_path()] if integral else []) + val_ppl_jsons() + table_files("val_ppl")
    if ZERO_SHOT and zero_shot_runs():
        targets += zero_shot_jsons() + table_files("zero_shot")
    if downstream_runs():
        targets += downstream_jsons() + table_files("downstream")
    if any(run_algo(r) == "duo" for r in SCORED):
        targets += table_files("duo_curriculum")
    if any(run_algo(r) == "gidd" for r in SCORED):
        targets += table_files("gidd_pu")
    if config["sampling"]["plan"]:
        targets += gen_ppl_jsons()
        if mauve_jsons():
            targets += mauve_jsons() + ["results/eval/reference/mauve_heldout.json"]
        targets += table_files("gen_ppl") + figure_files("gen_ppl_steps") + table_files(*sampler_tables())
    targets += report_targets() + table_files("claims")
    targets += images_targets()
    return targets


# ---- images (rules/images.smk): pixels as tokens, FID / IS, the images table and figure ----
from dlm.config import image_config

IMG = config["images"]
IMG_CFG = image_config(IMG)  # train_defaults / runs / sampling of the images section, as resolve_run reads them
IMAGE_RUNS = sorted(IMG_CFG["runs"])
IMG_DIR = f"results/images/{IMG['dataset']['name']}"
IMG_CONDITIONS = {"class": "class", "none": "uncond"}  # plan condition -> file-name part


def image_run_params(wildcards):
    """The image run's resolved settings (images.train_defaults merged with images.runs.RUN)."""
    return resolve_run(IMG_CFG, wildcards.irun)


def image_sample_jobs():
    """(run, sampler variant, condition file part, steps, seed) of every planned image sample file."""
    jobs = []
    for entry in IMG["sampling"]["plan"]:
        for cond in entry.get("conditions", ["class"]):
            for steps in entry["steps"]:
                for seed in entry.get("seeds", IMG["sampling"]["seeds"]):
                    job = (entry["run"], entry["sampler"], IMG_CONDITIONS[cond], steps, seed)
                    if job not in jobs:
                        jobs.append(job)
    return jobs


def image_variant(wildcards):
    """The full settings of an image sample file's sampler variant (a changed setting reruns it)."""
    return resolve_variant(IMG_CFG, wildcards.isampler)


def image_guidance(wildcards):
    """The guidance weight of class-conditional files (unconditional ones take none: a changed weight reruns only
    the class-conditional samples)."""
    return IMG["sampling"]["guidance"] if wildcards.icond == "class" else None


def image_condition(wildcards):
    return {v: k for k, v in IMG_CONDITIONS.items()}[wildcards.icond]


def image_sample_files():
    return [f"{IMG_DIR}/samples/{r}/{s}_{c}_T{t}_s{seed}.npz" for r, s, c, t, seed in image_sample_jobs()]


def image_score_jsons():
    return [f"{IMG_DIR}/eval/{r}/{s}_{c}_T{t}_s{seed}.json" for r, s, c, t, seed in image_sample_jobs()]


def image_data_inputs(wildcards):
    """The CIFAR-10 archive when it exists (a changed file reruns the data; a missing one is the job's one-line
    error naming what to download)."""
    path = IMG["dataset"].get("path")
    return [path] if IMG["dataset"]["kind"] == "cifar10" and path and os.path.exists(path) else []


def image_feature_inputs(wildcards):
    """What the FID features need: the pipeline's classifier, or the Inception weights file when present."""
    ev = IMG["evaluation"]
    if ev["features"] == "classifier":
        return {"classifier": f"{IMG_DIR}/features/classifier.pt", "report": f"{IMG_DIR}/features/classifier.json"}
    weights = ev.get("inception_weights")
    return {"weights": weights} if weights and os.path.exists(weights) else {}


def images_targets():
    """The images table and sample grid (none without image runs or a sampling plan)."""
    if not IMAGE_RUNS or not image_sample_jobs():
        return []
    return table_files("images") + figure_files("images_samples")
