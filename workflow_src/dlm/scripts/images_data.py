from dlm.data.images import write_image_data
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
write_image_data(dict(snakemake.params.dataset), snakemake.output[0])
