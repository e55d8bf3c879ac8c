from dlm.sample_images import generate_images
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
w, p, i = snakemake.wildcards, snakemake.params, snakemake.input
settings = dict(p.settings)
generate_images(i.ckpt, i.data, settings.pop("sampler"), int(w.steps), int(w.seed), p.condition, snakemake.output[0],
                labels_from=p.labels_from, num_samples=p.num_samples, batch_size=p.batch_size, guidance=p.guidance,
                settings=settings, variant=w.isampler, run=w.irun)
