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

    from dlm.config import expand_seeds

    for cfg in ["config/config.yaml", "config/gpu.yaml", "config/paper/owt.yaml", "config/paper/lm1b.yaml"]:
        loaded = yaml.safe_load((ROOT / cfg).read_text())
        expand_seeds(loaded)  # training-seed lists: one run per seed (the default trains duo and duo_pp x 3)
        runs = loaded["runs"]
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


def test_paper_and_table_targets_build_only_their_files(tmp_path):
    """`snakemake remdm_paper` builds the ReMDM paper's tables and figures (not the others'); `table_remdm` one table."""
    counts = job_counts(smk("-n", "--cores", "2", "--configfile", SMOKE, "--directory", str(tmp_path), "remdm_paper").stdout)
    assert counts["remdm_paper"] == 1 and counts["table_sampler"] == 2  # remdm and sampler_speed
    assert {"figure_frontier", "figure_mauve", "figure_entropy", "table_gen_ppl"} <= set(counts)
    assert not {"table_val_ppl", "table_gidd_pu", "table_cost", "figure_training_curves", "all"} & set(counts)
    counts = job_counts(smk("-n", "--cores", "2", "--configfile", SMOKE, "--directory", str(tmp_path), "table_remdm").stdout)
    assert counts["table_sampler"] == 1 and "table_gen_ppl" not in counts and "train" in counts


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


def test_hostile_checkpoint_in_the_cache_is_refused_by_the_consuming_job(tmp_path):
    """The between-workflow cache on shared storage hands one user's outputs to another user's jobs: an imported
    checkpoint replaced there by a hostile one (a torch zip file; a plain pickle) is served from the cache to a
    second workflow, and its sample job refuses it without running its code (docs/security.md)."""
    import pickle

    import torch
    from safetensors.torch import save_file

    from dlm.algos import get_method
    from dlm.checkpoints.convert import original_name
    from dlm.data.tokenizer import load_tokenizer, special_ids, train_bpe

    (tmp_path / "text.jsonl").write_text("".join(json.dumps({"text": f"In the beginning {i} God created the heaven "
                                                                      f"and the earth {i * i}."}) + "\n"
                                                 for i in range(200)))
    train_bpe(str(tmp_path / "text.jsonl"), 300, str(tmp_path / "tok"))
    sid = special_ids(load_tokenizer(tmp_path / "tok"))
    overlay = {"runs": {}}
    for i, name in enumerate(("evil_zip", "evil_pickle")):  # two sources with other weights: two cache entries
        torch.manual_seed(i)
        method = get_method("mdlm")(vocab_size=sid["vocab_size"], block_length=32, tokenizer_dir=str(tmp_path / "tok"),
                                    special_ids={k: sid[k] for k in ("bos", "eos", "pad", "mask")},
                                    model={"size": "nano", "dropout": 0.0})
        save_file({"backbone." + original_name(k): v.contiguous() for k, v in method.backbone.state_dict().items()},
                  str(tmp_path / f"{name}.safetensors"))
        overlay["runs"][name] = {"import": str(tmp_path / f"{name}.safetensors"), "algo": "mdlm", "n_heads": 2,
                                 "length": 32, "tokenizer": str(tmp_path / "tok")}
    (tmp_path / "evil.yaml").write_text(json.dumps(overlay))
    cfg = ("--configfile", SMOKE, str(tmp_path / "evil.yaml"))
    env = {"SNAKEMAKE_OUTPUT_CACHE": str(tmp_path / "cache")}
    (tmp_path / "cache").mkdir()
    ckpts = [f"results/models/{name}/final.ckpt" for name in overlay["runs"]]
    smk("--cores", "2", "--cache", *cfg, "--directory", str(tmp_path / "a"), *ckpts, env=env)

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    hostile = {"hyper_parameters": {"method": {"algo": "mdlm"}}, "state_dict": {}, "global_step": Payload()}
    for ckpt in ckpts:  # someone with write access to the cache replaces the entries
        entry = Path(os.path.realpath(tmp_path / "a" / ckpt))
        assert entry.parent == Path(os.path.realpath(tmp_path / "cache"))
        entry.chmod(0o644)
        if "zip" in ckpt:
            torch.save(hostile, entry)
        else:
            entry.write_bytes(pickle.dumps(hostile))
    samples = [f"results/samples/{name}/mdlm_ancestral_T2_s0.jsonl" for name in overlay["runs"]]
    res = smk("--cores", "2", "--cache", "--keep-going", *cfg, "--directory", str(tmp_path / "b"), *samples, env=env,
              check=False)
    log = res.stdout + res.stderr
    assert res.returncode != 0 and all(f"{ckpt} from cache" in log for ckpt in ckpts), log[-3000:]
    for name in overlay["runs"]:
        job_log = (tmp_path / "b" / "logs" / "sample" / name / "mdlm_ancestral_T2_s0.log").read_text()
        assert f"checkpoint 'results/models/{name}/final.ckpt' refused: it names posix.system" in job_log, job_log
    assert not marker.exists()
    assert not any((tmp_path / "b" / s).exists() for s in samples)


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
    # duo's training-seed list [1, 2]: runs duo and duo_s2, one row with the mean and the spread over seeds
    assert (res / "models" / "duo_s2" / "final.ckpt").exists()
    assert list(val.loc[val["run"] == "duo", "n_seeds"]) == [2] and list(cur["n_seeds"]) == [1, 2, 1]
    assert val.loc[val["run"] == "duo", "val_ppl_sd"].iloc[0] > 0
    gidd = pd.read_csv(res / "tables" / "gidd_pu.csv")
    assert set(gidd["run"]) == {"mdlm", "gidd"}
    # zero-shot PPL: rows = the configured runs, columns = the held-out split, then each corpus with its SE;
    # every model is better on its own held-out text than on the out-of-domain corpora
    zs_cfg = yaml.safe_load(Path(SMOKE).read_text())["zero_shot"]
    zs = pd.read_csv(res / "tables" / "zero_shot.csv")
    held_out = yaml.safe_load(Path(SMOKE).read_text())["corpus"]["name"]
    assert sorted(zs["run"]) == sorted(zs_cfg["runs"]) and set(zs["source"]) == {"ours"}
    assert list(zs.columns[4:]) == [c for name in [held_out, *zs_cfg["corpora"]] for c in (name, f"{name}_se")]
    assert zs.columns[3] == "eos" and set(zs["eos"]) == {"yes"}  # ar and mdlm: MDLM's code puts EOS between documents
    for corpus in zs_cfg["corpora"]:
        assert (zs[held_out] < zs[corpus]).all(), (corpus, zs)
        assert (zs.loc[zs["algo"] != "ar", f"{corpus}_se"] > 0).all()
    zj = json.loads((res / "eval" / "mdlm" / "zero_shot.json").read_text())
    assert zj["settings"]["max_batches"] == zs_cfg["max_batches"] and zj["settings"]["passes"] == zs_cfg["passes"]
    for corpus in zs_cfg["corpora"]:
        packed = json.loads((res / "data" / "zero_shot" / corpus / "packed" / "meta.json").read_text())
        assert zj["corpora"][corpus]["blocks"] == packed["splits"]["valid"]["n_blocks"] > 0
    assert "\\toprule" in (res / "tables" / "zero_shot.tex").read_text()
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
    assert sc["algo"].iloc[0] == "data"  # every gen-PPL table starts with the held-out text's row
    sc = sc.iloc[1:]
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
    from dlm.checkpoints.convert import original_name

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

    # MAUVE: one JSON per unconditional, not self-corrected sample file (none for prompts or self-correction),
    # labelled like the gen-PPL JSON, with its spread over the k-means seeds and every setting recorded
    plain = [("ar", "ar_T31_s0"), ("mdlm", "mdlm_ancestral_T4_s0"), ("mdlm", "mdlm_semi_ar_T4_s0"),
             ("mdlm", "remdm_conf_T4_s0"), ("mdlm_sdtt", "mdlm_ancestral_T4_s0"), ("udlm", "duo_ancestral_T4_s0"),
             ("duo_dcd", "duo_greedy_tail_T4_s0")]
    for run, name in plain:
        m = json.loads((res / "eval" / run / f"mauve_{name}.json").read_text())
        g = json.loads((res / "eval" / run / f"gen_{name}.json").read_text())
        assert {k: m[k] for k in ("run", "algo", "sampler", "steps", "seed")} == \
            {k: g[k] for k in ("run", "algo", "sampler", "steps", "seed")}, name
        assert 0 < m["mauve"] <= 1 and len(m["mauve_per_seed"]) == 3 and m["mauve_std"] is not None
        assert m["mauve"] == pytest.approx(sum(m["mauve_per_seed"]) / 3)
        assert (m["num_samples"], m["num_references"], m["num_buckets"]) == (4, 4, 2)
        s = m["settings"]
        assert (s["featurizer"], s["kmeans_seeds"], s["scaling_factor"], s["num_buckets"]) == \
            ("all-MiniLM-L6-v2", [25, 26, 27], 5.0, 2)
        assert s["reference_length"] == 32 and {"config_hash", "git_commit", "packages"} <= set(m["provenance"])
        assert (work / "benchmarks" / "eval" / run / f"mauve_{name}.tsv").exists()
    for run, name in (("mdlm", "mdlm_infill_T4_s0"), ("duo", "duo_prefix_T4_s0"), ("mdlm", "remdm_loop_p09_T8_s0"),
                      ("gidd", "gidd_sc_T4_s0")):
        assert not (res / "eval" / run / f"mauve_{name}.json").exists(), name
    assert json.loads((res / "eval" / "mdlm" / "mauve_mdlm_semi_ar_T4_s0.json").read_text())["settings"][
        "sample_length"] == 48  # longer than a block: compared with whole 32-token blocks
    semi = json.loads((res / "eval" / "mdlm" / "gen_mdlm_semi_ar_T4_s0.json").read_text())
    assert semi["whole"] and semi["num_truncated"] == 0  # gen PPL over the whole 48 tokens, as MDLM
    assert not json.loads((res / "eval" / "mdlm" / "gen_remdm_conf_T4_s0.json").read_text())["whole"]
    ref = json.loads((res / "eval" / "reference" / "mauve_heldout.json").read_text())
    assert (ref["run"], ref["algo"]) == ("reference", "data") and 0 < ref["mauve"] <= 1
    held = [json.loads(x)["block"] for x in (res / "samples" / "reference" / "heldout.jsonl").read_text().splitlines()]
    refs = [json.loads(x) for x in (res / "samples" / "reference" / "mauve_references.jsonl").read_text().splitlines()]
    assert len(refs) == 4 and not set(held) & {r["block"] for r in refs}
    remdm = pd.read_csv(res / "tables" / "remdm.csv")
    assert remdm["mauve"].notna().all() and remdm["mauve_std"].notna().all()
    assert "MAUVE" in (res / "tables" / "remdm.md").read_text()
    # the claims table: one row per claim of config/claims_smoke.yaml (every test kind), each with a verdict
    claims = pd.read_csv(res / "tables" / "claims.csv").set_index("id")
    spec = yaml.safe_load((ROOT / "config" / "claims_smoke.yaml").read_text())["claims"]
    assert list(claims.index) == [c["id"] for c in spec]
    assert set(claims["verdict"]) <= {"holds", "reversed", "inconclusive", "degenerate"}, claims["verdict"]
    assert claims.loc[["val_better", "val_close", "gen_better", "mauve_better", "sc_lowers", "train_time", "downstream"],
                      ["lo", "hi"]].notna().all().all()
    assert "identical tokens" in claims.at["same_faster", "note"]  # the cached sampler: ddpm's samples
    assert claims.at["val_better", "compared"] in ("ar vs mdlm", "ar vs udlm")
    assert "Verdict" in (res / "tables" / "claims.md").read_text()


METRICS = ("val_nll", "val_ppl", "val_ppl_se", "pass_nll", "num_tokens", "gen_ppl", "entropy", "gen_ppl_before",
           "entropy_before", "sc_steps_mean", "sc_changes_mean", "mauve", "mauve_std", "mauve_per_seed", "tasks")


@pytest.mark.e2e
def test_downstream_accuracy_through_lm_eval_and_its_partial_reruns(smoke_work, tmp_path):
    """The smoke run scored its downstream runs on the task it built from the held-out text, through lm-eval (offline);
    the table has chance first; a deleted table, a changed draw count or a changed task rerun only what they touch."""
    import yaml

    work, res = smoke_work, smoke_work / "results"
    cfg = yaml.safe_load(Path(SMOKE).read_text())["downstream"]
    [task] = cfg["tasks"]
    rows = [json.loads(x) for x in (res / "downstream" / "tasks" / task / "test.jsonl").read_text().splitlines()]
    assert len(rows) == cfg["local"][task]["questions"]
    assert yaml.safe_load((res / "downstream" / "tasks" / task / f"{task}.yaml").read_text())["task"] == task
    table = pd.read_csv(res / "tables" / "downstream.csv")
    assert table["run"].iloc[0] == "chance" and table[task].iloc[0] == 25.0
    assert sorted(table["run"].iloc[1:]) == sorted(cfg["runs"])
    for run in cfg["runs"]:
        j = json.loads((res / "eval" / run / "downstream.json").read_text())
        t = j["tasks"][task]
        assert t["n"] == len(rows) and 0 <= t["acc"] <= 1 and t["chance"] == 0.25 and t["acc_stderr"] > 0
        assert j["mc_draws"] == (1 if j["algo"] == "ar" else cfg["num_mc_samples"])
        assert j["settings"]["lm_eval_version"] == "0.4.13" and j["settings"]["num_mc_samples"] == cfg["num_mc_samples"]
        questions = [json.loads(x) for x in (res / "eval" / run / "downstream_questions.jsonl").read_text().splitlines()]
        assert [q["target"] for q in questions] == [r["label"] for r in rows]
        assert (work / "benchmarks" / "eval" / run / "downstream.tsv").exists()
    (res / "tables" / "downstream.md").unlink()
    out = smk(*SMOKE_PROFILE, "--configfile", SMOKE, "--directory", str(work), "table_downstream")
    assert job_counts(out.stdout + out.stderr) == {"table_downstream": 1}
    overlay = tmp_path / "draws.yaml"
    overlay.write_text("downstream:\n  num_mc_samples: 8\n")
    dry = smk("-n", *SMOKE_PROFILE, "--configfile", SMOKE, str(overlay), "--directory", str(work), "table_downstream")
    assert job_counts(dry.stdout) == {"downstream_eval": len(cfg["runs"]), "table_downstream": 1}
    overlay.write_text(f"downstream:\n  local:\n    {task}: {{questions: 10}}\n")
    dry = smk("-n", *SMOKE_PROFILE, "--configfile", SMOKE, str(overlay), "--directory", str(work), "table_downstream")
    assert job_counts(dry.stdout) == {"downstream_task": 1, "downstream_eval": len(cfg["runs"]), "table_downstream": 1}


# what the determinism test builds again: every kind of metric (val, zero-shot and downstream PPL / accuracy, gen
# PPL, MAUVE, a ReMDM sampler, the curriculum-trained DUO, the image part), not the whole DAG
RERUN_TARGETS = [f"results/eval/mdlm/{name}.json" for name in (
    "val_ppl", "zero_shot", "downstream", "gen_mdlm_ancestral_T4_s0", "mauve_mdlm_ancestral_T4_s0",
    "gen_remdm_conf_T4_s0")] + ["results/eval/duo/val_ppl.json", "results/eval/ar/gen_ar_T31_s0.json",
                                "results/images/digits/eval/duo/duo_ancestral_class_T4_s0.json",
                                "results/images/digits/eval/reference.json"]


@pytest.mark.e2e
def test_two_smoke_runs_in_fresh_copies_give_identical_metrics(smoke_work, tmp_path):
    """Determinism: the same config and seeds on the same machine give the same val PPL, gen PPL, entropy, MAUVE
    (every k-means seed) and samples, bit for bit, in a second run in a fresh directory (of the targets that
    cover every kind of metric: RERUN_TARGETS)."""
    second = tmp_path / "work"
    second.mkdir()
    smk(*SMOKE_PROFILE, "--configfile", SMOKE, "--directory", str(second), *RERUN_TARGETS)
    assert all((second / t).exists() for t in RERUN_TARGETS)
    files = sorted(p.relative_to(second) for p in (second / "results" / "eval").rglob("*.json"))
    assert len(files) >= 8
    compared = 0
    for rel in files:
        a, b = (json.loads((w / rel).read_text()) for w in (smoke_work, second))
        for key in METRICS:
            if key in b:
                assert a.get(key) == b[key], (str(rel), key, a.get(key), b[key])
                compared += 1
    assert compared > 15
    for path in sorted((second / "results" / "samples").rglob("*.jsonl")):
        rel = path.relative_to(second)
        rows = [[json.loads(x)["tokens"] for x in (w / rel).read_text().splitlines()] for w in (smoke_work, second)]
        assert rows[0] == rows[1], str(rel)
    images = sorted(p.relative_to(second) for p in (second / "results" / "images").rglob("eval/**/*.json"))
    assert len(images) >= 2  # the reference rows and the score of each image sample file
    for rel in images:
        a, b = (json.loads((w / rel).read_text()) for w in (smoke_work, second))
        assert {k: v for k, v in a.items() if k not in ("provenance", "seconds_per_image")} == \
            {k: v for k, v in b.items() if k not in ("provenance", "seconds_per_image")}, str(rel)


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
    leftovers = [p for p in (work / "results" / "models").rglob("*") if p.is_file()
                 and "csv" not in p.relative_to(work).parts]  # the attempt's training-curve log (dlm.train_log) stays
    assert not leftovers, leftovers  # no partial checkpoint anywhere
    packed = work / "results" / "data" / "kjv-smoke" / "packed" / "meta.json"
    assert packed.exists()
    counts = job_counts(smk("-n", *args).stdout)
    assert counts == {"train": 1}, counts  # the data steps are intact: only the failed job reruns
    smk(*args)
    assert (work / "results" / "models" / "mdlm" / "final.ckpt").exists()


@pytest.fixture(scope="module")
def smoke_report(smoke_work, tmp_path_factory):
    """`snakemake --report` on the finished smoke run: one self-contained HTML file."""
    html = tmp_path_factory.mktemp("report") / "report.html"
    smk("--report", str(html), "--configfile", SMOKE, "--directory", str(smoke_work))
    return html


@pytest.mark.e2e
def test_report_html_holds_every_table_and_figure(smoke_work, smoke_report):
    res = smoke_work / "results"
    html = smoke_report.read_text()
    assert smoke_report.stat().st_size > 100_000 and "<html" in html.lower()
    tables = sorted(p.name for p in (res / "tables").glob("*.csv") if not p.name.endswith("_seeds.csv"))
    pages = sorted(p.name for p in (res / "tables").glob("*.html"))
    figures = sorted(p.name for p in (res / "figures").glob("*.png"))
    assert {"val_ppl.csv", "gen_ppl.csv", "cost.csv", "remdm.csv"} <= set(tables)
    assert pages == sorted(t.replace(".csv", ".html") for t in tables)  # every table also as it reads
    assert set(figures) == {f"{f}.png" for f in ("gen_ppl_steps", "entropy_steps", "mauve_steps", "frontier",
                                                  "training_curves", "images_samples")}
    missing = [name for name in tables + pages + figures if name not in html]
    assert not missing, missing
    # the tables are shown as their Markdown reads (formatted cells, bold where rows compete, the caption),
    # not as raw CSV floats: the embedded HTML items hold the tables
    import base64

    shown = [base64.b64decode(m).decode() for m in re.findall(r"data:text/html;[^,]*?base64,([A-Za-z0-9+/=]+)", html)]
    shown = [page for page in shown if "<table>" in page]
    assert len(shown) == len(pages) and any("<strong>" in page for page in shown)
    assert all('<p class="caption">' in page for page in shown)
    # the captions say what each item shows and how it was made
    for phrase in ("nucleus", "CSVLogger", "max_rss", "gen_ppl_table", "entropy_figure", "images_table"):
        assert phrase in html, phrase
    # the figures' images and the tables' data are inside the file (self-contained): no links to results/
    assert "src=\"results/" not in html and "href=\"results/" not in html


def _chromium():
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.e2e
@pytest.mark.skipif(_chromium() is None, reason="no Chromium on this machine (apt-get install chromium)")
def test_report_renders_in_headless_chromium(smoke_report, tmp_path):
    """The report opens in a real browser, offline, and the page is not blank."""
    import numpy as np
    from matplotlib.image import imread

    shot = tmp_path / "report.png"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1600", "--virtual-time-budget=10000",
           f"--screenshot={shot}", smoke_report.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert shot.exists(), res.stderr[-3000:]
    pixels = imread(str(shot))[..., :3].reshape(-1, 3)
    colours = np.unique((pixels * 255).astype(np.uint8), axis=0)
    assert len(colours) > 50, f"the rendered report is (nearly) one colour: {len(colours)} colours"


@pytest.mark.e2e
def test_changed_nucleus_p_reruns_only_its_samples_and_tables(smoke_work, tmp_path):
    """A copy of the smoke config with one variant's nucleus_p changed: a dry run (rerun triggers mtime, params,
    input) schedules that variant's sample and metrics and the tables / figures that read them, nothing else."""
    import yaml

    cfg = yaml.safe_load(Path(SMOKE).read_text())
    cfg["sampling"]["variants"]["mdlm_top_p09"]["nucleus_p"] = 0.85
    changed = tmp_path / "smoke_top_p.yaml"
    changed.write_text(yaml.safe_dump(cfg, sort_keys=False))  # Snakemake compares dict params in key order
    res = smk("-n", *SMOKE_PROFILE, "--configfile", str(changed), "--directory", str(smoke_work),
              "--rerun-triggers", "mtime", "params", "input")
    counts = job_counts(res.stdout)
    assert counts.get("sample") == 1 and counts.get("gen_ppl") == 1 and counts.get("mauve") == 1, counts
    assert "results/samples/mdlm/mdlm_top_p09_T4_s0.jsonl" in res.stdout
    # mdlm_ancestral with top-p is read by the distill, remdm, sampler-speed and semi-AR (as its one-block
    # reference) tables, not by the self-correction table
    assert counts.get("table_sampler") == 4 and "table=self_correction" not in res.stdout, counts
    touched = {"sample", "gen_ppl", "mauve", "table_gen_ppl", "table_sampler", "table_cost", "figure_gen_ppl",
               "figure_entropy", "figure_frontier", "figure_mauve", "all"}
    assert set(counts) <= touched, set(counts) - touched
    assert {"table_gen_ppl", "figure_frontier", "table_cost"} <= set(counts)



@pytest.mark.e2e
def test_smoke_image_part(smoke_work):
    """The image part of the smoke run (rules/images.smk): a digits UNet sampled by class and without, scored by
    the pipeline's classifier (the table says it is not Inception FID), and the sample grid."""
    res = smoke_work / "results"
    df = pd.read_csv(res / "tables" / "images.csv")
    assert list(df["method"][:2]) == ["data", "data"] and "class" in set(df["condition"].dropna())
    assert df["fid"].notna().all() and df.loc[1, "fid"] > df.loc[0, "fid"]  # shuffled pixels above the floor
    assert "not Inception" in (res / "tables" / "images.md").read_text()
    rec = json.loads((res / "images" / "digits" / "eval" / "duo" / "duo_ancestral_class_T4_s0.json").read_text())
    assert rec["features"] == "classifier" and 0 <= rec["label_accuracy"] <= 1 and rec["num_images"] == 40


@pytest.mark.e2e
def test_changed_image_guidance_reruns_only_class_conditional_samples(smoke_work, tmp_path):
    """A changed guidance weight reruns the class-conditional image samples, their scores, the images table and
    figure; not the image training, the classifier or the reference statistics (unconditional files take no
    guidance parameter, so they would not rerun either)."""
    import yaml

    cfg = yaml.safe_load(Path(SMOKE).read_text())
    cfg["images"]["sampling"]["guidance"] = 2.0
    changed = tmp_path / "smoke_guidance.yaml"
    changed.write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = smk("-n", "images", *SMOKE_PROFILE, "--configfile", str(changed), "--directory", str(smoke_work),
              "--rerun-triggers", "mtime", "params", "input")
    counts = job_counts(res.stdout)
    assert counts == {"images_sample": 1, "images_score": 1, "table_images": 1, "figure_images": 1, "images": 1}, counts
    assert "duo_ancestral_class_T4_s0.npz" in res.stdout


@pytest.mark.e2e
def test_tables_and_figures_are_rebuilt_from_the_metric_jsons_alone(smoke_work, tmp_path):
    """Delete every table and figure of a finished run (in a copy) and rerun: only the table and figure jobs run,
    and they give the same bytes (the tables read the metric JSONs and benchmark files, nothing else)."""
    work = tmp_path / "work"
    shutil.copytree(smoke_work, work, symlinks=True)
    before = {p.relative_to(work): p.read_bytes() for d in ("results/tables", "results/figures")
              for p in sorted((work / d).iterdir())}
    assert len(before) > 30
    for d in ("results/tables", "results/figures"):
        shutil.rmtree(work / d)
    res = smk(*SMOKE_PROFILE, "--configfile", SMOKE, "--directory", str(work))
    ran = job_counts(res.stdout + res.stderr)
    assert ran and all(rule.startswith(("table_", "figure_", "all")) for rule in ran), ran
    after = {p.relative_to(work): p.read_bytes() for d in ("results/tables", "results/figures")
             for p in sorted((work / d).iterdir())}
    assert after.keys() == before.keys()
    changed = [str(k) for k in before if before[k] != after[k]]
    assert not changed, changed
