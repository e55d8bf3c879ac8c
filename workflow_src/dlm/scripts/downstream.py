import os

p = snakemake.params
if p.offline:  # only tasks built by the pipeline: nothing may reach the network (set before datasets is imported)
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[var] = "1"

from dlm.evaluation.downstream import evaluate_downstream  # noqa: E402
from dlm.utils import setup_job  # noqa: E402

setup_job(snakemake.log[0], snakemake.threads)
evaluate_downstream(snakemake.input.ckpt, list(p.tasks), snakemake.output.json, snakemake.output.questions,
                    list(p.local_dirs), num_mc_samples=p.num_mc_samples, batch_size=p.batch_size, seed=p.seed,
                    overlong=p.overlong, limit=p.limit, num_fewshot=p.num_fewshot, run=snakemake.wildcards.run,
                    group=p.group, train_seed=p.train_seed)
