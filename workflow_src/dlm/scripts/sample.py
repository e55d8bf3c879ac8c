from dlm.sample import generate
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
w, p = snakemake.wildcards, snakemake.params
generate(snakemake.input.ckpt, w.sampler, int(w.steps), int(w.seed), p.num_samples, p.batch_size,
         snakemake.output[0], nucleus_p=p.nucleus_p, run=w.run, threads=snakemake.threads)
