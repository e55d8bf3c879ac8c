"""The image metrics of the workflow (rules/images.smk): the feature extractor, the reference statistics with the
data rows of the images table, and the scores of one samples file. Each writes a small JSON with its settings
and provenance.

features "inception": DUO's FID / IS (`dlm.evaluation.fid`, torch-fidelity's Inception v3);
features "classifier": the pipeline's classifier (`dlm.evaluation.classifier`), FID on its penultimate features,
"IS" on its logits, and the share of class-conditional images it assigns the asked-for class (label accuracy).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from dlm.data.images import hflip, read_meta, read_split
from dlm.evaluation.fid import ImageScorer, inception_extractors, shuffled_pixels
from dlm.utils import provenance, write_json

log = logging.getLogger("dlm.evaluation.image_scores")
FEATURES = ("classifier", "inception")


def feature_label(features: str) -> str:
    return "Inception v3 (torch-fidelity)" if features == "inception" else "pipeline classifier (not Inception)"


def scorer(features: str, classifier_path: str | None = None, inception_weights: str | None = None,
           batch_size: int = 500, device: str = "auto"):
    """(ImageScorer, classifier or None) for the configured features."""
    from dlm.evaluation.classifier import FeatureView, load_classifier

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if features == "inception":
        fid_f, is_f = inception_extractors(inception_weights)
        return ImageScorer(fid_f, is_f, batch_size=batch_size, device=device), None
    if features != "classifier":
        raise ValueError(f"key 'images.evaluation.features': value {features!r} is invalid: expected {FEATURES}")
    clf, _ = load_classifier(classifier_path)
    return ImageScorer(FeatureView(clf), FeatureView(clf, "logits"), batch_size=batch_size, device=device), clf


def reference_images(data_dir: str, seed: int = 0) -> np.ndarray:
    """The training split as the training loader sees it: each image mirrored with probability 1/2 (seeded) when
    the data has hflip (the original's FID loader is the training loader, flips included)."""
    images = read_split(data_dir, "train")[0]
    if read_meta(data_dir).get("hflip"):
        flip = np.random.default_rng([seed, 7]).integers(0, 2, len(images)).astype(bool)
        images = np.where(flip[:, None, None, None], hflip(images), images)
    return images


def write_reference(data_dir: str, features: str, out_state: str, out_json: str, classifier_path: str | None = None,
                    classifier_report: dict | None = None, inception_weights: str | None = None,
                    batch_size: int = 500, seed: int = 0) -> dict:
    """The reference statistics of the training split (`out_state`, loaded by every score job) and the data rows
    of the table (`out_json`): the held-out split, and the held-out split with shuffled pixels, against it."""
    sc, clf = scorer(features, classifier_path, inception_weights, batch_size)
    sc.add_reference(reference_images(data_dir, seed))
    from dlm.utils import atomic_path

    with atomic_path(out_state) as tmp:
        torch.save(sc.reference_state(), tmp)
    held, held_labels = read_split(data_dir, "valid")
    rows = {}
    for name, images in (("heldout", held), ("shuffled", shuffled_pixels(held, seed))):
        row = sc.score(images, seed)
        if clf is not None:
            row["label_accuracy"] = _label_accuracy(clf, images, held_labels)
        rows[name] = row
        log.info("%s vs train: %s", name, row)
    settings = {"features": features, "seed": seed, "classifier": (classifier_report or {}).get("settings")}
    out = {"features": features, "features_label": feature_label(features), "rows": rows,
           "num_reference": int(sc.reference_state()["real_features_num_samples"]),
           "classifier_heldout_accuracy": (classifier_report or {}).get("heldout_accuracy"),
           "settings": settings, "provenance": provenance(settings)}
    write_json(out_json, out)
    return out


def _label_accuracy(clf, images: np.ndarray, labels: np.ndarray) -> float:
    from dlm.evaluation.classifier import predict

    return float((predict(clf, torch.as_tensor(images)) == torch.as_tensor(labels)).double().mean())


def write_scores(samples: str, reference_state: str, features: str, out_json: str, classifier_path: str | None = None,
                 classifier_report: dict | None = None, inception_weights: str | None = None,
                 batch_size: int = 500, seed: int = 0) -> dict:
    """FID / IS of a samples .npz against the reference statistics (and label accuracy for class-conditional
    samples under the classifier); the JSON carries the samples' record (run, sampler, settings, steps...)."""
    from dlm.sample_images import read_samples

    images, labels, record = read_samples(samples)
    sc, clf = scorer(features, classifier_path, inception_weights, batch_size)
    sc.load_reference_state(torch.load(reference_state, map_location="cpu", weights_only=True))
    out = {**record, **sc.score(images, seed), "features": features, "features_label": feature_label(features),
           "classifier_heldout_accuracy": (classifier_report or {}).get("heldout_accuracy")}
    if clf is not None and (labels >= 0).all() and record["condition"] == "class":
        out["label_accuracy"] = _label_accuracy(clf, images, labels)
    settings = {"samples": record, "features": features, "seed": seed,
                "classifier": (classifier_report or {}).get("settings")}
    out["provenance"] = provenance(settings)
    write_json(out_json, out)
    log.info("%s: %s", samples, {k: out.get(k) for k in ("fid", "is_mean", "label_accuracy")})
    return out
