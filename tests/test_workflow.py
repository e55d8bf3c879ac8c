"""The Snakemake workflow end to end: lint, dry runs (local and Slurm profiles), the smoke config in a
temporary directory, single-target reruns and param-change propagation."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
SMOKE = str(ROOT / "config" / "smoke.yaml")


def smk(*args, cwd=None, check=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    res = subprocess.run([*SNAKEMAKE, *args], cwd=cwd or ROOT, capture_output=True, text=True, env=env)
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({res.returncode}):\n{res.stdout[-4000:]}\n"
                             f"{res.stderr[-4000:]}")
    return res


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a (dry) run."""
    counts = {}
    block = output.split("Job stats:")[-1]
    for line in block.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def test_lint_clean():
    res = smk("--lint")
    assert "Congratulations" in res.stdout + res.stderr


def test_dry_run_default_and_paper_configs(tmp_path):
    for cfg in ["config/config.yaml", "config/paper/owt.yaml", "config/paper/lm1b.yaml"]:
        res = smk("-n", "--cores", "2", "--configfile", str(ROOT / cfg), "--directory", str(tmp_path))
        counts = job_counts(res.stdout)
        assert counts["train"] == 3 + ("judge" in cfg or cfg.endswith("config.yaml"))
        assert counts["gen_ppl"] >= 4 and counts["table_gen_ppl"] == 1


def test_dry_run_slurm_profile_needs_no_cluster(tmp_path):
    res = smk("-n", "--profile", str(ROOT / "profiles" / "slurm"), "--configfile", SMOKE, "--directory",
              str(tmp_path))
    assert "train" in job_counts(res.stdout)


def test_invalid_config_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(SMOKE).read_text().replace("packing: wrap", "packing: wrapped"))
    res = smk("-n", "--cores", "1", "--configfile", str(bad), "--directory", str(tmp_path), check=False)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "data.packing" in out and "'wrapped'" in out
    assert not (tmp_path / "results").exists()


@pytest.mark.e2e
def test_smoke_run_end_to_end(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    smk("--cores", "2", "--configfile", SMOKE, "--directory", str(work))
    res = work / "results"
    # tables: every run plus the unigram baseline; finite numbers
    val = pd.read_csv(res / "tables" / "val_ppl.csv")
    assert set(val["run"]) == {"ar", "mdlm", "udlm", "judge", "unigram"}
    assert val["val_ppl"].between(1, 1e5).all()
    gen = pd.read_csv(res / "tables" / "gen_ppl.csv")
    assert len(gen) == 6 and gen["gen_ppl"].between(1, 1e6).all()
    assert (gen["entropy"] > 0).all()
    tex = (res / "tables" / "gen_ppl.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex
    for ext in ("pdf", "png"):
        assert (res / "figures" / f"gen_ppl_steps.{ext}").stat().st_size > 1000
    # samples: the configured count, sampler settings, NFE and timing recorded
    rows = [json.loads(x) for x in (res / "samples" / "udlm" / "duo_ancestral_T8_s0.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[0]["steps"] == 8 and rows[0]["nfe"] == 9 and rows[0]["seconds"] > 0
    assert len(rows[0]["tokens"]) == 32
    # metric JSONs carry provenance
    g = json.loads((res / "eval" / "mdlm" / "gen_mdlm_ancestral_T4_s0.json").read_text())
    assert {"config_hash", "git_commit", "packages"} <= set(g["provenance"])
    assert (work / "resources" / "integral").is_dir()
    # logs and benchmarks exist for the heavy rules
    assert (work / "logs" / "train" / "mdlm.log").read_text().count("step") > 0
    assert (work / "benchmarks" / "train" / "mdlm.tsv").exists()

    # nothing to do on a second run
    again = smk("-n", "--cores", "2", "--configfile", SMOKE, "--directory", str(work))
    assert "Nothing to be done" in again.stdout + again.stderr

    # one target reruns alone: delete one table, only its rule runs
    (res / "tables" / "val_ppl.md").unlink()
    out = smk("--cores", "2", "--configfile", SMOKE, "--directory", str(work), "results/tables/val_ppl.md")
    assert job_counts(out.stdout + out.stderr) == {"table_val_ppl": 1}

    # a changed hyper-parameter reruns exactly the jobs it affects (udlm's chain, not ar/mdlm)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("runs:\n  udlm: {algo: udlm, trainer: {max_steps: 31}}\n")
    dry = smk("-n", "--cores", "2", "--configfile", SMOKE, str(overlay), "--directory", str(work))
    counts = job_counts(dry.stdout)
    assert counts["train"] == 1 and counts["val_ppl"] == 1
    assert counts["sample"] == 3 and counts["gen_ppl"] == 3  # the three udlm sample files
    assert "results/models/udlm/final.ckpt" in dry.stdout and "results/models/ar/final.ckpt" not in dry.stdout
