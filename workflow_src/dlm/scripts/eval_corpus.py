from dlm.data.eval_corpora import write_eval_corpus
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
write_eval_corpus(snakemake.wildcards.zs, snakemake.params.source, snakemake.output.text, snakemake.output.meta)
