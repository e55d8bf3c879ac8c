"""The Slurm profile for real: a single-node Slurm cluster (see .ci/slurm-up.sh, which CI runs first)
executes one model's chain of the smoke config as Slurm jobs, GPU rules included (fake gres GPU)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(state in out for state in ("idle", "mixed", "allocated"))


@pytest.mark.slurm
@pytest.mark.skipif(not slurm_up(), reason="no Slurm cluster answers (run .ci/slurm-up.sh as root to start one)")
def test_smoke_chain_runs_as_slurm_jobs(tmp_path):
    overlay = tmp_path / "one_run.yaml"
    overlay.write_text("evaluation: {judge: ar}\n"
                       "sampling: {plan: [{run: ar, sampler: ar, steps: [31]}]}\n")
    targets = ["results/eval/ar/val_ppl.json", "results/eval/ar/gen_ar_T31_s0.json"]
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--profile",
                          str(ROOT / "profiles" / "slurm"), "--configfile", str(ROOT / "config" / "smoke.yaml"),
                          str(overlay), "--directory", str(tmp_path / "work"), *targets],
                         capture_output=True, text=True, timeout=1200)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-5000:]
    for rule in ("corpus", "pack", "train", "sample", "gen_ppl", "val_ppl"):
        assert f"slurm_logs/rule_{rule}/" in log, f"rule {rule} was not submitted to Slurm"
    for t in targets:
        assert (tmp_path / "work" / t).exists()
