from pathlib import Path

from dlm.train import train, with_integral
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
ckpt = snakemake.output.ckpt
integral = snakemake.input.integral if "integral" in snakemake.input.keys() else None  # DUO's cached curriculum
train(snakemake.input.data, ckpt, str(Path(ckpt).parent), with_integral(dict(snakemake.params.hp), integral),
      threads=snakemake.threads)
