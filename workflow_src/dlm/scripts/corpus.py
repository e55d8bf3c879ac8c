from dlm.data.corpora import write_corpus
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
write_corpus(snakemake.params.source, snakemake.output.train, snakemake.output.valid)
