# Imported runs (runs.NAME.import, or runs.NAME.released: a registry name): a released checkpoint converted by
# `dlm import` instead of trained. A registry checkpoint is fetched once (its lock records the sha256 of every
# file) and checked against that lock by every import. See docs/released.md.


localrules:
    released_checkpoint,


rule released_checkpoint:
    output:
        "resources/checkpoint_locks/{name}.json",
    wildcard_constraints:
        name=only(sorted({e["name"] for e in RELEASED.values()})),
    params:
        entry=lambda wildcards: released_source(wildcards.name),
        local_dir=config["released"]["dir"],
    log:
        "logs/released/{name}.log",
    conda:
        "../environment.yml"
    resources:
        mem_mb=2000,
        runtime=240,
    script:
        "../workflow_src/dlm/scripts/released_fetch.py"


rule import_ckpt:
    input:
        unpack(import_inputs),
    output:
        ckpt="results/models/{run}/final.ckpt",
        tokenizer=directory("results/models/{run}/final.tokenizer"),
    wildcard_constraints:
        run=only(IMPORTED),
    params:
        src=lambda w: config["runs"][w.run].get("import"),
        released=released_import,
        algo=lambda w: config["runs"][w.run]["algo"],
        tokenizer=lambda w: config["runs"][w.run].get("tokenizer"),
        length=lambda w: config["runs"][w.run].get("length"),
        n_heads=lambda w: config["runs"][w.run].get("n_heads"),
        algo_args=lambda w: config["runs"][w.run].get("algo_args", {}),
        use_ema=lambda w: released_import(w)["use_ema"] if w.run in RELEASED else True,
    cache: "omit-software"  # between-workflow cache (--cache with SNAKEMAKE_OUTPUT_CACHE set): see README
    log:
        "logs/import/{run}.log",
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    script:
        "../workflow_src/dlm/scripts/import_ckpt.py"
