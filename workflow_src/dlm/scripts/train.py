from pathlib import Path

from dlm.train import train
from dlm.utils import setup_logging

setup_logging(snakemake.log[0])
ckpt = snakemake.output.ckpt
train(snakemake.input.data, ckpt, str(Path(ckpt).parent), snakemake.params.hp, threads=snakemake.threads)
