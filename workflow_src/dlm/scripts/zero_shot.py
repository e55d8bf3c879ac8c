from dlm.evaluation.zero_shot import evaluate_zero_shot
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
p = snakemake.params
evaluate_zero_shot(snakemake.input.ckpt, dict(zip(p.corpora, snakemake.input.data)), p.batch_size, p.seed,
                   snakemake.output[0], run=snakemake.wildcards.run, max_batches=p.max_batches, passes=p.passes,
                   threads=snakemake.threads)
