from pathlib import Path

from dlm.data.images import read_meta, read_split
from dlm.report.images import images_grid
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
i = snakemake.input
images_grid(list(i.samples), read_split(i.data, "valid"), str(Path(snakemake.output[0]).with_suffix("")),
            per_class=snakemake.params.per_class, levels=read_meta(i.data)["levels"])
