from dlm.data.corpora import write_corpus, write_corpus_meta
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
out = snakemake.output
stats = write_corpus(snakemake.params.source, out.train, out.valid)
write_corpus_meta(snakemake.params.source, stats, {"train": out.train, "valid": out.valid}, out.meta)
