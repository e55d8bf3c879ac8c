from pathlib import Path

from dlm.report.figures import gen_ppl_figure
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
gen_ppl_figure(snakemake.input[0], str(Path(snakemake.output[0]).with_suffix("")))
