from dlm.evaluation.downstream_task import build_task
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
build_task(snakemake.params.spec, snakemake.input.text, snakemake.input.tokenizer, snakemake.wildcards.task,
           snakemake.output.yaml, snakemake.output.data, snakemake.params.block_length)
