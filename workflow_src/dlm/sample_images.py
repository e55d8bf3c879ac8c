"""Draw images from an image checkpoint with any sampler of `dlm.sampling` (the `images_sample` rule) and write
them as one .npz: "images" (n, C, H, W) uint8 grey levels, "labels" (n,) int64 (the class each image was
conditioned on; -1 for unconditional) and "record" (a JSON string: run, algo, sampler variant and every setting,
condition, guidance, steps, seed, network calls and seconds per image).

condition "class": one image per label of a data split, in the split's order (DUO's FID protocol: every
training image gets one generated image with its label, `labels_from: train`); "none": as many images without a
class (the "no class" label of a class-conditional model, as the original's guid_weight 0/None).
"""

from __future__ import annotations

import io
import json
import logging
import time

import numpy as np
import torch

from dlm.data.images import read_meta, read_split, tokens_to_images
from dlm.sampling import resolve_settings, run_sampler
from dlm.utils import atomic_path

log = logging.getLogger("dlm.sample_images")
CONDITIONS = ("class", "none")


def sample_labels(data_dir: str, split: str, num_samples: int | None) -> np.ndarray:
    """The split's labels in order: all of them (num_samples None), or the first num_samples (cycled)."""
    labels = read_split(data_dir, split)[1]
    if num_samples is None:
        return labels
    return labels[np.arange(int(num_samples)) % len(labels)]


def generate_images(ckpt: str, data_dir: str, sampler: str, steps: int, seed: int, condition: str, out: str,
                    labels_from: str = "train", num_samples: int | None = None, batch_size: int = 500,
                    guidance: float | None = 1.0, settings: dict | None = None, variant: str | None = None, run: str = "",
                    device: str = "auto") -> dict:
    """Sample len(labels) images (see the module docstring) in batches and write the .npz `out`; return the record."""
    from dlm.algos import load_module

    if condition not in CONDITIONS:
        raise ValueError(f"unknown image condition {condition!r}; expected one of {CONDITIONS}")
    full = resolve_settings(sampler, settings)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    module = load_module(ckpt, map_location=device)
    meta = read_meta(data_dir)
    if module.hparams.get("image") is None:
        raise ValueError(f"{ckpt}: not an image model (trained on {module.hparams.get('data_dir')!r})")
    labels = sample_labels(data_dir, labels_from, num_samples)
    if condition == "class" and module.num_classes is None:
        raise ValueError(f"{ckpt}: condition 'class' needs a class-conditional model (model.class_conditional)")
    g = torch.Generator(device=device).manual_seed(int(seed))
    own = {k: v for k, v in (settings or {}).items() if k != "sampler"}
    images, nfe, seconds = [], 0.0, 0.0
    for lo in range(0, len(labels), batch_size):
        lab = torch.as_tensor(labels[lo:lo + batch_size], device=device)
        n = len(lab)
        if module.num_classes is None:
            lab = None
        elif condition == "none":
            lab = torch.full_like(lab, module.num_classes)
        t0 = time.perf_counter()
        res = run_sampler(module, sampler, n, steps, g, settings=own, labels=lab,
                          guidance=1.0 if guidance is None else guidance)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        nfe += res["nfe"] * n
        images.append(tokens_to_images(res["tokens"], meta))
        log.info("%d / %d images", lo + n, len(labels))
    images = np.concatenate(images)
    record = {"run": run, "algo": module.algo, "sampler": variant or sampler, "sampler_kind": sampler,
              "settings": full, "condition": condition, "guidance": float(guidance) if condition == "class" else None,
              "labels_from": labels_from, "steps": int(steps), "seed": int(seed), "num_images": len(images),
              "nfe": nfe / len(images), "seconds_per_image": seconds / len(images),
              "params": module.num_params(), "train_steps": getattr(module, "global_step", None)}
    stored = labels if condition == "class" else np.full_like(labels, -1)
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images, labels=stored.astype(np.int64), record=np.array(json.dumps(record)))
    with atomic_path(out) as tmp:
        tmp.write_bytes(buf.getvalue())
    log.info("wrote %d images to %s (%.3f s/image, %.1f network calls/image)", len(images), out,
             record["seconds_per_image"], record["nfe"])
    return record


def read_samples(path: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(images (n, C, H, W) uint8, labels (n,) with -1 = none, record) of a samples .npz."""
    with np.load(path) as f:
        return f["images"], f["labels"], json.loads(str(f["record"]))
