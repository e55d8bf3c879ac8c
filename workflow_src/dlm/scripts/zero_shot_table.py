from pathlib import Path

from dlm.report.zero_shot_table import zero_shot_table
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
zero_shot_table(list(snakemake.input.zero_shot), list(snakemake.input.val),
                str(Path(snakemake.output[0]).with_suffix("")), in_domain=snakemake.params.in_domain,
                paper_values_path=snakemake.input.paper, dataset=snakemake.params.dataset)
