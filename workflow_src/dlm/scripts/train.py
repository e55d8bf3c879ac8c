from pathlib import Path

from dlm.train import train
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
ckpt = snakemake.output.ckpt
train(snakemake.input.data, ckpt, str(Path(ckpt).parent), snakemake.params.hp, threads=snakemake.threads)
