"""The report's figures (entropy, MAUVE, frontier, training curves) and the compute-cost table: right content,
error bands over seeds, and byte-identical files from the same data."""

import json

import pandas as pd
import pytest

from dlm.report.cost import benchmark_key, cost_table
from dlm.report.sample_figures import entropy_figure, frontier_figure, mauve_figure, mauve_frame
from dlm.report.training_curves import curves_frame, training_curves_figure


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def gen_json(root, run, algo, sampler, kind, steps, seed, gen_ppl, entropy, nucleus_p=1.0, condition="none"):
    return write_json(root / run / f"gen_{sampler}_T{steps}_s{seed}.json", {
        "run": run, "algo": algo, "sampler": sampler, "sampler_kind": kind, "steps": steps, "seed": seed,
        "gen_ppl": gen_ppl, "entropy": entropy, "nucleus_p": nucleus_p, "condition": condition,
        "sampler_settings": {"nucleus_p": nucleus_p, "condition": condition, "self_correct": False}})


def mauve_json(root, run, sampler, steps, seed, mauve):
    """The MAUVE JSON interface of rules/mauve.smk."""
    return write_json(root / run / f"mauve_{sampler}_T{steps}_s{seed}.json", {
        "run": run, "algo": "mdlm", "sampler": sampler, "steps": steps, "seed": seed, "mauve": mauve,
        "mauve_std": 0.01, "mauve_per_seed": [mauve - 0.01, mauve + 0.01], "settings": {"scaling_factor": 5},
        "provenance": {"git_commit": "x"}})


def same_bytes(render, tmp_path):
    a = render(tmp_path / "a" / "fig")
    b = render(tmp_path / "b" / "fig")
    for ext in ("pdf", "png"):
        assert a[ext].stat().st_size > 1000
        assert a[ext].read_bytes() == b[ext].read_bytes(), ext
    assert b"CreationDate" not in a["pdf"].read_bytes()


def test_mauve_figure_reads_the_mauve_jsons_and_is_byte_stable(tmp_path):
    paths = [mauve_json(tmp_path / "eval", "mdlm", "mdlm_ancestral", t, s, 0.2 + 0.01 * t + 0.02 * s)
             for t in (8, 32) for s in (0, 1)]
    paths.append(mauve_json(tmp_path / "eval", "duo", "duo_ancestral", 8, 0, 0.5))
    ref = write_json(tmp_path / "eval" / "reference" / "mauve_heldout.json", {"mauve": 0.9, "run": "reference"})
    df = mauve_frame(paths)
    assert len(df) == 5 and df["mauve"].between(0, 1).all()
    same_bytes(lambda stem: mauve_figure(paths, stem, reference_json=ref), tmp_path)
    bad = write_json(tmp_path / "bad.json", {"run": "x", "algo": "mdlm", "sampler": "s", "steps": 4})
    with pytest.raises(ValueError, match="mauve"):
        mauve_frame([bad])


def test_entropy_figure_draws_a_band_over_seeds(tmp_path, monkeypatch):
    import matplotlib.collections

    import dlm.report.sample_figures as sample_figures

    seeds = pd.DataFrame({"run": ["reference"] + ["mdlm"] * 4, "algo": ["data"] + ["mdlm"] * 4,
                          "sampler": ["heldout"] + ["mdlm_ancestral"] * 4, "steps": [0, 8, 8, 32, 32],
                          "seed": [0, 0, 1, 0, 1], "gen_ppl": [50.0, 90.0, 80.0, 70.0, 60.0],
                          "entropy": [4.5, 4.2, 4.3, 4.35, 4.4]})
    same_bytes(lambda stem: entropy_figure(seeds, stem), tmp_path)
    drawn = []
    monkeypatch.setattr(sample_figures, "save_figure", lambda fig, stem: drawn.append(fig))
    entropy_figure(seeds, tmp_path / "c" / "fig")
    ax = drawn[0].axes[0]
    # two seeds per point: seaborn draws the mean ± sd as a filled band; the reference is a horizontal line
    assert any(isinstance(c, matplotlib.collections.PolyCollection) for c in ax.collections)
    assert any(list(line.get_ydata()) == [4.5, 4.5] for line in ax.lines)


def test_frontier_joins_the_nucleus_sweep_and_marks_the_reference(tmp_path):
    root = tmp_path / "eval"
    paths = [gen_json(root, "mdlm", "mdlm", "mdlm_ancestral", "mdlm_ancestral", 32, 0, 120.0, 4.4),
             gen_json(root, "mdlm", "mdlm", "mdlm_top_p09", "mdlm_ancestral", 32, 0, 80.0, 4.2, 0.9),
             gen_json(root, "mdlm", "mdlm", "mdlm_top_p08", "mdlm_ancestral", 32, 0, 60.0, 4.0, 0.8),
             gen_json(root, "duo", "duo", "duo_ancestral", "duo_ancestral", 32, 0, 150.0, 4.5),
             gen_json(root, "duo", "duo", "duo_top_p09", "duo_ancestral", 32, 0, 90.0, 4.3, 0.9),
             gen_json(root, "mdlm", "mdlm", "mdlm_infill", "mdlm_ancestral", 32, 0, 20.0, 4.0, condition="infill")]
    ref = write_json(root / "reference" / "gen_heldout.json", {"run": "reference", "algo": "data", "gen_ppl": 40.0,
                                                               "entropy": 4.6})
    same_bytes(lambda stem: frontier_figure(paths, stem, reference_json=ref), tmp_path)


def test_training_curves_continue_distillation_after_the_teacher(tmp_path):
    def csv(name, steps, ppl):
        p = tmp_path / name
        pd.DataFrame({"step": steps, "epoch": 0, "train/loss": [5.0] * len(steps), "val/nll": 1.0,
                      "val/ppl": ppl}).to_csv(p, index=False)
        return str(p)

    curves = [{"csv": csv("duo.csv", [100, 200], [300.0, 200.0]), "run": "duo", "group": "duo", "round": 0},
              {"csv": csv("duo_s2.csv", [100, 200], [320.0, 210.0]), "run": "duo_s2", "group": "duo", "round": 0},
              {"csv": csv("dcd_r2.csv", [50], [180.0]), "run": "duo_dcd", "round": 2, "from": "duo"},
              {"csv": csv("dcd_r1.csv", [50], [190.0]), "run": "duo_dcd", "round": 1, "from": "duo"}]
    df = curves_frame(curves)
    dcd = df[df["run"] == "duo_dcd"].sort_values("round")
    assert dcd["step"].tolist() == [250, 300]  # round 1 after the teacher's 200 steps, round 2 after round 1
    assert set(df[df["group"] == "duo"]["run"]) == {"duo", "duo_s2"}  # two seeds: one line with a band
    same_bytes(lambda stem: training_curves_figure(curves, stem), tmp_path)


def test_cost_table_sums_seconds_per_run_and_stage_with_peak_memory(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"

    def bench(rel, s, rss, cpu):
        p = tmp_path / "benchmarks" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(header + f"{s}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n")
        return str(p)

    files = [bench("train/mdlm.tsv", 100.0, 500.0, 90.0), bench("eval/mdlm/val_ppl.tsv", 5.0, 300.0, 4.0),
             bench("sample/mdlm/mdlm_ancestral_T8_s0.tsv", 7.5, 450.0, 7.0),
             bench("eval/mdlm/gen_mdlm_ancestral_T8_s0.tsv", 2.5, "NA", 2.0),
             bench("eval/mdlm/mauve_mdlm_ancestral_T8_s0.tsv", 3.0, 800.0, 3.0),
             bench("distill/duo_dcd/round_1.tsv", 20.0, 600.0, 19.0),
             bench("distill/duo_dcd/round_2.tsv", 22.0, 650.0, 21.0),
             bench("eval/reference/gen_heldout.tsv", 1.0, 200.0, 1.0)]
    assert benchmark_key(files[0]) == ("train", "mdlm") and benchmark_key(files[5]) == ("distill", "duo_dcd")
    df = cost_table(files, tmp_path / "cost", algos={"mdlm": "mdlm", "duo_dcd": "dcd"}).set_index("run")
    assert df.loc["mdlm", "train_s"] == 100.0 and df.loc["mdlm", "sample_s"] == 7.5
    assert df.loc["mdlm", "eval_s"] == pytest.approx(10.5) and df.loc["mdlm", "total_s"] == pytest.approx(118.0)
    assert df.loc["mdlm", "peak_rss_mb"] == 800.0 and df.loc["mdlm", "jobs"] == 5  # NA max_rss is skipped
    assert df.loc["duo_dcd", "distill_s"] == 42.0 and df.loc["duo_dcd", "algo"] == "dcd"
    assert df.loc["reference", "algo"] == "data"
    assert df.loc["all", "total_s"] == pytest.approx(161.0) and df.loc["all", "peak_rss_mb"] == 800.0
    tex = (tmp_path / "cost.tex").read_text()
    assert "\\toprule" in tex and "Peak RSS (MB)" in tex
    assert "| mdlm" in (tmp_path / "cost.md").read_text()


def test_training_curves_measure_what_they_say_and_the_kl_has_its_own_axis(tmp_path):
    """The in-training validation (8 batches) is labelled as such, and a distillation round's loss (a KL) is not
    drawn on the training-loss axis of the trained runs."""
    from dlm.report.training_curves import build_training_curves

    def csv(name, steps, loss):
        p = tmp_path / name
        pd.DataFrame({"step": steps, "epoch": 0, "train/loss": loss, "val/nll": 1.0,
                      "val/ppl": [300.0] * len(steps)}).to_csv(p, index=False)
        return str(p)

    size = {"val_batches": 8, "batch_size": 16}
    curves = [{"csv": csv("duo.csv", [100, 200], [5.0, 4.5]), "run": "duo", "round": 0, **size},
              {"csv": csv("mdlm.csv", [100, 200], [5.5, 5.0]), "run": "mdlm", "round": 0, **size},
              {"csv": csv("dcd_r1.csv", [50, 100], [0.02, 0.01]), "run": "duo_dcd", "round": 1, "from": "duo", **size}]
    fig = build_training_curves(curves)
    val, loss, kl = fig.axes[:3]
    assert "first 8 batches × 16 blocks" in val.get_ylabel() and "in training" in val.get_ylabel()
    assert "Distillation" in kl.get_ylabel() and "KL" in kl.get_ylabel()

    def ys(ax):
        return {round(float(y), 4) for line in ax.get_lines() for y in line.get_ydata()}

    assert ys(kl) == {0.02, 0.01} and not ys(loss) & {0.02, 0.01} and {4.5, 5.0, 5.5} <= ys(loss)
    assert len(build_training_curves(curves[:2]).axes) == 2  # no distillation: no KL panel


def test_gen_ppl_figure_rows_per_family_and_no_stacked_points(tmp_path):
    """28 run / sampler lines in one colour range with 18 points stacked at T = 32 could not be matched to their
    labels: one row per model family with its own legend, and the points of one step count side by side."""
    from dlm.report.figures import build_gen_ppl_figure, family_rows

    rows = [{"run": "reference", "algo": "data", "sampler": "heldout", "steps": 0, "gen_ppl": 69.0, "entropy": 4.1}]
    mdlm = ["mdlm_ancestral", "mdlm_ddpm", "remdm_cap", "remdm_conf", "remdm_dfm", "remdm_fb", "remdm_loop",
            "remdm_rescale", "mdlm_top_p08", "mdlm_top_p09", "mdlm_top_p095", "sedd_analytic"]
    rows += [{"run": "mdlm", "algo": "mdlm", "sampler": s, "steps": 32, "gen_ppl": 1000.0 + 10 * i, "entropy": 4.3}
             for i, s in enumerate(mdlm)]
    rows += [{"run": "duo", "algo": "duo", "sampler": s, "steps": t, "gen_ppl": 1500.0 / t, "entropy": 4.2}
             for s in ("duo_ancestral", "duo_greedy_tail", "psi_loop") for t in (8, 32)]
    rows += [{"run": "ar", "algo": "ar", "sampler": "ar", "steps": 127, "gen_ppl": 113.0, "entropy": 4.3},
             {"run": "d3pm", "algo": "d3pm", "sampler": "d3pm_ancestral", "steps": 40, "gen_ppl": 3412.0, "entropy": 4.3}]
    df = pd.DataFrame(rows)
    df["method"] = df["run"] + " / " + df["sampler"]
    titles = [t for t, _ in family_rows(df[df["algo"] != "data"])]
    assert titles == ["AR · D3PM", "MDLM", "DUO"]
    fig = build_gen_ppl_figure(df)
    assert len(fig.axes) == 6
    for left, right, n in zip(fig.axes[0::2], fig.axes[1::2], (2, 12, 3)):
        legend = right.get_legend()
        assert legend is not None and len(legend.get_texts()) == n + 1  # + the held-out line
        xs = [x for line in left.get_lines() if line.get_marker() not in ("None", "", None)
              for x in line.get_xdata()]
        assert len(xs) == len(set(xs)), "points of one step count stack"


def test_frontier_labels_overlap_nothing(tmp_path):
    """The p= labels of two nucleus sweeps close together (MDLM and DUO at 32 steps) were drawn on top of each
    other: each label now sits where it overlaps no other label and no marker."""
    from dlm.report.sample_figures import build_frontier_figure

    paths = []
    for run, kind, base in (("mdlm", "mdlm_ancestral", (1345.0, 4.31)), ("duo", "duo_ancestral", (1527.0, 4.27))):
        for p, f, de in ((1.0, 1.0, 0.0), (0.95, 0.8, -0.04), (0.9, 0.67, -0.09), (0.8, 0.44, -0.2)):
            paths.append(gen_json(tmp_path, run, run, f"{kind}_{p}", kind, 32, 0, base[0] * f, base[1] + de,
                                  nucleus_p=p))
    fig = build_frontier_figure(paths)
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax.texts if t.get_text().startswith("p=")]
    assert len(labels) == 6
    boxes = [t.get_window_extent(renderer) for t in labels]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)
    points = ax.transData.transform([(x, y) for line in ax.get_lines() for x, y in zip(*line.get_data())])
    for box in boxes:
        assert not any(box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1 for x, y in points)
