"""Snakemake script of rule table_cost: input: the benchmark TSVs of the run's jobs; params.algos: run -> algo;
output[0]: results/tables/cost.csv (the .md and .tex beside it)."""

from pathlib import Path

from dlm.report.cost import cost_table
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
cost_table(list(snakemake.input), str(Path(snakemake.output[0]).with_suffix("")), algos=dict(snakemake.params.algos))
