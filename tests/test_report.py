"""Golden-text checks of the result tables, CSV round trip and byte-stable figures."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from dlm.report.tables import collect, gen_ppl_table, val_ppl_table, write_table


def _dump(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


@pytest.fixture
def val_jsons(tmp_path):
    return [
        _dump(tmp_path, "mdlm.json", {"run": "mdlm_owt", "algo": "mdlm", "val_ppl": 23.21,
                                      "val_nll": 3.1446, "val_nll_se": 0.0123, "val_ppl_se": 0.29, "params": 169_600_000,
                                      "train_steps": 1_000_000, "num_tokens": 4096, "extra": 1}),
        _dump(tmp_path, "unigram.json", {"run": "unigram", "algo": "unigram", "val_ppl": 1234.5,
                                         "val_nll": 7.118}),
        _dump(tmp_path, "ar.json", {"run": "ar_owt", "algo": "ar", "val_ppl": 22.83,
                                    "val_nll": 3.128, "params": 169_600_000,
                                    "train_steps": 1_000_000, "num_tokens": 4096}),
    ]


VAL_MD = """\
| Run      | Algo    |   Params |     Steps |      Val. NLL ↓ |   Val. PPL ↓ |   Tokens |
|:---------|:--------|---------:|----------:|----------------:|-------------:|---------:|
| unigram  | unigram |        – |         – |          7.1180 |      1234.50 |        – |
| ar_owt   | ar      |   169.6M | 1,000,000 |      **3.1280** |    **22.83** |    4,096 |
| mdlm_owt | mdlm    |   169.6M | 1,000,000 | 3.1446 ± 0.0123 | 23.21 ± 0.29 |    4,096 |
"""

VAL_TEX = r"""\begin{table}
\centering
\caption{Validation perplexity (diffusion models: upper bound; $\pm$ the Monte-Carlo standard error of the bound; AR: exact). Steps: optimiser steps trained (a distilled run: its teacher's steps + rounds $\times$ steps per round). Bold: the lowest NLL / PPL among the compared runs.}
\label{tab:val_ppl}
\begin{tabular}{llrrrrr}
\toprule
Run & Algo & Params & Steps & Val. NLL $\downarrow$ & Val. PPL $\downarrow$ & Tokens \\
\midrule
unigram & unigram & -- & -- & 7.1180 & 1234.50 & -- \\
ar\_owt & ar & 169.6M & 1,000,000 & \textbf{3.1280} & \textbf{22.83} & 4,096 \\
mdlm\_owt & mdlm & 169.6M & 1,000,000 & 3.1446 $\pm$ 0.0123 & 23.21 $\pm$ 0.29 & 4,096 \\
\bottomrule
\end{tabular}
\end{table}
"""


def test_val_ppl_table_golden(tmp_path, val_jsons):
    df = val_ppl_table(val_jsons, tmp_path / "tables" / "val_ppl")
    assert list(df["run"]) == ["unigram", "ar_owt", "mdlm_owt"]
    assert (tmp_path / "tables" / "val_ppl.md").read_text() == VAL_MD
    tex = (tmp_path / "tables" / "val_ppl.tex").read_text()
    assert tex == VAL_TEX
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert tex.count(rule) == 1
    back = pd.read_csv(tmp_path / "tables" / "val_ppl.csv")
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert not list((tmp_path / "tables").glob("*.tmp"))
    # deterministic: a rewrite gives the same bytes
    before = {p.name: p.read_bytes() for p in (tmp_path / "tables").iterdir()}
    val_ppl_table(val_jsons, tmp_path / "tables" / "val_ppl")
    assert before == {p.name: p.read_bytes() for p in (tmp_path / "tables").iterdir()}


def test_collect_missing_fields(tmp_path, val_jsons):
    df = collect(val_jsons, {"run": True, "params": False, "nope": False})
    assert list(df.columns) == ["run", "params", "nope"]
    assert math.isnan(df.loc[1, "params"]) and df["nope"].isna().all()
    bad = _dump(tmp_path, "bad.json", {"run": "x", "algo": "ar", "val_nll": 1.0})
    with pytest.raises(ValueError, match=r"bad\.json.*'val_ppl'"):
        val_ppl_table([*val_jsons, bad], tmp_path / "t")
    nulled = _dump(tmp_path, "null.json", {"run": "x", "algo": "ar", "val_nll": 1.0, "val_ppl": None})
    with pytest.raises(ValueError, match=r"null\.json.*'val_ppl'"):
        collect([nulled], ["run", "val_ppl"])


def _gen(tmp_path, run, algo, steps, seed, ppl, **kw):
    d = {"run": run, "algo": algo, "sampler": "ancestral", "steps": steps, "seed": seed,
         "gen_ppl": ppl, "entropy": 5.6, "nfe": steps, "seconds_per_sample": 0.5,
         "num_tokens": 100, "num_samples": 4, **kw}
    return _dump(tmp_path, f"gen_{run}_{steps}_{seed}.json", d)


GEN_MD = """\
| Run      | Algo   | Sampler   |   Steps |       Gen. PPL ↓ |   Seeds |   Entropy |   NFE |   s / sample | Note   |
|:---------|:-------|:----------|--------:|-----------------:|--------:|----------:|------:|-------------:|:-------|
| ar_owt   | ar     | ancestral |    1024 |        **35.00** |       1 |      5.60 |  1024 |        0.500 |        |
| mdlm_owt | mdlm   | ancestral |      16 |    100.00 ± 2.83 |       2 |      5.60 |    16 |        0.500 |        |
| mdlm_owt | mdlm   | ancestral |    1024 |     50.00 ± 1.41 |       2 |      5.60 |  1024 |        0.500 |        |
| duo_owt  | duo    | ancestral |      16 | **80.00 ± 0.00** |       2 |      5.60 |    16 |        0.500 |        |
"""


def test_gen_ppl_table_golden(tmp_path):
    paths = [_gen(tmp_path, "mdlm_owt", "mdlm", 16, 0, 98.0), _gen(tmp_path, "mdlm_owt", "mdlm", 16, 1, 102.0),
             _gen(tmp_path, "mdlm_owt", "mdlm", 1024, 0, 49.0), _gen(tmp_path, "mdlm_owt", "mdlm", 1024, 1, 51.0),
             _gen(tmp_path, "duo_owt", "duo", 16, 0, 80.0), _gen(tmp_path, "duo_owt", "duo", 16, 1, 80.0),
             _gen(tmp_path, "ar_owt", "ar", 1024, 0, 35.0)]
    df = gen_ppl_table(paths, tmp_path / "gen")
    assert (tmp_path / "gen.md").read_text() == GEN_MD
    tex = (tmp_path / "gen.tex").read_text()
    assert r"\begin{tabular}{lllrrrrrrl}" in tex
    assert r"Gen. PPL $\downarrow$ & Seeds & Entropy & NFE & s / sample & Note \\" in tex
    assert r"mdlm\_owt & mdlm & ancestral & 16 & 100.00 $\pm$ 2.83 & 2 & 5.60 & 16 & 0.500 &  \\" in tex
    assert r"duo\_owt & duo & ancestral & 16 & \textbf{80.00 $\pm$ 0.00} & 2" in tex
    assert r"ar\_owt & ar & ancestral & 1024 & \textbf{35.00} & 1" in tex
    assert "±" not in tex and "nan" not in tex.lower()
    row = df[(df["run"] == "mdlm_owt") & (df["steps"] == 16)].iloc[0]
    assert row["gen_ppl"] == 100.0 and row["gen_ppl_std"] == pytest.approx(np.std([98, 102], ddof=1))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "gen.csv").fillna({"note": ""}), df, check_dtype=False)
    seeds = pd.read_csv(tmp_path / "gen_seeds.csv")
    assert len(seeds) == 7 and {"seed", "gen_ppl", "entropy"} <= set(seeds.columns)
    # missing optional fields -> NaN, not a crash; duplicates are refused
    lean = _dump(tmp_path, "lean.json", {"run": "x", "algo": "mdlm", "sampler": "s", "steps": 8,
                                         "gen_ppl": 70.0})
    lean_df = gen_ppl_table([lean], tmp_path / "lean")
    assert lean_df[["entropy", "nfe", "gen_ppl_std"]].isna().all(axis=None)
    with pytest.raises(ValueError, match="duplicate"):
        gen_ppl_table([paths[0], paths[0]], tmp_path / "dup")


def test_gen_ppl_table_honest_highlighting(tmp_path):
    """A degenerate low-entropy row (the commas of the foundation's DUO greedy-tail) is flagged, never bold;
    the best eligible row is; the held-out reference row comes first and is never bold; the caption states
    the rule with the reference entropy and the margin."""
    paths = [_gen(tmp_path, "reference", "data", 0, 0, 60.0, entropy=4.4, sampler="heldout"),
             _gen(tmp_path, "duo", "duo", 8, 0, 171.0, entropy=0.33, sampler="duo_greedy_tail"),
             _gen(tmp_path, "duo", "duo", 8, 1, 175.0, entropy=0.35, sampler="duo_greedy_tail"),
             _gen(tmp_path, "mdlm", "mdlm", 8, 0, 900.0, entropy=4.3),
             _gen(tmp_path, "udlm", "udlm", 8, 0, 1200.0, entropy=3.7),
             _gen(tmp_path, "sedd", "sedd", 8, 0, 950.0, entropy=4.3),
             _gen(tmp_path, "mdlm_p", "mdlm", 8, 0, 50.0, entropy=4.3, condition="infill")]
    df = gen_ppl_table(paths, tmp_path / "gen", entropy_margin=0.5)
    assert df.iloc[0]["algo"] == "data" and df.iloc[0]["note"] == "reference text"
    notes = dict(zip(df["run"], df["note"]))
    assert notes["duo"] == "low entropy" and notes["mdlm"] == "" and notes["udlm"] == "low entropy"
    assert notes["mdlm_p"] == "infill prompt"  # real prompt tokens lower the gen PPL: never bold
    assert "condition" not in df.columns
    md = (tmp_path / "gen.md").read_text()
    assert "**900.00**" in md and "**173.00" not in md and "**60.00**" not in md
    assert "low entropy" in md and "reference text" in md
    tex = (tmp_path / "gen.tex").read_text()
    assert "held-out text's (4.40) minus 0.5 nats" in tex and r"\textbf{900.00}" in tex
    # a wider margin makes udlm eligible, not duo; without a reference row every model row is eligible
    df2 = gen_ppl_table(paths, tmp_path / "gen2", entropy_margin=1.0)
    assert dict(zip(df2["run"], df2["note"]))["udlm"] == ""
    gen_ppl_table(paths[1:-1], tmp_path / "gen3")
    assert "**173.00" in (tmp_path / "gen3.md").read_text()


def test_write_table_escaping_grouped_best(tmp_path):
    df = pd.DataFrame({"model_name": ["a_1", "b&c", "d%"], "group": [1, 1, 2],
                       "score_x": [0.5, 0.25, 0.75], "acc": [0.9, np.nan, 0.1]})
    with pytest.raises(ValueError, match="does not say what bold means"):
        write_table(df, tmp_path / "t", caption="Cap.", label="tab:t", formats={}, best={"score_x": "min"},
                    group_by="group")
    write_table(df, tmp_path / "t", caption="Cap. Bold: the best of a group.", label="tab:t",
                formats={"score_x": ".3f", "acc": "{:.1%}"}, best={"score_x": "min", "acc": "max"},
                group_by="group")
    tex = (tmp_path / "t.tex").read_text()
    assert r"model\_name & group & score\_x & acc \\" in tex
    # bold only where rows compete: acc has one value in group 1, group 2 has one row
    assert r"a\_1 & 1 & 0.500 & 90.0\% \\" in tex
    assert r"b\&c & 1 & \textbf{0.250} & -- \\" in tex
    assert r"d\% & 2 & 0.750 & 10.0\% \\" in tex
    md = (tmp_path / "t.md").read_text()
    assert "| a_1          |       1 |     0.500 | 90.0% |" in md and "**0.250**" in md
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "t.csv"), df, check_dtype=False)


def test_gen_ppl_figure_files_and_stable_pdf(tmp_path):
    from dlm.report.figures import gen_ppl_figure

    rows = [{"run": r, "sampler": "ancestral", "steps": s, "seed": seed,
             "gen_ppl": 300.0 / s ** 0.3 + seed + (r == "duo"), "entropy": 5.5 + 0.01 * seed}
            for r in ("mdlm", "duo") for s in (8, 32, 128, 1024) for seed in (0, 1)]
    csv = tmp_path / "seeds.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    paths = gen_ppl_figure(csv, tmp_path / "fig" / "gen_ppl")
    assert paths["pdf"].read_bytes()[:5] == b"%PDF-" and paths["png"].stat().st_size > 0
    first = paths["pdf"].read_bytes()
    gen_ppl_figure(pd.DataFrame(rows), tmp_path / "fig" / "gen_ppl")
    assert paths["pdf"].read_bytes() == first
    assert b"CreationDate" not in first
    from PIL import Image

    with Image.open(paths["png"]) as im:
        w, h = im.size
    assert w / h == pytest.approx(6.75 / 2.4, rel=0.01)
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["gen_ppl.pdf", "gen_ppl.png"]


def test_curriculum_and_gidd_tables(tmp_path):
    from dlm.report.tables import curriculum_table, gidd_table

    def val(name, algo, ppl, se, steps=1000, **args):
        shift = {"udlm": 0.0, "duo": -0.1, "duopp": -0.09, "mdlm": 0.0, "g0": 0.01, "g1": 0.05}.get(name, 0.2)
        passes = [5.0 + shift + 0.3 * i + (0.002 * i * i if name == "duo" else 0) for i in range(3)]
        return _dump(tmp_path, f"{name}.json", {"run": name, "algo": algo, "val_ppl": ppl, "val_nll": math.log(ppl),
                                                "val_ppl_se": se, "train_steps": steps, "algo_args": args,
                                                "pass_nll": passes, "settings": {"seed": 1, "passes": 3}})

    paths = [val("udlm", "udlm", 250.0, 3.0), val("duo", "duo", 230.0, 2.5, curriculum={"end": 500}),
             val("duopp", "duo", 232.0, 2.5, curriculum={"input": "topk", "transform": "poly9", "end": 5000}),
             val("mdlm", "mdlm", 170.0, 1.5), val("g0", "gidd", 171.0, 1.6, p_uniform=0.0),
             val("g2", "gidd", 190.0, 1.7, p_uniform=0.2, loss_weighting="dynamic"),
             val("g1", "gidd", 180.0, 1.7, p_uniform=0.1), val("ar", "ar", 50.0, 0.5)]
    cur = curriculum_table(paths, tmp_path / "cur")
    assert list(cur["variant"]) == ["UDLM (no curriculum)", "DUO", "DUO++"]
    assert list(cur["curriculum_steps"]) == [0, 500, 1000]  # capped at the steps trained
    assert list(cur["soft_input"]) == ["–", "softmax", "top-2"]
    md = (tmp_path / "cur.md").read_text()
    assert "**230.00 ± 2.50**" in md and "ar" not in cur["run"].tolist()
    # the paired difference to UDLM over the same seeded passes: the shared pass-to-pass spread cancels
    d = [0.002 * i * i - 0.1 for i in range(3)]
    assert cur["delta_nll"].tolist()[1] == pytest.approx(np.mean(d))
    assert cur["delta_nll_se"].tolist()[1] == pytest.approx(np.std(d, ddof=1) / np.sqrt(3))
    assert cur["delta_nll_se"].tolist()[2] == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(cur["delta_nll"].tolist()[0])  # the reference itself
    assert "Δ NLL vs udlm (paired)" in md and r"$\Delta$" in (tmp_path / "cur.tex").read_text()
    gidd = gidd_table(paths, tmp_path / "gidd")
    assert list(gidd["run"]) == ["mdlm", "g0", "g1", "g2"]
    assert list(gidd["weighting"]) == ["ELBO", "none", "none", "dynamic"]
    assert "190.00 ± 1.70" in (tmp_path / "gidd.md").read_text()
    assert gidd["delta_nll"].tolist()[1:] == pytest.approx([0.01, 0.05, 0.2])
    with pytest.raises(ValueError, match="no gidd"):
        gidd_table(paths[:4], tmp_path / "x")


def test_tables_average_over_training_seeds(tmp_path):
    from dlm.report.tables import curriculum_table

    def val(run, group, algo, ppl, se, **args):
        return _dump(tmp_path, f"{run}.json", {"run": run, "group": group, "algo": algo, "val_ppl": ppl,
                                               "val_nll": math.log(ppl), "val_ppl_se": se, "val_nll_se": se / ppl,
                                               "train_steps": 800, "algo_args": args, "pass_nll": [math.log(ppl)] * 2,
                                               "settings": {"seed": 1, "passes": 2}})

    paths = [val("udlm", "udlm", "udlm", 400.0, 4.0), val("duo", "duo", "duo", 290.0, 3.0),
             val("duo_s2", "duo", "duo", 310.0, 4.0), val("duo_s3", "duo", "duo", 390.0, 0.0),
             val("ar", "ar", "ar", 50.0, 0.0)]
    df = val_ppl_table(paths, tmp_path / "val")
    duo = df[df["run"] == "duo"].iloc[0]
    assert list(df["run"]) == ["ar", "udlm", "duo"] and duo["n_seeds"] == 3
    assert duo["val_ppl"] == pytest.approx(330.0) and duo["val_ppl_sd"] == pytest.approx(np.std([290, 310, 390], ddof=1))
    assert duo["val_ppl_se"] == pytest.approx(5.0 / 3)  # sqrt(3^2 + 4^2 + 0) / 3
    assert math.isnan(df[df["run"] == "udlm"].iloc[0]["val_ppl_sd"]) and duo["seed_runs"] == "duo duo_s2 duo_s3"
    md = (tmp_path / "val.md").read_text()
    assert "330.00 ± 52.92" in md and "Seeds" in md and "MC s.e." in md
    cur = curriculum_table(paths, tmp_path / "cur")
    assert list(cur["run"]) == ["udlm", "duo"] and list(cur["n_seeds"]) == [1, 3]
    d = [math.log(p) - math.log(400.0) for p in (290.0, 310.0, 390.0)]
    assert cur["delta_nll"].iloc[1] == pytest.approx(np.mean(d))
    assert cur["delta_nll_sd"].iloc[1] == pytest.approx(np.std(d, ddof=1))
    # one seed per run: the layout without seed columns (the default config's tables stay as they were)
    single = val_ppl_table(paths[:2], tmp_path / "one")
    assert "n_seeds" not in single.columns
