from pathlib import Path

from dlm.report.images import images_table
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
i = snakemake.input
images_table(i.reference, list(i.scores), str(Path(snakemake.output[0]).with_suffix("")),
             dataset=snakemake.params.dataset, paper_values_path=i.paper)
