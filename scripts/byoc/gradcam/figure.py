"""The Grad-CAM figure a person looks at: the original image, the heat map with its colour scale, and
the overlay side by side at a readable size, with the answer and whether it was right in the title.

Drawn on the operator's machine from the endpoint's answer (its ``gradcam.heatmap``, the raw map at
the model's input size, 0..1 relative to this image's peak) and the image file that was sent, so the
figure has the photo's own resolution rather than the model's 64 or 224 pixels.

What keeps it honest (issue 25): a sequential colormap whose dark end is "no evidence" and a colour
bar that says what the colours mean; an overlay that tints only where the map is high (low heat
leaves the image as it is, instead of painting every pixel warm); the resolution of the map the
heat comes from, since a 96 px input gives EfficientNet-Lite0's last layer a 3x3 map, which
upsampling turns into smooth blobs; and the true class, when the image sits in a class folder of a
dataset split, so a wrong answer is marked wrong.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from byoc_common.arch_names import LAST_CONV_STRIDE
from container_train.contract import SPLIT_FOLDER_ALIASES, class_name_from_folder

FIGURE_INCHES = (13.0, 4.8)
FIGURE_DPI = 110
COLORMAP = "inferno"        # perceptually uniform, black = 0: low means low
MAX_OVERLAY_ALPHA = 0.6     # the tint where the map is 1; 0 where it is 0
MIN_SIDE_PX = 320           # small images (a 28 px Fashion-MNIST item) are shown enlarged
RIGHT, WRONG = "#17803d", "#b42318"
SPLIT_NAMES = frozenset(name for names in SPLIT_FOLDER_ALIASES.values() for name in names)


def _original(image_path: str | os.PathLike) -> Image.Image:
    img = ImageOps.exif_transpose(Image.open(image_path)).convert("RGB")
    if min(img.size) < MIN_SIDE_PX:
        scale = MIN_SIDE_PX / min(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.NEAREST)
    return img


def true_class_of(image_path: str | os.PathLike) -> str | None:
    """The class of an image in a dataset split (``.../test/001.T-shirt_top/<file>`` -> ``T-shirt_top``,
    named as the model names it), else None: the folder layout is the only label this side knows."""
    path = Path(image_path)
    return class_name_from_folder(path.parent.name) if path.parent.parent.name in SPLIT_NAMES else None


def map_resolution(input_size: tuple[int, int], map_size: tuple[int, int] | None = None) -> str:
    """``"3x3 map for a 96x96 input"``: the answer's own figure when it carries one, else the backbone's
    stride (:data:`byoc_common.arch_names.LAST_CONV_STRIDE`)."""
    w, h = input_size
    rows, cols = map_size or (math.ceil(h / LAST_CONV_STRIDE), math.ceil(w / LAST_CONV_STRIDE))
    return f"{rows}x{cols} map for a {w}x{h} input"


def title_of(label: str, probability: float | None, true_class: str | None) -> tuple[str, str | None]:
    """The figure's title and its colour: the answer, and whether it matches the image's class."""
    text = f"predicted: {label}" + (f" ({probability:.0%})" if probability is not None else "")
    if true_class is None:
        return text, None
    if true_class == label:
        return f"{text}, right", RIGHT
    return f"{text}, WRONG: the image is a {true_class}", WRONG


def draw_figure(image_path: str | os.PathLike, heatmap_png: bytes, label: str, probability: float | None,
                out: str | os.PathLike, map_size: tuple[int, int] | None = None) -> Path:
    """Write the three-panel PNG to ``out``; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    original = _original(image_path)
    raw = Image.open(io.BytesIO(heatmap_png)).convert("L")
    heat = raw.resize(original.size, Image.Resampling.BILINEAR)
    heat_values = np.asarray(heat, dtype=np.float32) / 255.0
    cmap = plt.get_cmap(COLORMAP)
    alpha = (MAX_OVERLAY_ALPHA * heat_values)[..., None]
    overlay = (1 - alpha) * (np.asarray(original, dtype=np.float32) / 255.0) + alpha * cmap(heat_values)[..., :3]

    fig, axes = plt.subplots(1, 3, figsize=FIGURE_INCHES, dpi=FIGURE_DPI)
    axes[0].imshow(original)
    axes[0].set_title("image")
    shown = axes[1].imshow(heat_values, cmap=cmap, vmin=0, vmax=1)
    axes[1].set_title("Grad-CAM heat map")
    axes[1].text(0.5, -0.06, f"last conv layer: {map_resolution(raw.size, map_size)}, upsampled",
                 transform=axes[1].transAxes, ha="center", va="top", fontsize=10)
    bar = fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04)
    bar.set_label("evidence for the class (1 = this image's peak)")
    axes[2].imshow(overlay.clip(0, 1))
    axes[2].set_title("overlay (tinted where the map is high)")
    for ax in axes:
        ax.axis("off")
    title, colour = title_of(label, probability, true_class_of(image_path))
    fig.suptitle(title, fontsize=15, fontweight="bold", color=colour)
    fig.tight_layout(rect=(0, 0.02, 1, 0.93))   # room for the title above and the note below the panels
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
