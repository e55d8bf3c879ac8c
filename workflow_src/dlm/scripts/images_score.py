from dlm.evaluation.image_scores import write_scores
from dlm.utils import read_json, setup_job

setup_job(snakemake.log[0], snakemake.threads)
i, p = snakemake.input, snakemake.params
write_scores(i.samples, i.reference, p.features, snakemake.output[0], classifier_path=i.get("classifier"),
             classifier_report=read_json(i.report) if "report" in i.keys() else None,
             inception_weights=p.inception_weights, batch_size=p.batch_size, seed=p.seed)
