# Training (GPU rule): one Lightning job per run; a rerun resumes from checkpoints/last.ckpt.


rule train:
    input:
        unpack(train_inputs),
    output:
        ckpt="results/models/{run}/final.ckpt",
        metrics="results/models/{run}/final_metrics.csv",  # training curve (dlm.train_log)
    wildcard_constraints:
        run=only(ONE_TASK_TRAINED),
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
        mem_mb=16000,  # the same on every job of the chain and every retry (docs/slurm.md)
        runtime=1440,  # minutes: one job of the chain (the profile sets the partition's limit)
    script:
        "../workflow_src/dlm/scripts/train.py"


# The same training with its ranks started as Slurm tasks (trainer.launch: srun, or num_nodes > 1): the job
# asks for num_nodes nodes, `devices` tasks and GPUs on each, and `srun` starts one rank per task, as
# Lightning's Slurm environment expects (dlm.train.cluster_plugins). Snakemake's Slurm executor treats it
# as an MPI-style job (`mpi` resource): its command runs in the allocation and launches the tasks itself.
rule train_srun:
    input:
        unpack(train_inputs),
    output:
        ckpt="results/models/{run}/final.ckpt",
        metrics="results/models/{run}/final_metrics.csv",  # written by dlm train beside --out
    wildcard_constraints:
        run=only(SRUN_TRAINED),
    params:
        hp=train_hp_json,
        integral=integral_arg,
        python=sys.executable,
        srun=srun_launcher,
    log:
        "logs/train/{run}.log",
    conda:
        "../environment.yml"
    benchmark:
        "benchmarks/train/{run}.tsv"
    threads: 1
    resources:
        mpi="srun",
        nodes=lambda wildcards: srun_tasks(wildcards)["nodes"],
        # several devices per node: --ntasks-per-node; one per node (the plugin takes no tasks_per_node of 1):
        # --ntasks = nodes with one task per GPU
        tasks_per_node=lambda wildcards: srun_tasks(wildcards)["devices"] if srun_tasks(wildcards)["devices"] > 1 else None,
        tasks=lambda wildcards: srun_tasks(wildcards)["world"] if srun_tasks(wildcards)["devices"] == 1 else None,
        tasks_per_gpu=lambda wildcards: 1 if srun_tasks(wildcards)["devices"] == 1 else None,
        gres=lambda wildcards: f"gpu:{srun_tasks(wildcards)['devices']}",
        mem_mb=16000,  # the same on every job of the chain and every retry (docs/slurm.md)
        runtime=1440,  # minutes: one job of the chain (the profile sets the partition's limit)
    shell:
        "{params.srun} {params.python} -m dlm.cli --log {log} train --data {input.data} --hp {params.hp:q} "
        "{params.integral} --out {output.ckpt} --threads {threads}"
