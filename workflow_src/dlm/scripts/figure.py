from pathlib import Path

from dlm.report.figures import gen_ppl_figure
from dlm.utils import setup_logging

setup_logging(snakemake.log[0])
gen_ppl_figure(snakemake.input[0], str(Path(snakemake.output[0]).with_suffix("")))
