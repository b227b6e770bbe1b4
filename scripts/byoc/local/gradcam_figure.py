"""The Grad-CAM figure a person looks at: the original image, the heat map and the overlay side by
side at a readable size, with the class and its probability in the title.

Drawn on the operator's machine from the endpoint's answer (its ``gradcam.heatmap``, the raw map at
the model's input size) and the image file that was sent, so the figure has the photo's own
resolution rather than the model's 64 or 224 pixels.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

FIGURE_INCHES = (12.0, 4.4)
FIGURE_DPI = 110
OVERLAY_ALPHA = 0.45
MIN_SIDE_PX = 320           # small images (a 28 px Fashion-MNIST item) are shown enlarged


def _original(image_path: str | os.PathLike) -> Image.Image:
    img = ImageOps.exif_transpose(Image.open(image_path)).convert("RGB")
    if min(img.size) < MIN_SIDE_PX:
        scale = MIN_SIDE_PX / min(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.NEAREST)
    return img


def draw_figure(image_path: str | os.PathLike, heatmap_png: bytes, label: str, probability: float | None,
                out: str | os.PathLike) -> Path:
    """Write the three-panel PNG to ``out``; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    original = _original(image_path)
    heat = Image.open(io.BytesIO(heatmap_png)).convert("L").resize(original.size, Image.Resampling.BILINEAR)
    heat_values = np.asarray(heat, dtype=np.float32) / 255.0
    colored = plt.get_cmap("jet")(heat_values)[..., :3]
    overlay = (1 - OVERLAY_ALPHA) * (np.asarray(original, dtype=np.float32) / 255.0) + OVERLAY_ALPHA * colored

    fig, axes = plt.subplots(1, 3, figsize=FIGURE_INCHES, dpi=FIGURE_DPI)
    for ax, picture, title in ((axes[0], original, "image"), (axes[1], heat_values, "Grad-CAM heat map"),
                               (axes[2], overlay.clip(0, 1), "overlay")):
        ax.imshow(picture, cmap="jet" if picture is heat_values else None, vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    chance = f" ({probability:.0%})" if probability is not None else ""
    fig.suptitle(f"predicted: {label}{chance}", fontsize=15, fontweight="bold")
    fig.tight_layout(rect=(0, 0, 1, 0.94))      # room for the title above the panels' own titles
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
