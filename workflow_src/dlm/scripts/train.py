from pathlib import Path

from dlm.train import train
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
ckpt = snakemake.output.ckpt
hp = dict(snakemake.params.hp)
if "integral" in snakemake.input.keys():  # DUO curriculum: the cached Gaussian-to-discrete transformation
    hp["algo_args"] = {**hp.get("algo_args", {}), "integral_path": snakemake.input.integral}
train(snakemake.input.data, ckpt, str(Path(ckpt).parent), hp, threads=snakemake.threads)
