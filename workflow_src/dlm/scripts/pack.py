from dlm.data.packing import pack
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
pack(snakemake.input.train, snakemake.input.valid, snakemake.input.tokenizer, snakemake.params.packing,
     snakemake.params.block_length, snakemake.output[0])
