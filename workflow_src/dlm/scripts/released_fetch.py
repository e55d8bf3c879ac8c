"""Snakemake script of rule released_checkpoint: fetch one registry checkpoint (a hub snapshot into the HF cache,
or the hand-downloaded Google Drive file) and write its lock (resources/checkpoint_locks/NAME.json: the sha256 and
size of every file, the hub commit). A checkpoint that cannot be fetched ends the job with one line saying what
to download and where to put it.

params: entry (the registry entry's name, source, sha256, status), local_dir (released.dir).
"""

from dlm.checkpoints import registry
from dlm.utils import fail_job, setup_job, write_json

setup_job(snakemake.log[0])
p = snakemake.params
try:
    path = registry.fetch(p.entry, p.local_dir)
    lock = registry.make_lock(snakemake.wildcards.name, p.entry, path)
except (registry.CheckpointUnavailable, registry.ChecksumMismatch) as e:
    fail_job(e)
write_json(snakemake.output[0], lock)
print(f"locked {snakemake.wildcards.name}: {path} (commit {lock['commit']}, {len(lock['files'])} files)")
