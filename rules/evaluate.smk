# Evaluation: validation PPL per run, a unigram baseline, generative PPL + entropy per sample file.


rule val_ppl:
    input:
        ckpt="results/models/{run}/final.ckpt",
        data=f"results/data/{CORPUS}/packed",
    output:
        "results/eval/{run}/val_ppl.json",
    params:
        batch_size=config["evaluation"]["val_batch_size"],
        max_batches=config["evaluation"]["val_max_batches"],
        seed=config["evaluation"]["val_seed"],
        passes=config["evaluation"]["val_passes"],
        group=lambda wildcards: SEED_GROUP[wildcards.run],
        train_seed=lambda wildcards: run_trainer(wildcards).get("seed", 1),
    log:
        "logs/eval/{run}/val_ppl.log",
    conda:
        "../environment.yml"
    benchmark:
        "benchmarks/eval/{run}/val_ppl.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=by_attempt(8000),
        runtime=by_attempt(240),
    script:
        "../workflow_src/dlm/scripts/val_ppl.py"


localrules:
    unigram_ppl,


rule unigram_ppl:
    input:
        data=f"results/data/{CORPUS}/packed",
    output:
        "results/eval/unigram/val_ppl.json",
    log:
        "logs/eval/unigram/val_ppl.log",
    conda:
        "../environment.yml"
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../workflow_src/dlm/scripts/unigram.py"


rule gen_ppl:
    input:
        samples="results/samples/{run}/{sampler}_T{steps}_s{seed}.jsonl",
        judge=judge_input,
    output:
        "results/eval/{run}/gen_{sampler}_T{steps}_s{seed}.json",
    params:
        judge=judge_arg,
        batch_size=config["evaluation"]["gen_ppl_batch_size"],
        max_length=config["evaluation"]["gen_ppl_max_length"],
        count_padding_eos=config["evaluation"]["gen_ppl_count_padding_eos"],
        whole=gen_ppl_whole,
    log:
        "logs/eval/{run}/gen_{sampler}_T{steps}_s{seed}.log",
    conda:
        "../environment.yml"
    benchmark:
        "benchmarks/eval/{run}/gen_{sampler}_T{steps}_s{seed}.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=by_attempt(8000),
        runtime=by_attempt(240),
    script:
        "../workflow_src/dlm/scripts/gen_ppl.py"


rule gen_ppl_reference:
    input:
        samples="results/samples/reference/heldout.jsonl",
        judge=judge_input,
    output:
        "results/eval/reference/gen_heldout.json",
    params:
        judge=judge_arg,
        batch_size=config["evaluation"]["gen_ppl_batch_size"],
        max_length=config["evaluation"]["gen_ppl_max_length"],
        count_padding_eos=config["evaluation"]["gen_ppl_count_padding_eos"],
    log:
        "logs/eval/reference/gen_heldout.log",
    conda:
        "../environment.yml"
    benchmark:
        "benchmarks/eval/reference/gen_heldout.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=by_attempt(8000),
        runtime=by_attempt(240),
    script:
        "../workflow_src/dlm/scripts/gen_ppl.py"
