from dlm.evaluation.mauve import draw_references
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
draw_references(snakemake.input.data, snakemake.input.tokenizer, snakemake.params.num_references,
                snakemake.output[0], exclude=snakemake.input.exclude, seed=snakemake.params.seed)
