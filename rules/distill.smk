# Distillation (GPU rule): runs.NAME.distill = {from: RUN, rounds: N}; algo dcd (DUO) or sdtt (MDLM).
# Each round is its own file target, so a researcher can stop after round k and rerun only what follows.


rule distill:
    input:
        unpack(distill_inputs),
    output:
        ckpt="results/models/{run}/round_{k}.ckpt",
        metrics="results/models/{run}/round_{k}_metrics.csv",  # training curve (dlm.train_log)
    wildcard_constraints:
        run=only(DISTILLED),
        k=r"\d+",
    params:
        hp=run_params,
        round=lambda w: int(w.k) - 1,  # dlm.distill counts rounds from 0 (step 2^round / T)
    log:
        "logs/distill/{run}/round_{k}.log",
    conda:
        "../environment.yml"
    benchmark:
        "benchmarks/distill/{run}/round_{k}.tsv"
    threads: 2
    resources:
        gpu=run_gpus,
        mem_mb=16000,  # the same on every job of the chain and every retry (docs/slurm.md)
        runtime=1440,  # minutes: one job of the chain (the profile sets the partition's limit)
    script:
        "../workflow_src/dlm/scripts/distill.py"


localrules:
    distill_final,


rule distill_final:
    input:
        last_round,
    output:
        ckpt="results/models/{run}/final.ckpt",
    wildcard_constraints:
        run=only(DISTILLED),
    log:
        "logs/distill/{run}/final.log",
    conda:
        "../environment.yml"
    shell:
        "cp {input} {output.ckpt} 2> {log}"
