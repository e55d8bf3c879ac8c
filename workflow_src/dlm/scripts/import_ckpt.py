"""Snakemake script of rule import_ckpt: a released checkpoint (path or hub name) -> results/models/{run}/final.ckpt.

params: src (path or hub name), algo, tokenizer (name/path; null = input.tokenizer, the pipeline's saved
tokenizer, or the source's own), length, n_heads (null = from the source), algo_args (the run's own, not
the train defaults), use_ema (default true). output: ckpt, tokenizer (directory the checkpoint points at).
"""

from dlm.checkpoints.convert import import_checkpoint
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
p = snakemake.params
tokenizer = p.tokenizer or getattr(snakemake.input, "tokenizer", None)
# import_checkpoint writes the checkpoint through dlm.utils.atomic_path and the tokenizer through atomic_dir
import_checkpoint(p.src, p.algo, snakemake.output.ckpt, tokenizer=tokenizer or None, length=p.length,
                  n_heads=p.n_heads, tokenizer_out=snakemake.output.tokenizer,
                  use_ema=getattr(p, "use_ema", True), algo_args=dict(p.algo_args or {}))
