from pathlib import Path

from dlm.report.downstream_table import downstream_table
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
downstream_table(list(snakemake.input.jsons), str(Path(snakemake.output[0]).with_suffix("")),
                 metric=snakemake.params.metric, paper_values_path=snakemake.input.paper,
                 dataset=snakemake.params.dataset)
