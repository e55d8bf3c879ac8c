from dlm.evaluation.val_ppl import unigram_ppl
from dlm.utils import setup_logging

setup_logging(snakemake.log[0])
unigram_ppl(snakemake.input.data, snakemake.output[0])
