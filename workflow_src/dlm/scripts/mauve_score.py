from dlm.evaluation.mauve import run_mauve, set_threads
from dlm.sample import sample_summary
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
set_threads(snakemake.threads)
p = snakemake.params
run_mauve(snakemake.input.samples, snakemake.input.references, snakemake.input.tokenizer, snakemake.output[0],
          featurizer=p.featurizer, kmeans_seeds=p.kmeans_seeds, max_text_length=p.max_text_length,
          batch_size=p.batch_size, num_buckets=p.num_buckets, scaling_factor=p.scaling_factor,
          kmeans_explained_var=p.kmeans_explained_var, kmeans_num_redo=p.kmeans_num_redo,
          kmeans_max_iter=p.kmeans_max_iter,
          divergence_curve_discretization_size=p.divergence_curve_discretization_size, device=p.device,
          extra=sample_summary(snakemake.input.samples))
