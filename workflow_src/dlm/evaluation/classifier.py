"""A small classifier trained by the pipeline on the training split of an image data set (the embedded default's
8 x 8 digits), whose penultimate features stand in for Inception's in the FID of the offline default and whose
logits stand in for Inception's in the Inception Score. NOT Inception FID: the numbers are comparable only
within one classifier (its settings and seed are part of every metric JSON).

Network: conv3x3(C -> w) ReLU -> conv3x3 stride 2 (w -> 2w) ReLU -> flatten -> Linear(-> features) ReLU
[the FID features] -> Linear(-> classes) [the IS logits]; input pixel levels scaled to [0, 1]. Trained with AdamW
on minibatches in a seeded order, no augmentation; its accuracy on the held-out split is reported beside FID.
It also reads the class of class-conditional samples: the share it labels as conditioned ("label accuracy") is
a direct, honest measure of whether a model draws the asked-for digit.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger("dlm.evaluation.classifier")

DEFAULTS = dict(width=16, features=64, epochs=30, batch_size=64, lr=3e-3, weight_decay=1e-4, seed=0)


class ImageClassifier(nn.Module):
    """uint8 images (n, C, H, W) with `levels` grey levels -> logits (n, classes); `features(x)` (n, features)."""

    def __init__(self, channels: int, height: int, width: int, levels: int, classes: int, conv_width: int = 16,
                 features: int = 64):
        super().__init__()
        self.levels = levels
        self.conv1 = nn.Conv2d(channels, conv_width, 3, padding=1)
        self.conv2 = nn.Conv2d(conv_width, 2 * conv_width, 3, stride=2, padding=1)
        flat = 2 * conv_width * ((height + 1) // 2) * ((width + 1) // 2)
        self.fc = nn.Linear(flat, features)
        self.head = nn.Linear(features, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float() / (self.levels - 1)  # (n, C, H, W) in [0, 1]
        h = F.relu(self.conv2(F.relu(self.conv1(h))))  # (n, 2w, H/2, W/2)
        return F.relu(self.fc(h.flatten(1)))  # (n, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FeatureView(nn.Module):
    """The classifier as a torchmetrics feature extractor: uint8 images -> penultimate features (FID) or logits
    (IS), in float64, without gradients; `num_features` tells torchmetrics the width."""

    def __init__(self, classifier: ImageClassifier, output: str = "features"):
        super().__init__()
        if output not in ("features", "logits"):
            raise ValueError(f"output must be 'features' or 'logits', got {output!r}")
        self.classifier, self.output = classifier.eval(), output
        self.num_features = classifier.fc.out_features if output == "features" else classifier.head.out_features

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.classifier.features(x) if self.output == "features" else self.classifier(x)
        return out.double()


def train_classifier(train: tuple, valid: tuple, levels: int, settings: dict | None = None
                     ) -> tuple[ImageClassifier, dict]:
    """Train on `train` = (images (n, C, H, W) uint8, labels (n,)); return (model in eval mode, report with the
    held-out accuracy on `valid` and the settings)."""
    s = {**DEFAULTS, **(settings or {})}
    unknown = set(s) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"key 'images.evaluation.classifier': unknown settings {sorted(unknown)}; expected "
                         f"{sorted(DEFAULTS)}")
    x, y = (torch.as_tensor(a) for a in train)
    xv, yv = (torch.as_tensor(a) for a in valid)
    classes = int(max(y.max(), yv.max())) + 1
    g = torch.Generator().manual_seed(int(s["seed"]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(s["seed"]))  # the weight initialisation
        model = ImageClassifier(x.shape[1], x.shape[2], x.shape[3], levels, classes, int(s["width"]),
                                int(s["features"]))
    opt = torch.optim.AdamW(model.parameters(), lr=float(s["lr"]), weight_decay=float(s["weight_decay"]))
    bs = int(s["batch_size"])
    model.train()
    for epoch in range(int(s["epochs"])):
        order = torch.randperm(len(y), generator=g)
        for lo in range(0, len(y), bs):
            idx = order[lo:lo + bs]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    report = {"train_accuracy": accuracy(model, x, y), "heldout_accuracy": accuracy(model, xv, yv),
              "num_train": len(y), "num_heldout": len(yv), "classes": classes, "settings": s,
              "params": sum(p.numel() for p in model.parameters())}
    log.info("classifier: %d parameters, train accuracy %.4f, held-out accuracy %.4f", report["params"],
             report["train_accuracy"], report["heldout_accuracy"])
    return model, report


@torch.no_grad()
def predict(model: ImageClassifier, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Predicted classes (n,) of uint8 images (n, C, H, W)."""
    images = torch.as_tensor(images)
    return torch.cat([model(images[lo:lo + batch_size]).argmax(-1) for lo in range(0, len(images), batch_size)])


def accuracy(model: ImageClassifier, images, labels) -> float:
    return float((predict(model, images) == torch.as_tensor(labels)).double().mean())


def save_classifier(model: ImageClassifier, report: dict, path: str | os.PathLike) -> None:
    from dlm.utils import atomic_path

    c = model
    arch = dict(channels=c.conv1.in_channels, levels=c.levels, classes=c.head.out_features,
                conv_width=c.conv1.out_channels, features=c.fc.out_features)
    with atomic_path(path) as tmp:
        torch.save({"arch": arch, "input_hw": list(report["input_hw"]), "state_dict": model.state_dict(),
                    "report": report}, tmp)


def load_classifier(path: str | os.PathLike) -> tuple[ImageClassifier, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    a = ckpt["arch"]
    h, w = ckpt["input_hw"]
    model = ImageClassifier(a["channels"], h, w, a["levels"], a["classes"], a["conv_width"], a["features"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt["report"]
