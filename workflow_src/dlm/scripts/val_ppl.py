from dlm.evaluation.val_ppl import evaluate_ppl
from dlm.utils import setup_logging

setup_logging(snakemake.log[0])
p = snakemake.params
evaluate_ppl(snakemake.input.ckpt, snakemake.input.data, "valid", p.batch_size, p.seed, snakemake.output[0],
             run=snakemake.wildcards.run, max_batches=p.max_batches, threads=snakemake.threads)
