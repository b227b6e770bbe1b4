"""A small ImageFolder dataset whose classes differ visibly, generated on the fly.

Used by the tests (so they never need a download) and by ``byoc data --source synthetic`` as the
last-resort demo set. Each class has its own hue and shape; every image gets random position,
scale, background noise and brightness, so a model has to learn something real but a small
network reaches well above chance in a few epochs.

Layout written (the dogImages layout)::

    root/train/001.Class_a/0000.jpg ...
    root/valid/001.Class_a/...
    root/test/001.Class_a/...
"""

from __future__ import annotations

import colorsys
import random
from pathlib import Path

from PIL import Image, ImageDraw

from container_train.contract import SPLITS

SHAPES = ("circle", "square", "triangle", "cross", "ring", "bar")


def class_folder_names(num_classes: int, prefix: str = "Class") -> list[str]:
    """dogImages-style folder names: ``001.Class_a``, ``002.Class_b`` ..."""
    names = []
    for i in range(num_classes):
        suffix = chr(ord("a") + i % 26) * (1 + i // 26)
        names.append(f"{i + 1:03d}.{prefix}_{suffix}")
    return names


def draw_example(class_index: int, num_classes: int, rng: random.Random, size: int = 64) -> Image.Image:
    hue = class_index / max(num_classes, 1)
    fg = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.85, rng.uniform(0.7, 1.0)))
    bg_level = rng.randint(20, 90)
    img = Image.effect_noise((size, size), rng.uniform(10, 40)).convert("RGB")
    img = Image.blend(img, Image.new("RGB", (size, size), (bg_level,) * 3), 0.6)
    draw = ImageDraw.Draw(img)
    shape = SHAPES[class_index % len(SHAPES)]
    r = rng.uniform(0.22, 0.38) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=fg)
    elif shape == "square":
        draw.rectangle(box, fill=fg)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
    elif shape == "cross":
        w = r / 3
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fg)
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fg)
    elif shape == "ring":
        draw.ellipse(box, outline=fg, width=max(2, int(r / 3)))
    else:
        draw.rectangle((cx - r, cy - r / 4, cx + r, cy + r / 4), fill=fg)
    return img


def make_dataset(root: str | Path, num_classes: int = 4, per_class: dict[str, int] | int = 12,
                 size: int = 64, seed: int = 0, class_names: list[str] | None = None) -> Path:
    """Write a train/valid/test ImageFolder tree of JPEGs under ``root`` and return ``root``.

    ``per_class`` is images per class per split: an int for all splits or a dict by split.
    ``class_names`` overrides the folder names (must have ``num_classes`` entries).
    """
    root = Path(root)
    rng = random.Random(seed)
    names = class_names or class_folder_names(num_classes)
    if len(names) != num_classes:
        raise ValueError("class_names must have num_classes entries")
    counts = per_class if isinstance(per_class, dict) else {s: per_class for s in SPLITS}
    for split in SPLITS:
        for ci, name in enumerate(names):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for k in range(counts.get(split, 0)):
                draw_example(ci, num_classes, rng, size).save(d / f"{k:04d}.jpg", quality=90)
    return root
