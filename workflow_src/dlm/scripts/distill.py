"""Snakemake script of a distillation rule: one round (dlm.distill.distill_round).

input: init (the previous round's checkpoint, or the base run's final.ckpt for round 0), data (packed data
dir), optional integral (the integral cache, dcd with transform cache). params: hp (the distillation run's
resolved settings: algo dcd | sdtt, algo_args, optim, trainer, and distill with its student and teacher weights),
round (0-based: dt = 2^round / T). output[0]: the round's checkpoint.
"""

from pathlib import Path

from dlm.distill import distill_round
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
out = snakemake.output[0]
integral = snakemake.input.integral if "integral" in snakemake.input.keys() else None
distill_round(snakemake.input.init, out, snakemake.input.data, str(Path(out).parent), dict(snakemake.params.hp),
              int(snakemake.params.round), threads=snakemake.threads, integral_path=integral)
