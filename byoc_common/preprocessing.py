"""Evaluation-time image transform, shared so the endpoint sees exactly what validation saw."""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import v2 as T

from byoc_common.artifact import ModelConfig


def to_rgb(img: Image.Image) -> Image.Image:
    """Grayscale, palette, CMYK and alpha images all become 3-channel RGB (alpha over white)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.split()[-1])
        return background
    return img.convert("RGB")


def eval_transform(config: ModelConfig) -> T.Compose:
    """PIL RGB image (or uint8 CHW tensor) -> normalised float CHW tensor."""
    return T.Compose([
        T.ToImage(),
        T.Resize(config.resize_size, antialias=True),
        T.CenterCrop(config.image_size),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean=list(config.mean), std=list(config.std)),
    ])
