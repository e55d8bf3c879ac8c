from dlm.evaluation.val_ppl import evaluate_ppl
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
p = snakemake.params
evaluate_ppl(snakemake.input.ckpt, snakemake.input.data, "valid", p.batch_size, p.seed, snakemake.output[0],
             run=snakemake.wildcards.run, max_batches=p.max_batches, threads=snakemake.threads,
             passes=p.passes, group=p.group, train_seed=p.train_seed)
