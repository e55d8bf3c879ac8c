from dlm.data.tokenizer import load_tokenizer, special_ids
from dlm.diffusion.integral import compute_cache, save_cache
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
K = special_ids(load_tokenizer(snakemake.input.tokenizer))["vocab_size"]
p = snakemake.params.integral
save_cache(snakemake.output[0], compute_cache(K, p["gamma_min"], p["gamma_max"], p["points"]))
