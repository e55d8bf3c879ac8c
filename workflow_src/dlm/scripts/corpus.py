from dlm.data.corpora import write_corpus
from dlm.utils import setup_logging

setup_logging(snakemake.log[0])
write_corpus(snakemake.params.source, snakemake.output.train, snakemake.output.valid)
