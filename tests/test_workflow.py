"""The Snakemake workflow end to end: lint, dry runs (local and Slurm profiles), the smoke config in a
temporary directory, single-target reruns and param-change propagation."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
SMOKE = str(ROOT / "config" / "smoke.yaml")
SMOKE_PROFILE = ("--profile", str(ROOT / "profiles" / "smoke"))  # one thread per job, two jobs at a time


def smk(*args, cwd=None, check=True, env=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
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
    import yaml

    for cfg in ["config/config.yaml", "config/paper/owt.yaml", "config/paper/lm1b.yaml"]:
        runs = yaml.safe_load((ROOT / cfg).read_text())["runs"]
        res = smk("-n", "--cores", "2", "--configfile", str(ROOT / cfg), "--directory", str(tmp_path))
        counts = job_counts(res.stdout)
        distilled = {name: r for name, r in runs.items() if r.get("distill")}
        assert counts["train"] == len(runs) - len(distilled)
        assert counts.get("distill", 0) == sum(r["distill"]["rounds"] for r in distilled.values())
        algos = {r["algo"] for r in runs.values()}
        assert {"ar", "mdlm", "sedd", "udlm", "duo"} <= algos  # every paper config lists the methods
        assert counts["gen_ppl"] >= 4 and counts["table_gen_ppl"] == 1
        assert counts["table_duo_curriculum"] == 1 and counts.get("table_gidd_pu", 0) == ("gidd" in algos)
        # the DAG shows integral -> train for DUO's cached curriculum, and not for DUO++ (poly9)
        jobs = res.stdout.split("rule train:")
        duo = [j for j in jobs if "wildcards: run=duo\n" in j]
        duo_pp = [j for j in jobs if "wildcards: run=duo_pp\n" in j]
        assert duo and "resources/integral/" in duo[0].split("output:")[0]
        assert duo_pp and "resources/integral/" not in duo_pp[0].split("output:")[0]
        # distillation: round k reads round k-1 (round 1 the base run), DCD reads the integral cache
        rounds = [j.split("\n[")[0] for j in res.stdout.split("rule distill:")[1:]]  # each job's own lines
        for name, r in distilled.items():
            mine = {int(j.split("wildcards:")[1].split("k=")[1].split()[0]): j.split("output:")[0]
                    for j in rounds if f"wildcards: run={name}," in j}
            assert sorted(mine) == list(range(1, r["distill"]["rounds"] + 1))
            assert f"results/models/{r['distill']['from']}/final.ckpt" in mine[1]
            assert all(f"results/models/{name}/round_{k - 1}.ckpt" in mine[k] for k in mine if k > 1)
            assert ("resources/integral/" in mine[1]) == (r["algo"] == "dcd")


def test_changed_corpus_file_reruns_what_depends_on_it(tmp_path):
    """A text_files corpus is an input of the corpus rule: after the data stage ran, editing the source file
    makes a dry run schedule the corpus, tokenizer and pack jobs again (and nothing is rerun without an edit)."""
    import yaml

    (tmp_path / "train.txt").write_text("In the beginning God created the heaven and the earth.\n\n" * 40)
    (tmp_path / "valid.txt").write_text("And the earth was without form, and void.\n\n" * 10)
    cfg = yaml.safe_load(Path(SMOKE).read_text())
    cfg["corpus"] = {"name": "mine", "source": {"kind": "text_files", "train": str(tmp_path / "train.txt"),
                                                "valid": str(tmp_path / "valid.txt")}}
    cfg["tokenizer"] = {"kind": "bpe", "vocab_size": 300}
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    smk("--cores", "2", "--configfile", str(conf), "--directory", str(work), "results/data/mine/packed")
    assert json.loads((work / "results/data/mine/raw/meta.json").read_text())["splits"]["train"]["source_sha256"]
    again = smk("-n", "--cores", "2", "--configfile", str(conf), "--directory", str(work), "results/data/mine/packed")
    assert "Nothing to be done" in again.stdout + again.stderr
    time.sleep(1.1)
    (tmp_path / "train.txt").write_text("Let there be light.\n\n" * 60)
    dry = smk("-n", "--cores", "2", "--configfile", str(conf), "--directory", str(work), "results/data/mine/packed")
    counts = job_counts(dry.stdout)
    assert counts.get("corpus") == 1 and counts.get("pack") == 1


def test_dry_run_slurm_profile_needs_no_cluster(tmp_path):
    res = smk("-n", "--profile", str(ROOT / "profiles" / "slurm"), "--configfile", SMOKE, "--directory",
              str(tmp_path))
    assert "train" in job_counts(res.stdout)


def test_between_workflow_cache_serves_tokenizer_and_integral(tmp_path):
    """Tokenizers and integral caches are eligible for Snakemake's between-workflow cache: a second workflow
    (another directory) with --cache takes them from SNAKEMAKE_OUTPUT_CACHE instead of computing them."""
    env = {"SNAKEMAKE_OUTPUT_CACHE": str(tmp_path / "cache")}
    (tmp_path / "cache").mkdir()
    target = "resources/integral/kjv-smoke-bpe512_g-5.0_-1.0_n2000.npz"
    first = smk("--cores", "2", "--cache", "--configfile", SMOKE, "--directory", str(tmp_path / "a"), target, env=env)
    assert job_counts(first.stdout + first.stderr).get("integral") == 1
    second = smk("--cores", "2", "--cache", "--configfile", SMOKE, "--directory", str(tmp_path / "b"), target,
                 env=env)
    log = second.stdout + second.stderr
    assert f"output file {target} from cache" in log, log[-3000:]
    assert "resources/tokenizers/kjv-smoke-bpe512/tokenizer.json from cache" in log, log[-3000:]
    a, b = (tmp_path / d / target for d in ("a", "b"))
    assert b.is_symlink() and a.read_bytes() == b.read_bytes()


def test_invalid_config_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(SMOKE).read_text().replace("packing: wrap", "packing: wrapped"))
    res = smk("-n", "--cores", "1", "--configfile", str(bad), "--directory", str(tmp_path), check=False)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "data.packing" in out and "'wrapped'" in out
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def smoke_work(tmp_path_factory):
    """One smoke run of the whole DAG, shared by the end-to-end and determinism tests."""
    work = tmp_path_factory.mktemp("smoke") / "work"
    work.mkdir()
    smk(*SMOKE_PROFILE, "--configfile", SMOKE, "--directory", str(work))
    return work


@pytest.mark.e2e
def test_smoke_run_end_to_end(smoke_work, tmp_path):
    work = smoke_work
    res = work / "results"
    # tables: every run plus the unigram baseline; finite numbers
    val = pd.read_csv(res / "tables" / "val_ppl.csv")
    import yaml

    assert set(val["run"]) == set(yaml.safe_load(Path(SMOKE).read_text())["runs"]) | {"unigram"}
    assert val["val_ppl"].between(1, 1e5).all()
    diffusion = ~val["algo"].isin(["ar", "unigram"])
    assert (val.loc[diffusion, "val_ppl_se"] > 0).all()  # two seeded passes of a Monte-Carlo bound: a spread
    assert (val.loc[~diffusion, "val_ppl_se"] == 0).all()  # AR's NLL and the unigram baseline are exact
    cur = pd.read_csv(res / "tables" / "duo_curriculum.csv")
    assert list(cur["variant"]) == ["UDLM (no curriculum)", "DUO", "DUO++"]
    gidd = pd.read_csv(res / "tables" / "gidd_pu.csv")
    assert set(gidd["run"]) == {"mdlm", "gidd"}
    gen = pd.read_csv(res / "tables" / "gen_ppl.csv")
    plan = yaml.safe_load(Path(SMOKE).read_text())["sampling"]["plan"]
    assert len(gen) == sum(len(e["steps"]) for e in plan) + 1  # + the held-out reference row, first
    ref = gen.iloc[0]
    assert (ref["run"], ref["algo"], ref["note"]) == ("reference", "data", "reference text")
    assert 1 < ref["gen_ppl"] < 1e6 and ref["entropy"] > 0
    bold = (res / "tables" / "gen_ppl.md").read_text().splitlines()
    assert not any("**" in line and ("low entropy" in line or "prompt" in line) for line in bold)
    scored = gen["gen_ppl"].notna()  # a degenerate smoke model may emit only EOS: nothing to score, a dash
    assert scored.sum() >= len(gen) - 2 and gen.loc[scored, "gen_ppl"].between(1, 1e6).all()
    assert (gen["entropy"] >= 0).all()
    # every sampler table of the smoke plan, built from the metric JSONs alone
    for table in ("distill", "remdm", "sampler_speed", "semi_ar", "self_correction"):
        assert len(pd.read_csv(res / "tables" / f"{table}.csv")) > 0, table
    sc = pd.read_csv(res / "tables" / "self_correction.csv")
    assert sc["gen_ppl_before"].notna().all() and sc["gen_ppl"].notna().all()
    semi = json.loads((res / "eval" / "mdlm" / "gen_mdlm_semi_ar_T4_s0.json").read_text())
    assert semi["length"] == 32 + 16  # one stride of L/2 beyond the block
    # distillation: one checkpoint per round, final = the last round
    assert (res / "models" / "duo_dcd" / "round_1.ckpt").exists() and (res / "models" / "duo_dcd" / "round_2.ckpt").exists()
    assert (res / "models" / "mdlm_sdtt" / "round_1.ckpt").exists()
    # conditional samples keep their prompt positions (held-out prefix / prefix + suffix)
    for run, name in (("mdlm", "mdlm_infill_T4_s0"), ("duo", "duo_prefix_T4_s0"), ("mdlm", "remdm_loop_p09_T8_s0")):
        rows = [json.loads(x) for x in (res / "samples" / run / f"{name}.jsonl").read_text().splitlines()]
        assert all(r["prompt_tokens"] == (16 if "infill" in name else 8) for r in rows), name
    # the Python API reproduces a sample file exactly (same code path, same seed and settings)
    import dlm

    model = dlm.load(str(res / "models" / "mdlm" / "final.ckpt"), device="cpu")
    rows = [json.loads(x) for x in (res / "samples" / "mdlm" / "remdm_conf_T4_s0.jsonl").read_text().splitlines()]
    again = model.generate(4, sampler="remdm_conf", steps=4, seed=0, batch_size=4)
    assert again.tokens.tolist() == [r["tokens"] for r in rows]
    assert rows[0]["settings"]["nucleus_rule"] == "keep_crossing" and rows[0]["sampler_kind"] == "remdm_conf"
    assert rows[0]["tokens_per_s"] > 0 and rows[0]["nfe"] >= 1
    tex = (res / "tables" / "gen_ppl.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex
    for ext in ("pdf", "png"):
        assert (res / "figures" / f"gen_ppl_steps.{ext}").stat().st_size > 1000
    # samples: the configured count, sampler settings, NFE and timing recorded
    rows = [json.loads(x) for x in (res / "samples" / "udlm" / "duo_ancestral_T4_s0.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[0]["steps"] == 4 and rows[0]["nfe"] == 5 and rows[0]["seconds"] > 0
    assert len(rows[0]["tokens"]) == 32
    # metric JSONs carry provenance
    g = json.loads((res / "eval" / "mdlm" / "gen_mdlm_ancestral_T4_s0.json").read_text())
    assert {"config_hash", "git_commit", "packages"} <= set(g["provenance"])
    assert (work / "resources" / "integral").is_dir()
    # logs and benchmarks exist for the heavy rules
    assert (work / "logs" / "train" / "mdlm.log").read_text().count("step") > 0
    assert (work / "benchmarks" / "train" / "mdlm.tsv").exists()

    # nothing to do on a second run
    again = smk("-n", *SMOKE_PROFILE, "--configfile", SMOKE, "--directory", str(work))
    assert "Nothing to be done" in again.stdout + again.stderr

    # one target reruns alone: delete one table, only its rule runs
    (res / "tables" / "val_ppl.md").unlink()
    out = smk(*SMOKE_PROFILE, "--configfile", SMOKE, "--directory", str(work), "results/tables/val_ppl.md")
    assert job_counts(out.stdout + out.stderr) == {"table_val_ppl": 1}

    # a changed hyper-parameter reruns exactly the jobs it affects (udlm's chain, not ar/mdlm)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("runs:\n  udlm: {algo: udlm, trainer: {max_steps: 31}}\n")
    dry = smk("-n", *SMOKE_PROFILE, "--configfile", SMOKE, str(overlay), "--directory", str(work))
    counts = job_counts(dry.stdout)
    assert counts["train"] == 1 and counts["val_ppl"] == 1
    assert counts["sample"] == 1 and counts["gen_ppl"] == 1  # the udlm sample file

    # a changed sampler setting reruns only its samples, their metrics and the tables that read them
    overlay = tmp_path / "variant.yaml"
    overlay.write_text("sampling:\n  variants:\n    remdm_loop_p09: {sampler: remdm_loop, nucleus_p: 0.8, "
                       "nucleus_rule: drop_crossing, condition: prefix}\n")
    counts = job_counts(smk("-n", *SMOKE_PROFILE, "--configfile", SMOKE, str(overlay), "--directory", str(work)).stdout)
    assert counts.get("sample") == 1 and counts.get("gen_ppl") == 1 and "train" not in counts, counts
    assert "results/models/udlm/final.ckpt" in dry.stdout and "results/models/ar/final.ckpt" not in dry.stdout

    # a released checkpoint enters the DAG in place of training (runs.NAME.import): the smoke MDLM's EMA
    # weights written as a bare `backbone.`-prefixed safetensors file in the original MDLM names
    from safetensors.torch import save_file

    from dlm.algos import load_module
    from dlm.models.convert import original_name

    mdlm = load_module(str(res / "models" / "mdlm" / "final.ckpt"))
    released = tmp_path / "released.safetensors"
    save_file({"backbone." + original_name(k): v.contiguous() for k, v in mdlm.backbone.state_dict().items()},
              str(released))
    overlay = tmp_path / "import.yaml"
    overlay.write_text(f"runs:\n  released: {{import: '{released}', algo: mdlm, n_heads: 2, length: 32}}\n")
    targets = ["results/eval/released/val_ppl.json", "results/eval/released/gen_mdlm_ancestral_T4_s0.json"]
    out = smk(*SMOKE_PROFILE, "--configfile", SMOKE, str(overlay), "--directory", str(work), *targets)
    counts = job_counts(out.stdout + out.stderr)
    assert counts == {"import_ckpt": 1, "val_ppl": 1, "sample": 1, "gen_ppl": 1}, counts
    imported = json.loads((res / "eval" / "released" / "val_ppl.json").read_text())
    trained = json.loads((res / "eval" / "mdlm" / "val_ppl.json").read_text())
    assert imported["val_nll"] == trained["val_nll"]  # same weights, same seeded draws: the same bound
    assert imported["pass_nll"] == trained["pass_nll"]


METRICS = ("val_nll", "val_ppl", "val_ppl_se", "pass_nll", "num_tokens", "gen_ppl", "entropy", "gen_ppl_before",
           "entropy_before", "sc_steps_mean", "sc_changes_mean", "mauve")  # mauve: once the pipeline has it


@pytest.mark.e2e
def test_two_smoke_runs_in_fresh_copies_give_identical_metrics(smoke_work, tmp_path):
    """Determinism: the same config and seeds on the same machine give the same val PPL, gen PPL, entropy and
    samples, bit for bit, in a second run in a fresh directory (MAUVE is not in the pipeline yet)."""
    second = tmp_path / "work"
    second.mkdir()
    smk(*SMOKE_PROFILE, "--configfile", SMOKE, "--directory", str(second))
    files = sorted(p.relative_to(second) for p in (second / "results" / "eval").rglob("*.json"))
    assert len(files) > 20
    compared = 0
    for rel in files:
        a, b = (json.loads((w / rel).read_text()) for w in (smoke_work, second))
        for key in METRICS:
            if key in b:
                assert a.get(key) == b[key], (str(rel), key, a.get(key), b[key])
                compared += 1
    assert compared > 40
    for path in sorted((second / "results" / "samples").rglob("*.jsonl")):
        rel = path.relative_to(second)
        rows = [[json.loads(x)["tokens"] for x in (w / rel).read_text().splitlines()] for w in (smoke_work, second)]
        assert rows[0] == rows[1], str(rel)


def _train_overlay(tmp_path, steps: int):
    overlay = tmp_path / "train.yaml"
    overlay.write_text(f"runs:\n  mdlm: {{algo: mdlm, trainer: {{max_steps: {steps}, log_every: 1, ckpt_every: 20}}}}\n")
    return overlay


def test_killed_snakemake_leaves_a_state_the_next_invocation_completes(tmp_path):
    """SIGKILL to Snakemake and its jobs mid-training leaves locks and an incomplete marker; `make run` / `make
    smoke` first call `dlm unlock-stale` (which keeps the locks while a Snakemake still works there), and the
    next invocation completes, training resuming from its last checkpoint."""
    import signal

    overlay, work = _train_overlay(tmp_path, 400), tmp_path / "work"
    args = [*SMOKE_PROFILE, "--configfile", SMOKE, str(overlay), "--directory", str(work),
            "results/models/mdlm/final.ckpt"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([*SNAKEMAKE, *args], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = work / "logs" / "train" / "mdlm.log"
    deadline = time.time() + 240
    while time.time() < deadline and not (log.exists() and log.read_text().count(" loss ") >= 45):
        time.sleep(0.3)
    unlock = [sys.executable, "-m", "dlm.cli", "unlock-stale", "--directory", str(work)]
    live = subprocess.run(unlock, capture_output=True, text=True, check=True).stdout
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert "no stale Snakemake locks" in live  # a live Snakemake's locks are kept
    assert list((work / ".snakemake" / "locks").glob("*.lock")), "the killed Snakemake left no locks?"
    refused = smk(*args, check=False)
    assert refused.returncode != 0 and "cannot be locked" in refused.stdout + refused.stderr
    assert "removed" in subprocess.run(unlock, capture_output=True, text=True, check=True).stdout
    smk(*args)
    assert "resuming from" in log.read_text()
    import torch

    assert torch.load(work / "results" / "models" / "mdlm" / "final.ckpt", weights_only=True)["global_step"] == 400


def test_full_disk_fails_the_job_cleanly_and_the_rerun_completes(tmp_path):
    """A job that cannot write (here: a file-size limit, as a full disk gives ENOSPC) fails with the OS error
    in its log, leaves no output that looks complete and loses nothing produced before; the rerun completes
    without redoing the data steps."""
    overlay, work = _train_overlay(tmp_path, 40), tmp_path / "work"
    args = [*SMOKE_PROFILE, "--configfile", SMOKE, str(overlay), "--directory", str(work),
            "results/models/mdlm/final.ckpt"]
    limited = subprocess.run(["bash", "-c", 'ulimit -f 1500; exec "$@"', "bash", *SNAKEMAKE, *args], cwd=ROOT,
                             capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert limited.returncode != 0
    assert "File too large" in (work / "logs" / "train" / "mdlm.log").read_text()
    assert not (work / "results" / "models" / "mdlm" / "final.ckpt").exists()
    leftovers = [p for p in (work / "results" / "models").rglob("*") if p.is_file()]
    assert not leftovers, leftovers  # no partial checkpoint anywhere
    packed = work / "results" / "data" / "kjv-smoke" / "packed" / "meta.json"
    assert packed.exists()
    counts = job_counts(smk("-n", *args).stdout)
    assert counts == {"train": 1}, counts  # the data steps are intact: only the failed job reruns
    smk(*args)
    assert (work / "results" / "models" / "mdlm" / "final.ckpt").exists()
