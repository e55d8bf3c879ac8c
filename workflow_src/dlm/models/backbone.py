"""Choose a method's network from its run's `model` setting: the DiT (text and any token sequence) or the UNet of
DUO's CIFAR-10 experiments (image data only). Every method builds its backbone here, so a method never knows
which one it runs on: both take (ids (B, L), sigma (B,)) and return logits (B, L, K)."""

from __future__ import annotations

import torch.nn as nn

from dlm.models.dit import DiT, make_config
from dlm.models.unet import UNet, UNetConfig

BACKBONES = ("dit", "unet")
# model keys of the UNet (config/schema.yaml `model`; the defaults are configs/model/unet.yaml of s-sahoo/duo)
UNET_KEYS = ("ch", "ch_mult", "num_res_blocks", "attn_scale", "skip_rescale", "time_scale", "fix_logistic")


def build_backbone(model: dict, vocab_size: int, block_length: int, causal: bool = False,
                   image: dict | None = None) -> nn.Module:
    """The network of `model` = {backbone: dit | unet, size (dit), dropout, UNet keys, class_conditional,
    class_dropout}; `image` = {channels, height, width, num_classes} of image data (None for text)."""
    kind = model.get("backbone", "dit")
    if kind not in BACKBONES:
        raise ValueError(f"key 'model.backbone': value {kind!r} is invalid: expected one of {list(BACKBONES)}")
    conditional = bool(model.get("class_conditional", False))
    if kind == "dit":
        if conditional:
            raise ValueError("key 'model.class_conditional': the DiT takes no class labels; use backbone 'unet'")
        return DiT(make_config(vocab_size, block_length, model.get("size", "small"), model.get("dropout", 0.1),
                               causal=causal))
    if image is None:
        raise ValueError("key 'model.backbone': 'unet' needs image data (a run of `images.runs`), not text")
    if causal:
        raise ValueError("key 'model.backbone': 'unet' is bidirectional; an AR run needs the DiT")
    pixels = image["channels"] * image["height"] * image["width"]
    if pixels != block_length:
        raise ValueError(f"image of {pixels} pixels does not match the block length {block_length}")
    if conditional and not image.get("num_classes"):
        raise ValueError("key 'model.class_conditional': the image data has no class labels")
    return UNet(UNetConfig(vocab_size=vocab_size, channels=image["channels"], height=image["height"],
                           width=image["width"], dropout=model.get("dropout", 0.1),
                           num_classes=image["num_classes"] if conditional else None,
                           **{k: model[k] for k in UNET_KEYS if k in model}))
