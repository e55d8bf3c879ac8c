from dlm.sample import write_heldout
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
write_heldout(snakemake.input.data, snakemake.input.tokenizer, snakemake.params.num_samples, snakemake.output[0])
