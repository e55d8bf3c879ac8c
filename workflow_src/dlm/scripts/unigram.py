from dlm.evaluation.val_ppl import unigram_ppl
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
unigram_ppl(snakemake.input.data, snakemake.output[0])
