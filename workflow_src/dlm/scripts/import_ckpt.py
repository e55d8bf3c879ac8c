"""Snakemake script of rule import_ckpt: a released checkpoint (path, hub name or registry entry) ->
results/models/{run}/final.ckpt.

params: src (path or hub name; None for a registry checkpoint), released (None, or the registry entry, the
checks the import makes and local_dir: the checkpoint is read at its locked commit and checked against
input.lock first), algo, tokenizer (name/path; null = input.tokenizer, the pipeline's saved tokenizer, or the
source's own), length, n_heads (null = from the source), algo_args (the run's own, not the train defaults),
use_ema. output: ckpt, tokenizer (directory the checkpoint points at). A source that cannot be read or does not
fit ends the job with one line (the log has it too).
"""

from dlm.checkpoints import registry
from dlm.checkpoints.convert import ImportMismatchError, import_checkpoint
from dlm.checkpoints.safe_load import UnsafeCheckpointError
from dlm.utils import fail_job, read_json, setup_job

setup_job(snakemake.log[0], snakemake.threads)
p = snakemake.params
tokenizer = p.tokenizer or getattr(snakemake.input, "tokenizer", None)
released = getattr(p, "released", None)
try:
    src, expects = p.src, None
    if released:
        src = registry.materialize(released["entry"], read_json(snakemake.input.lock), released["local_dir"])
        expects = released["expects"]
    # import_checkpoint writes the checkpoint through dlm.utils.atomic_path and the tokenizer through atomic_dir
    import_checkpoint(src, p.algo, snakemake.output.ckpt, tokenizer=tokenizer or None, length=p.length,
                      n_heads=p.n_heads, tokenizer_out=snakemake.output.tokenizer,
                      use_ema=getattr(p, "use_ema", True), algo_args=dict(p.algo_args or {}), expects=expects)
except (ImportMismatchError, UnsafeCheckpointError, registry.CheckpointUnavailable, registry.ChecksumMismatch,
        FileNotFoundError) as e:
    fail_job(e)
