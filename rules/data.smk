# Data stage: raw text -> tokenizer -> packed token blocks (numpy) + meta.json.


rule corpus:
    input:
        corpus_inputs,
    output:
        train="results/data/{corpus}/raw/train.jsonl",
        valid="results/data/{corpus}/raw/valid.jsonl",
        meta="results/data/{corpus}/raw/meta.json",
    params:
        source=config["corpus"]["source"],
    log:
        "logs/data/{corpus}/corpus.log",
    conda:
        "../environment.yml"
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../workflow_src/dlm/scripts/corpus.py"


rule tokenizer:
    input:
        train=f"results/data/{CORPUS}/raw/train.jsonl",
    output:
        directory("resources/tokenizers/{tokenizer}"),
    params:
        tokenizer=config["tokenizer"],
    cache: "omit-software"  # between-workflow cache (--cache with SNAKEMAKE_OUTPUT_CACHE set): see README
    log:
        "logs/data/tokenizer_{tokenizer}.log",
    conda:
        "../environment.yml"
    resources:
        mem_mb=8000,
        runtime=120,
    script:
        "../workflow_src/dlm/scripts/tokenizer.py"


rule pack:
    input:
        train="results/data/{corpus}/raw/train.jsonl",
        valid="results/data/{corpus}/raw/valid.jsonl",
        tokenizer=f"resources/tokenizers/{tokenizer_id()}",
    output:
        directory("results/data/{corpus}/packed"),
    params:
        packing=config["data"]["packing"],
        block_length=config["data"]["block_length"],
    log:
        "logs/data/{corpus}/pack.log",
    conda:
        "../environment.yml"
    benchmark:
        "benchmarks/data/{corpus}/pack.tsv"
    resources:
        mem_mb=8000,
        runtime=240,
    script:
        "../workflow_src/dlm/scripts/pack.py"
