"""Snakemake script of the report's figure rules (besides gen PPL: scripts/figure.py).

params.figure: entropy (input[0]: the per-seed gen-PPL CSV), mauve (input.jsons, input.reference), frontier
(input.jsons: gen-PPL JSONs, input.reference: the held-out text's) or training_curves (input: the training-curve
CSVs, params.curves: run, group, round and teacher of each, in input order). output[0]: the PDF (the PNG beside it).
"""

from pathlib import Path

from dlm.report.sample_figures import entropy_figure, frontier_figure, mauve_figure
from dlm.report.training_curves import training_curves_figure
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
stem = str(Path(snakemake.output[0]).with_suffix(""))
kind = snakemake.params.figure
if kind == "entropy":
    entropy_figure(snakemake.input[0], stem)
elif kind == "mauve":
    mauve_figure(list(snakemake.input.jsons), stem, reference_json=snakemake.input.reference)
elif kind == "frontier":
    frontier_figure(list(snakemake.input.jsons), stem, reference_json=snakemake.input.reference)
elif kind == "training_curves":
    specs = [{**spec, "csv": csv} for spec, csv in zip(snakemake.params.curves, snakemake.input, strict=True)]
    training_curves_figure(specs, stem)
else:
    raise ValueError(f"report_figure.py: unknown figure {kind!r}")
