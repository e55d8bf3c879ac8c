from dlm.sample import generate
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
w, p, i = snakemake.wildcards, snakemake.params, snakemake.input
settings = dict(p.settings)
generate(i.ckpt, settings.pop("sampler"), int(w.steps), int(w.seed), p.num_samples, p.batch_size, snakemake.output[0],
         settings=settings, variant=w.sampler, run=w.run, prompts=p.prompts, data_dir=i.get("data"),
         threads=snakemake.threads)
