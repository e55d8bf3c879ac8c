"""The papers' missing cells: plan entries with their own sizes and distillation rounds, the ReMDM table's SEDD
and AR rows, the sampler-speed table's paper column, and the packed-LM1B config's DAG."""

import copy
import json
from pathlib import Path

import pytest
import yaml
from test_workflow import job_counts, smk

from dlm.config import ConfigError, check_config, plan_jobs, plan_round_runs

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "config" / "schema.yaml")
OWT = yaml.safe_load((ROOT / "config" / "paper" / "owt.yaml").read_text())


def test_plan_jobs_expand_rounds_and_sizes():
    jobs = plan_jobs(OWT)
    assert jobs[("mdlm", "mdlm_ddpm", 10000, 1)] == {"num_samples": 64, "batch_size": 1}  # MDLM README speed
    assert jobs[("mdlm", "mdlm_ddpm", 1024, 1)] == {"num_samples": 800, "batch_size": 8}
    rounds = plan_round_runs(OWT)
    assert rounds == {f"duo_dcd_round{k}": ("duo_dcd", k) for k in (1, 2, 3, 4)}
    assert {("duo_dcd_round3", "duo_greedy_tail", 8, 1), ("duo_dcd", "duo_greedy_tail", 16, 1)} <= set(jobs)
    for T in (2048, 4096):  # ReMDM Table 1's inference-time scaling, with its SEDD row
        assert {("mdlm", s, T, 1) for s in ("mdlm_p09", "remdm_fb", "remdm_dfm", "remdm_loop")} <= set(jobs)
        assert ("sedd", "sedd_analytic", T, 1) in jobs
    check_config(copy.deepcopy(OWT), SCHEMA)


@pytest.mark.parametrize("edit,fragment", [
    (lambda c: c["sampling"]["plan"].append({"run": "duo", "sampler": "duo_ancestral", "steps": [8], "rounds": [1]}),
     "not distilled"),
    (lambda c: c["sampling"]["plan"].append({"run": "duo_dcd", "sampler": "duo_ancestral", "steps": [8], "rounds": [6]}),
     "1..5"),
    (lambda c: c["sampling"]["plan"].append({"run": "mdlm", "sampler": "mdlm_ddpm", "steps": [1024], "batch_size": 2}),
     "planned twice with different sizes"),
])
def test_bad_plan_entries_are_config_errors(edit, fragment):
    cfg = copy.deepcopy(OWT)
    edit(cfg)
    with pytest.raises(ConfigError, match=fragment):
        check_config(cfg, SCHEMA)


def _gen(tmp_path, run, algo, sampler, kind, steps, ppl, graph=None, nucleus=1.0):
    p = tmp_path / f"{run}_{sampler}_{steps}.json"
    p.write_text(json.dumps({"run": run, "algo": algo, "sampler": sampler, "sampler_kind": kind, "steps": steps,
                             "seed": 1, "gen_ppl": ppl, "entropy": 5.5, "nfe": steps, "nucleus_p": nucleus,
                             "algo_args": {"graph": graph} if graph else {}, "seconds_per_sample": 1.0}))
    return str(p)


def test_remdm_table_has_the_sedd_and_ar_rows_and_speed_table_the_readme(tmp_path):
    from dlm.report.sampling_tables import remdm_table, speed_table

    paths = [_gen(tmp_path, "mdlm", "mdlm", "mdlm_p09", "mdlm_ancestral", 2048, 50.0, nucleus=0.9),
             _gen(tmp_path, "sedd", "sedd", "sedd_analytic", "sedd_analytic", 4096, 101.0, graph="absorb"),
             _gen(tmp_path, "sedd_uniform", "sedd", "sedd_analytic", "sedd_analytic", 1024, 130.0, graph="uniform"),
             _gen(tmp_path, "ar", "ar", "ar_p09", "ar", 1023, 12.5, nucleus=0.9)]
    df = remdm_table(paths, str(tmp_path / "remdm"), paper_values=str(ROOT / "config" / "paper_values.yaml"),
                     dataset="owt").set_index("run")
    assert set(df.index) == {"mdlm", "sedd", "ar"}  # SEDD Uniform is not a row of ReMDM's table
    assert df.loc["sedd", "paper_gen_ppl"] == 102.5 and df.loc["ar", "paper_entropy"] == 5.22
    assert df.loc["mdlm", "paper_gen_ppl"] == 51.3
    speed = [_gen(tmp_path, "mdlm", "mdlm", "mdlm_ancestral", "mdlm_ancestral", 10000, 40.0)]
    sp = speed_table(speed, str(tmp_path / "speed"), paper_values=str(ROOT / "config" / "paper_values.yaml"),
                     dataset="owt")
    assert sp.loc[0, "paper_seconds_per_sample"] == pytest.approx(60.4)


def test_packed_lm1b_config_trains_its_five_runs_on_wrap_bos_blocks(tmp_path):
    cfg = ROOT / "config" / "paper" / "lm1b_packed.yaml"
    res = smk("-n", "--cores", "2", "--configfile", str(cfg), "--directory", str(tmp_path))
    counts = job_counts(res.stdout)
    assert counts["train"] == 5 and counts["val_ppl"] == 5 and counts["pack"] == 1
    assert counts["table_duo_curriculum"] == 1 and "sample" not in counts
    assert yaml.safe_load(cfg.read_text())["data"]["packing"] == "wrap_bos"


def _bench(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_throughput_dry_path_on_cpu():
    """bench/gpu_check.py's paper-scale check imports and runs its code path on a CPU (tiny model)."""
    out = _bench("gpu_check").throughput("cpu", size="nano", L=16, K=64, batch=1, steps=1, warmup=0,
                                         algos=["mdlm", "duo_pp"])
    assert out["backends"] == ["sdpa"] and set(out["train"]) == {"mdlm", "duo_pp"}
    assert all(v["tokens_per_s"] > 0 for v in out["train"].values())
    assert out["forward"]["mdlm"]["tokens_per_s"] > 0 and out["forward"]["mdlm"]["seconds_per_call_batch1"] > 0


def test_paper_cost_estimates():
    pc = _bench("paper_cost")
    # one position: it unmasks at exactly one step, plus a noise-removal call with probability ~1e-5
    assert pc.cached_mdlm_calls(64, 1) == pytest.approx(1.0, abs=1e-4)
    assert pc.cached_mdlm_calls(1024, 8 * 1024) == pytest.approx(1024, rel=0.02)  # a batch unmasks at every step
    R = pc.rates(None)
    assert R["train"]["d3pm"] == R["train"]["mdlm"] / 2 and "issue 19" in R["source"]
    cost = pc.config_cost(ROOT / "config" / "paper" / "owt.yaml", R, 24.0)
    mdlm = next(r for r in cost["runs"] if r["run"] == "mdlm")
    assert mdlm["gpu_hours"] == pytest.approx(1e6 * 512 * 1024 / R["train"]["mdlm"] / 3600)
    assert mdlm["jobs"] == 5 and 150 < mdlm["params_m"] < 190  # 120 h on 8 GPUs; DiT-small ~170M parameters
    assert len(cost["samples"]) == len(plan_jobs(OWT)) and cost["total"]["gpu_hours"] > 0
