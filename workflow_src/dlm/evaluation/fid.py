"""FID and Inception Score of generated images, as DUO computes them (s-sahoo/duo main.py `_eval_fid`):
torchmetrics' FrechetInceptionDistance and InceptionScore on uint8 images (normalize=False), with the features of
torch-fidelity's Inception v3 ("inception-v3-compat": the 2048-d pool features for FID, "logits_unbiased" and 10
splits for IS, torchmetrics' defaults); the reference statistics come from the training split (the original
streams the training loader, random flips included), and the model draws one image per training label.

The same two torchmetrics classes score the offline default with another feature extractor: the small classifier
the pipeline trains on the digits (`dlm.evaluation.classifier`), its penultimate features for FID and its logits
for IS. Those numbers are not Inception FID / IS and the tables say so.

Inception needs two things this machine does not have: the weights (downloaded from torch-fidelity's release
page on first use) and torch-fidelity itself (`pip install -e '.[images]'`; it imports torchvision, which needs a
torch build it was compiled against, e.g. CUDA 2.13.0). `inception_extractors` checks both and says in one
line what is missing and where it goes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

log = logging.getLogger("dlm.evaluation.fid")

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
IS_SPLITS = 10  # torchmetrics' InceptionScore default, as the original


def default_inception_path() -> Path:
    """Where torch-fidelity looks for the weights before downloading them: torch hub's checkpoints folder."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def inception_extractors(weights_path: str | os.PathLike | None = None) -> tuple[nn.Module, nn.Module]:
    """(FID features, IS logits): torch-fidelity's Inception v3 as torchmetrics wraps it (NoTrainInceptionV3),
    2048-d pool features and logits_unbiased, from local weights. Raises a one-line FileNotFoundError naming the
    download and the destination when the weights are missing, and a one-line ImportError when torch-fidelity
    (or the torchvision it imports) is."""
    path = Path(weights_path) if weights_path else default_inception_path()
    if not path.is_file():
        raise FileNotFoundError(f"Inception weights not found at {path}: download {INCEPTION_URL} to {path} "
                                f"(or set images.evaluation.inception_weights to where it is)")
    try:
        import torch_fidelity  # noqa: F401  (imports torchvision)
    except Exception as e:  # ImportError, or torchvision's RuntimeError beside a torch it was not built for
        raise ImportError(f"Inception FID/IS need torch-fidelity: pip install -e '.[images]' (torch-fidelity==0.4.0, "
                          f"torchvision==0.28.0, beside a torch 2.13.0 build torchvision loads with, e.g. CUDA); "
                          f"import failed with {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                          ) from None
    from torchmetrics.image.fid import NoTrainInceptionV3

    make = lambda feature: NoTrainInceptionV3(name="inception-v3-compat", features_list=[feature],  # noqa: E731
                                              feature_extractor_weights_path=str(path))
    return make("2048"), make("logits_unbiased")


class ImageScorer:
    """FID against fixed reference images and IS, with torchmetrics; `fid_features` / `is_logits` map uint8
    images (n, C, H, W) to (n, d) features / (n, classes) logits (Inception or the pipeline's classifier)."""

    def __init__(self, fid_features: nn.Module, is_logits: nn.Module | None = None, splits: int = IS_SPLITS,
                 batch_size: int = 500, device: str | torch.device = "cpu"):
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.device, self.batch_size, self.splits = torch.device(device), int(batch_size), int(splits)
        self.fid = FrechetInceptionDistance(feature=fid_features, normalize=False, reset_real_features=False
                                            ).to(self.device)
        self.is_logits = is_logits

    def _batches(self, images):
        images = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images (n, C, H, W), got {images.dtype} {tuple(images.shape)}")
        for lo in range(0, len(images), self.batch_size):
            yield images[lo:lo + self.batch_size].to(self.device)

    def add_reference(self, images) -> None:
        """Accumulate the reference (real) statistics."""
        for batch in self._batches(images):
            self.fid.update(batch, real=True)

    def reference_state(self) -> dict:
        """The accumulated reference statistics (sum, sum of outer products, count; float64)."""
        return {k: getattr(self.fid, k).cpu() for k in
                ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")}

    def load_reference_state(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self.fid, k, v.to(self.device))

    def score(self, images, seed: int = 0) -> dict:
        """{"fid", "is_mean", "is_std", "num_images"} of `images` against the reference; the IS split shuffle
        (torchmetrics draws a permutation) is seeded with `seed`."""
        from torchmetrics.image.inception import InceptionScore

        self.fid.reset()  # keeps the reference (reset_real_features=False)
        is_metric = None
        if self.is_logits is not None:
            import warnings

            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
                is_metric = InceptionScore(feature=self.is_logits, splits=self.splits, normalize=False).to(self.device)
        n = 0
        for batch in self._batches(images):
            self.fid.update(batch, real=False)
            if is_metric is not None:
                is_metric.update(batch)
            n += len(batch)
        out = {"fid": float(self.fid.compute()), "num_images": n}
        if is_metric is not None:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(seed)
                mean, std = is_metric.compute()
            out.update(is_mean=float(mean), is_std=float(std))
        return out


def shuffled_pixels(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each image's pixels (all channels and positions) in a random order of its own (seeded): the grey-level
    histogram stays, the structure goes. The sanity row of the images table: FID far above the held-out floor."""
    rng = np.random.default_rng(seed)
    flat = images.reshape(len(images), -1)
    return np.stack([row[rng.permutation(row.size)] for row in flat]).reshape(images.shape)
