# Reproduction pipeline for discrete diffusion language models. See README.md and config/schema.yaml.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow_src/dlm/report/captions/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/integral.smk"
include: "rules/train.smk"
include: "rules/import.smk"
include: "rules/distill.smk"
include: "rules/sample.smk"
include: "rules/evaluate.smk"
include: "rules/zero_shot.smk"
include: "rules/mauve.smk"
include: "rules/downstream.smk"
include: "rules/report.smk"
include: "rules/images.smk"


rule all:
    default_target: True
    input:
        all_targets(),


localrules:
    all,
