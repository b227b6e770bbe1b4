"""Grad-CAM (Selvaraju et al., 2017) for one image and one class, returned as a PNG overlay.

The explained layer is :func:`byoc_common.architectures.last_conv_layer` (ResNet ``layer4``,
EfficientNet-Lite ``_conv_head``). The heatmap is the ReLU of the activation maps weighted by their
spatially averaged gradients, upsampled to the model input and laid over the (denormalised) input
image, so what the client sees is exactly what the model saw.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from byoc_common.architectures import last_conv_layer
from byoc_common.artifact import ModelConfig

OVERLAY_ALPHA = 0.45


class GradCam:
    def __init__(self, model: nn.Module, arch: str, layer: nn.Module | None = None):
        self.model = model
        self.layer = layer if layer is not None else last_conv_layer(model, arch)

    def heatmap(self, image: torch.Tensor, class_index: int) -> torch.Tensor:
        """``image``: one normalised CHW input. Returns an HxW map in [0, 1] at input resolution."""
        captured: dict[str, torch.Tensor] = {}

        def keep_activation(_module, _inputs, output):
            captured["activation"] = output
            output.register_hook(lambda grad: captured.__setitem__("gradient", grad))

        handle = self.layer.register_forward_hook(keep_activation)
        try:
            with torch.enable_grad():
                x = image.unsqueeze(0).detach().requires_grad_(True)
                logits = self.model(x)
                self.model.zero_grad(set_to_none=True)
                logits[0, class_index].backward()
        finally:
            handle.remove()
        # float32 whatever the served form computes in (container_serve.model_form)
        activation, gradient = captured["activation"].detach().float(), captured["gradient"].detach().float()
        weights = gradient.mean(dim=(2, 3), keepdim=True)  # one weight per channel
        cam = F.relu((weights * activation).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        cam = torch.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0)  # overflowing gradients: no heat, not NaN
        peak = cam.max()
        return cam / peak if peak > 0 else torch.zeros_like(cam)


def _jet(values: np.ndarray) -> np.ndarray:
    """The classic 'jet' colormap, HxW in [0, 1] -> HxWx3 uint8 (no matplotlib in the serving image)."""
    v = values[..., None]
    rgb = np.clip(np.concatenate([1.5 - np.abs(4 * v - 3), 1.5 - np.abs(4 * v - 2), 1.5 - np.abs(4 * v - 1)],
                                 axis=-1), 0, 1)
    return (rgb * 255).astype(np.uint8)


def overlay_png_base64(image: torch.Tensor, heatmap: torch.Tensor, config: ModelConfig) -> str:
    """Heatmap over the denormalised input image, as base64-encoded PNG."""
    mean = torch.tensor(config.mean).view(3, 1, 1)
    std = torch.tensor(config.std).view(3, 1, 1)
    rgb = ((image.detach().cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.float32)
    colored = _jet(heatmap.cpu().numpy()).astype(np.float32)
    blended = ((1 - OVERLAY_ALPHA) * rgb + OVERLAY_ALPHA * colored).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(blended, mode="RGB").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def heatmap_png_base64(heatmap: torch.Tensor) -> str:
    """The raw heat map (0..1 at the model's input size) as an 8-bit greyscale PNG, base64: what a
    client needs to draw it at the size of the original image."""
    grey = (heatmap.detach().cpu().clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")
