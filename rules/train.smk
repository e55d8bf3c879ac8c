# Training (GPU rule): one Lightning job per run; a rerun resumes from checkpoints/last.ckpt.


rule train:
    input:
        unpack(train_inputs),
    output:
        ckpt="results/models/{run}/final.ckpt",
    wildcard_constraints:
        run=only(TRAINED),
    params:
        hp=run_params,
    log:
        "logs/train/{run}.log",
    conda:
        "../environment.yml"
    benchmark:
        "benchmarks/train/{run}.tsv"
    threads: 2
    resources:
        gpu=run_gpus,
        mem_mb=by_attempt(16000),
        runtime=by_attempt(1440),
    script:
        "../workflow_src/dlm/scripts/train.py"
