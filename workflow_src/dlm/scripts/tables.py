from pathlib import Path

from dlm.report.sampling_tables import TABLES as SAMPLER_TABLES
from dlm.report.tables import curriculum_table, gen_ppl_table, gidd_table, val_ppl_table
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
build = {"val_ppl": val_ppl_table, "gen_ppl": gen_ppl_table, "duo_curriculum": curriculum_table,
         "gidd_pu": gidd_table, **SAMPLER_TABLES}[snakemake.params.table]
build(list(snakemake.input), str(Path(snakemake.output[0]).with_suffix("")), **getattr(snakemake.params, "options", {}))
