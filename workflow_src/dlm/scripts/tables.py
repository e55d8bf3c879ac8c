from pathlib import Path

from dlm.report.sampling_tables import TABLES as SAMPLER_TABLES
from dlm.report.tables import curriculum_table, gen_ppl_table, gidd_table, val_ppl_table
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
build = {"val_ppl": val_ppl_table, "gen_ppl": gen_ppl_table, "duo_curriculum": curriculum_table,
         "gidd_pu": gidd_table, **SAMPLER_TABLES}[snakemake.params.table]
options = dict(getattr(snakemake.params, "options", {}))
paper = getattr(snakemake.input, "paper", None)  # the paper-values file (an input: an edit reruns the table)
if paper is not None:
    options["paper_values"] = paper
mauve = list(getattr(snakemake.input, "mauve", []))  # MAUVE JSONs beside the gen-PPL ones (ReMDM table)
if mauve:
    options["mauve_jsons"] = mauve
special = {paper, *mauve}
for key in ("reference", "reference_mauve"):  # the held-out text's rows (sampler tables)
    if hasattr(snakemake.input, key):
        options[key] = getattr(snakemake.input, key)
        special.add(options[key])
jsons = [f for f in snakemake.input if f not in special]
build(jsons, str(Path(snakemake.output[0]).with_suffix("")), **options)
