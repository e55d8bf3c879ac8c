from dlm.evaluation.gen_ppl import run_gen_ppl
from dlm.sample import sample_summary
from dlm.utils import setup_logging

setup_logging(snakemake.log[0])
p = snakemake.params
run_gen_ppl(snakemake.input.samples, p.judge, p.max_length, p.batch_size, snakemake.output[0],
            extra=sample_summary(snakemake.input.samples))
