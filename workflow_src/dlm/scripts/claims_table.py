from pathlib import Path

from dlm.report.claims import claims_table
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
inp = snakemake.input
claims_table(inp.spec, str(Path(snakemake.output[0]).with_suffix("")), val_jsons=list(inp.val),
             gen_jsons=list(getattr(inp, "gen", [])), mauve_jsons=list(getattr(inp, "mauve", [])),
             bench_files=list(inp.bench), reference=getattr(inp, "reference", None),
             entropy_margin=snakemake.params.entropy_margin, single_seed=snakemake.params.single_seed,
             downstream_jsons=list(getattr(inp, "downstream", [])))
