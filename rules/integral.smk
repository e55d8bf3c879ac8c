# The DUO Gaussian-to-discrete transformation, cached once per vocabulary on a gamma grid.


rule integral:
    input:
        tokenizer=f"resources/tokenizers/{tokenizer_id()}",
    output:
        integral_path(),
    params:
        integral=config["integral"],
    cache: "omit-software"  # between-workflow cache (--cache with SNAKEMAKE_OUTPUT_CACHE set): see README
    log:
        f"logs/integral/{tokenizer_id()}.log",
    conda:
        "../environment.yml"
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../workflow_src/dlm/scripts/integral.py"
