"""The papers' values beside ours: the shipped file is well formed and names real runs / samplers of the paper
configs, and tables of a paper config show the value, the deviation and a tolerance flag."""

import copy
import json
import math
from pathlib import Path

import pytest
import yaml

from dlm.config import plan_jobs, plan_round_runs
from dlm.report import paper_values as pv
from dlm.report.tables import gen_ppl_table, val_ppl_table

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "config" / "paper_values.yaml"


def test_shipped_values_name_runs_and_samplers_of_the_paper_configs():
    entries, tolerance = pv.load(SHIPPED)
    assert len(entries) > 80 and set(entries["metric"]) <= set(tolerance)
    for dataset, group in entries.groupby("dataset"):
        cfg = yaml.safe_load((ROOT / "config" / "paper" / f"{dataset}.yaml").read_text())
        assert cfg["corpus"]["name"] == dataset
        # the config's runs, the distillation rounds it samples (RUN_roundK) and the tables' held-out text row
        runs = set(cfg["runs"]) | set(plan_round_runs(cfg)) | {"reference"}
        assert set(group["run"]) <= runs, set(group["run"]) - runs
        planned = {(run, sampler, steps) for run, sampler, steps, _ in plan_jobs(cfg)}
        for _, e in group[group["sampler"].notna()].iterrows():
            assert (e["run"], e["sampler"], int(e["steps"])) in planned, dict(e)
    assert (entries["source"].str.len() > 3).all()


def _val(tmp_path, run, algo, ppl):
    p = tmp_path / f"{run}.json"
    p.write_text(json.dumps({"run": run, "algo": algo, "val_ppl": ppl, "val_nll": math.log(ppl), "val_ppl_se": 0.1}))
    return p


def test_val_table_of_a_paper_config_flags_rows_outside_tolerance(tmp_path):
    paths = [_val(tmp_path, "ar", "ar", 17.9), _val(tmp_path, "mdlm", "mdlm", 30.0), _val(tmp_path, "x", "mdlm", 9.0)]
    df = val_ppl_table(paths, tmp_path / "owt", paper_values=SHIPPED, dataset="owt")
    row = df.set_index("run")
    assert row.loc["ar", "paper_val_ppl"] == 17.5 and row.loc["ar", "val_ppl_dev"] == pytest.approx(0.4 / 17.5)
    assert row.loc["ar", "val_ppl_flag"] == "within ±10%" and row.loc["mdlm", "val_ppl_flag"] == "outside ±10%"
    assert math.isnan(row.loc["x", "paper_val_ppl"]) and row.loc["x", "val_ppl_flag"] == ""
    assert "DUO Table 1" in row.loc["mdlm", "val_ppl_source"]
    md = (tmp_path / "owt.md").read_text()
    assert "Paper Val. PPL" in md and "outside ±10%" in md and "+29.3%" in md
    # another corpus (the embedded default's): no paper columns, the table as before
    plain = val_ppl_table(paths, tmp_path / "kjv", paper_values=SHIPPED, dataset="kjv")
    assert "paper_val_ppl" not in plain.columns


def test_gen_table_matches_steps_and_sampler(tmp_path):
    def gen(run, algo, sampler, steps, ppl, ent):
        p = tmp_path / f"{run}_{sampler}_{steps}.json"
        p.write_text(json.dumps({"run": run, "algo": algo, "sampler": sampler, "steps": steps, "seed": 0,
                                 "gen_ppl": ppl, "entropy": ent}))
        return p

    paths = [gen("duo", "duo", "duo_ancestral", 8, 200.0, 5.5), gen("duo", "duo", "duo_ancestral", 32, 150.0, 5.6),
             gen("duo", "duo", "duo_greedy_tail", 8, 120.0, 4.95)]
    df = gen_ppl_table(paths, tmp_path / "gen", paper_values=SHIPPED, dataset="owt").set_index(["sampler", "steps"])
    assert df.loc[("duo_ancestral", 8), "paper_gen_ppl"] == 198.27
    assert df.loc[("duo_ancestral", 8), "gen_ppl_flag"] == "within ±15%"
    assert df.loc[("duo_ancestral", 32), "gen_ppl_flag"] == "outside ±15%"
    assert df.loc[("duo_greedy_tail", 8), "paper_entropy"] == 4.91
    assert df.loc[("duo_greedy_tail", 8), "entropy_dev"] == pytest.approx(0.04)
    assert df.loc[("duo_ancestral", 32), "paper_entropy"] == 5.57  # DUO Table 5 gives every step count's entropy


@pytest.mark.parametrize("edit,fragment", [
    (lambda d: d["values"][0].pop("source"), "lacks ['source']"),
    (lambda d: d["values"][0].update(value="17"), "must be a number"),
    (lambda d: d["values"][0].update(metric="bleu"), "has no tolerance"),
    (lambda d: d["values"][0].update(sped=3), "unknown keys"),
    (lambda d: d["values"].append(copy.deepcopy(d["values"][0])), "duplicate entries"),
    (lambda d: d["tolerance"].update(val_ppl={"relative": -1}), "tolerance.val_ppl"),
])
def test_bad_paper_values_name_the_file_and_entry(tmp_path, edit, fragment):
    doc = yaml.safe_load(SHIPPED.read_text())
    edit(doc)
    bad = tmp_path / "values.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match="values.yaml") as e:
        pv.load(bad)
    assert fragment in str(e.value)


def test_curriculum_and_gidd_tables_of_a_paper_config_show_the_papers_bound(tmp_path):
    from dlm.report.tables import curriculum_table, gidd_table

    paths = [_val(tmp_path, "udlm", "udlm", 27.0), _val(tmp_path, "duo", "duo", 30.0),
             _val(tmp_path, "mdlm", "mdlm", 23.0), _val(tmp_path, "gidd_pu01", "gidd", 23.5)]
    cur = curriculum_table(paths, tmp_path / "cur", paper_values=SHIPPED, dataset="owt").set_index("run")
    assert cur.loc["duo", "paper_val_ppl"] == 25.2 and cur.loc["duo", "val_ppl_flag"] == "outside ±10%"
    assert cur.loc["udlm", "val_ppl_flag"] == "within ±10%"
    gidd = gidd_table(paths, tmp_path / "gidd", paper_values=SHIPPED, dataset="owt").set_index("run")
    assert gidd.loc["gidd_pu01", "paper_val_ppl"] == 23.67 and "unverified" in gidd.loc["gidd_pu01", "val_ppl_source"]
    assert "Paper Val. PPL" in (tmp_path / "gidd.md").read_text()
