from dlm.data.images import read_meta, read_split
from dlm.evaluation.classifier import save_classifier, train_classifier
from dlm.utils import provenance, setup_job, write_json

setup_job(snakemake.log[0], snakemake.threads)
data = snakemake.input.data
meta = read_meta(data)
model, report = train_classifier(read_split(data, "train"), read_split(data, "valid"), meta["levels"],
                                 dict(snakemake.params.settings))
report["input_hw"] = [meta["height"], meta["width"]]
save_classifier(model, report, snakemake.output.model)
write_json(snakemake.output.report, {**report, "provenance": provenance(report["settings"])})
