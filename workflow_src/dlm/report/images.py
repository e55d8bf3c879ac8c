"""The images table (FID, IS, label accuracy of every image sample file, the data rows beside them) and the grid of
samples per method and sampler (`rules/images.smk`)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dlm.report import paper_values
from dlm.report.figures import save_figure
from dlm.report.tables import ALGO_ORDER, write_table
from dlm.utils import read_json

METHOD = {"udlm": "DUO (base, uniform-state)", "mdlm": "MDLM (masked)", "data": "data"}
COLUMNS = ["method", "run", "sampler", "condition", "guidance", "steps", "seed", "num_images", "fid", "is_mean",
           "is_std", "label_accuracy", "nfe", "seconds_per_image", "features", "classifier_heldout_accuracy"]


def images_frame(reference_json: str, score_jsons: list[str]) -> pd.DataFrame:
    """One row per score JSON, after the two data rows of the reference JSON (held-out split; shuffled pixels)."""
    ref = read_json(reference_json)
    rows = []
    for name, label in (("heldout", "held-out images"), ("shuffled", "held-out, pixels shuffled")):
        r = ref["rows"][name]
        rows.append({"method": "data", "run": label, "sampler": "", "condition": "", "algo": "data", **r,
                     "features": ref["features"], "classifier_heldout_accuracy": ref["classifier_heldout_accuracy"]})
    for path in score_jsons:
        s = read_json(path)
        missing = [k for k in ("run", "algo", "sampler", "condition", "steps", "fid") if k not in s]
        if missing:
            raise ValueError(f"{path}: required key(s) {missing} missing (expected an images score JSON)")
        rows.append({**{k: s.get(k) for k in COLUMNS}, "method": METHOD.get(s["algo"], s["algo"]),
                     "algo": s["algo"], "condition": "class" if s["condition"] == "class" else "none"})
    df = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    order = {a: i for i, a in enumerate(ALGO_ORDER)}
    df["_rank"] = df["algo"].map(lambda a: order.get(a, len(order)))
    df["_data"] = df["algo"] != "data"
    df = df.sort_values(["_data", "_rank", "run", "sampler", "condition", "steps", "seed"], kind="mergesort",
                        na_position="first")
    return df.drop(columns=["_rank", "_data"]).reset_index(drop=True)


def images_table(reference_json: str, score_jsons: list[str], out_stem: str | os.PathLike,
                 dataset: str = "digits", paper_values_path: str | None = None) -> pd.DataFrame:
    """Write results/tables/images.{csv,md,tex}."""
    df = images_frame(reference_json, score_jsons)
    inception = (df["features"] == "inception").all()
    feats = "Inception" if inception else "classifier, not Inception"
    acc = df["classifier_heldout_accuracy"].dropna()
    cols = [c for c in COLUMNS if c not in ("features", "is_std")] + ["is_std"]
    if inception:
        cols = [c for c in cols if c not in ("label_accuracy", "classifier_heldout_accuracy")]
    df = df[cols + ["algo"]].drop(columns="algo")
    labels = {"method": "Method", "run": "Run", "sampler": "Sampler", "condition": "Condition",
              "guidance": "Guidance", "steps": "Steps", "seed": "Seed", "num_images": "Images",
              "fid": f"FID ({feats}) ↓", "is_mean": f"IS ({feats}) ↑", "label_accuracy": "Label acc. ↑",
              "nfe": "NFE", "seconds_per_image": "s / image",
              "classifier_heldout_accuracy": "Classifier held-out acc."}
    formats = {"guidance": "g", "steps": "d", "seed": "d", "num_images": "d", "fid": ".2f", "is_mean": ".2f",
               "is_std": ".2f", "label_accuracy": ".1%", "nfe": ".1f", "seconds_per_image": ".4f",
               "classifier_heldout_accuracy": ".1%"}
    for metric, column, label in (("fid", "fid", "FID"), ("is", "is_mean", "IS")):
        before = set(df.columns)
        df = paper_values.compare(df, paper_values_path, dataset, "images", metric, column)
        if set(df.columns) != before:
            extra_labels, extra_formats = paper_values.labels_formats(metric, label)
            labels.update(extra_labels)
            formats.update(extra_formats)
    what = ("Inception v3 features (torch-fidelity), as DUO" if inception else
            "the features of a small classifier the pipeline trains on the training split (held-out accuracy "
            f"{acc.iloc[0]:.1%}); NOT Inception FID/IS, comparable only within this table" if len(acc) else
            "a classifier's features, not Inception")
    caption = (f"Image generation on {dataset}: FID against the training split and IS on {what}. Data rows: the "
               "held-out split (the floor) and the same images with shuffled pixels. Label acc.: share of "
               "class-conditional samples the classifier assigns the class they were conditioned on. Bold: the best "
               "model row per column (lowest FID, highest IS and label accuracy), among two or more model rows; "
               "IS $\\pm$ its spread over the IS splits.")
    write_table(df, out_stem, caption=caption, label="tab:images", formats=formats, labels=labels,
                pm={"is_mean": "is_std"}, best={"fid": "min", "is_mean": "max", "label_accuracy": "max"},
                eligible=df["method"] != "data")
    return df


def images_grid(samples: list[str], heldout: tuple[np.ndarray, np.ndarray], out_stem: str | os.PathLike,
                per_class: int = 2, levels: int = 256) -> None:
    """One panel per samples file (title: run, sampler, condition, steps) and one of held-out images: a grid of
    `per_class` images per class in class order (class-conditional files and the data), or the first
    10 x per_class images (unconditional files)."""
    from dlm.sample_images import read_samples

    panels = [("data: held-out", heldout[0], heldout[1])]
    for path in samples:
        images, labels, rec = read_samples(path)
        title = f"{rec['run']} · {rec['sampler']} · {rec['condition']} · T={rec['steps']}"
        panels.append((title, images, labels))
    classes = int(heldout[1].max()) + 1
    cols = classes
    fig = Figure(figsize=(0.45 * cols + 0.2, len(panels) * (0.45 * per_class + 0.35)))
    sub = fig.subfigures(len(panels), 1)
    for sf, (title, images, labels) in zip(np.atleast_1d(sub), panels):
        if (labels >= 0).all():
            pick = [np.flatnonzero(labels == c)[:per_class] for c in range(classes)]
            grid = [[p[r] if r < len(p) else None for p in pick] for r in range(per_class)]
        else:
            grid = [[r * cols + c if r * cols + c < len(images) else None for c in range(cols)]
                    for r in range(per_class)]
        axes = sf.subplots(per_class, cols, squeeze=False)
        for r in range(per_class):
            for c in range(cols):
                ax = axes[r][c]
                ax.set_axis_off()
                i = grid[r][c]
                if i is None:
                    continue
                img = images[i].transpose(1, 2, 0)  # (H, W, C)
                if img.shape[2] == 1:
                    ax.imshow(img[..., 0], cmap="gray_r", vmin=0, vmax=levels - 1, interpolation="nearest")
                else:
                    ax.imshow(img.astype(np.uint8), interpolation="nearest")
        sf.suptitle(title, fontsize=7, y=0.99)
        sf.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.8, wspace=0.05, hspace=0.05)
    save_figure(fig, out_stem)
