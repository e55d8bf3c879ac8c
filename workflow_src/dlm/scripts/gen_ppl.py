from dlm.evaluation.gen_ppl import run_gen_ppl
from dlm.sample import sample_summary
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
p = snakemake.params
run_gen_ppl(snakemake.input.samples, p.judge, p.max_length, p.batch_size, snakemake.output[0],
            extra=sample_summary(snakemake.input.samples), count_padding_eos=p.count_padding_eos,
            whole=getattr(p, "whole", False))
