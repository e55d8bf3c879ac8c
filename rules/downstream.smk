# Downstream multiple-choice accuracy through lm-eval-harness (DUO Ch. II, GIDD): local tasks built from the
# held-out text in lm-eval's YAML format, every scored run as lm-eval's model "dlm", one table.


localrules:
    downstream_task,
    table_downstream,


rule downstream_task:
    input:
        text=f"results/data/{CORPUS}/raw/valid.jsonl",
        tokenizer=f"resources/tokenizers/{tokenizer_id()}",
    output:
        yaml="results/downstream/tasks/{task}/{task}.yaml",
        data="results/downstream/tasks/{task}/test.jsonl",
    wildcard_constraints:
        task=only(LOCAL_TASKS),
    params:
        spec=lambda wildcards: config["downstream"]["local"][wildcards.task],
        block_length=config["data"]["block_length"],
    log:
        "logs/downstream/task_{task}.log",
    conda:
        "../environment.yml"
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../workflow_src/dlm/scripts/downstream_task.py"


rule downstream_eval:
    input:
        ckpt="results/models/{run}/final.ckpt",
        tasks=downstream_task_files(),
    output:
        json="results/eval/{run}/downstream.json",
        questions="results/eval/{run}/downstream_questions.jsonl",
    wildcard_constraints:
        run=only(downstream_runs()),
    params:
        tasks=config["downstream"]["tasks"],
        local_dirs=[f"results/downstream/tasks/{t}" for t in LOCAL_TASKS],
        offline=set(config["downstream"]["tasks"]) <= set(LOCAL_TASKS),
        num_mc_samples=config["downstream"]["num_mc_samples"],
        batch_size=config["downstream"]["batch_size"],
        seed=config["downstream"]["seed"],
        overlong=config["downstream"]["overlong"],
        limit=config["downstream"]["limit"],
        num_fewshot=config["downstream"]["num_fewshot"],
        group=lambda wildcards: SEED_GROUP[wildcards.run],
        train_seed=lambda wildcards: run_trainer(wildcards).get("seed", 1),
    log:
        "logs/eval/{run}/downstream.log",
    conda:
        "../environment.yml"
    benchmark:
        "benchmarks/eval/{run}/downstream.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=by_attempt(8000),
        runtime=by_attempt(240),
    script:
        "../workflow_src/dlm/scripts/downstream.py"


rule table_downstream:
    input:
        jsons=downstream_jsons(),
        paper=PAPER_VALUES,
    output:
        report(
            "results/tables/downstream.csv",
            caption="../workflow_src/dlm/report/captions/downstream.rst",
            category="Table data (CSV)",
            labels={"table": "downstream"},
        ),
        "results/tables/downstream.md",
        "results/tables/downstream.tex",
        report(
            "results/tables/downstream.html",
            caption="../workflow_src/dlm/report/captions/downstream.rst",
            category="Tables",
            labels={"table": "downstream"},
        ),
    params:
        metric=config["downstream"]["metric"],
        dataset=CORPUS,
    log:
        "logs/report/table_downstream.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/downstream_table.py"
