# Imported runs (runs.NAME.import): a released checkpoint converted by `dlm import` instead of trained.


rule import_ckpt:
    input:
        unpack(import_inputs),
    output:
        ckpt="results/models/{run}/final.ckpt",
        tokenizer=directory("results/models/{run}/final.tokenizer"),
    wildcard_constraints:
        run=only(IMPORTED),
    params:
        src=lambda w: config["runs"][w.run]["import"],
        algo=lambda w: config["runs"][w.run]["algo"],
        tokenizer=lambda w: config["runs"][w.run].get("tokenizer"),
        length=lambda w: config["runs"][w.run].get("length"),
        n_heads=lambda w: config["runs"][w.run].get("n_heads"),
        algo_args=lambda w: config["runs"][w.run].get("algo_args", {}),
        use_ema=True,
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
