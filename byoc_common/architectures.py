"""Model architectures the images know, and how to give each a new classification head.

Only the network *shape* lives here (both images need it); where pretrained weights come
from is a training concern (``container_train.pretrained``).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models

from byoc_common.arch_names import (  # noqa: F401  (re-exported: the names' one definition)
    DEFAULT_ARCH,
    EFFICIENTNET_LITE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESNETS,
    SUPPORTED_ARCHS,
    UnknownArchitectureError,
    check_arch,
)


def build_backbone(arch: str) -> nn.Module:
    """The ImageNet-shaped network (1000-way head), randomly initialised."""
    check_arch(arch)
    if arch in RESNETS:
        return getattr(models, arch)(weights=None)
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name(arch.replace("_", "-"))


def head_name(arch: str) -> str:
    """Attribute name of the final classification layer."""
    check_arch(arch)
    return "fc" if arch in RESNETS else "_fc"


def replace_head(model: nn.Module, arch: str, num_classes: int) -> nn.Module:
    """Swap the 1000-way ImageNet layer for a freshly initialised ``num_classes``-way one."""
    name = head_name(arch)
    old: nn.Linear = getattr(model, name)
    setattr(model, name, nn.Linear(old.in_features, num_classes))
    return model


def build_classifier(arch: str, num_classes: int) -> nn.Module:
    """The network as the trainer saves it: backbone plus a ``num_classes``-way head."""
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    return replace_head(build_backbone(arch), arch, num_classes)


def split_backbone_head(model: nn.Module, arch: str) -> tuple[nn.Module, nn.Linear]:
    """(feature extractor producing pooled features, head). Used by the frozen-backbone feature cache
    and by Grad-CAM; the feature extractor shares parameters with ``model``."""
    head = getattr(model, head_name(arch))

    class _Features(nn.Module):
        def __init__(self, inner: nn.Module, head_attr: str):
            super().__init__()
            self.inner = inner
            self.head_attr = head_attr

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            saved = getattr(self.inner, self.head_attr)
            setattr(self.inner, self.head_attr, nn.Identity())
            try:
                return self.inner(x)
            finally:
                setattr(self.inner, self.head_attr, saved)

    return _Features(model, head_name(arch)), head


def last_conv_layer(model: nn.Module, arch: str) -> nn.Module:
    """The module whose activations Grad-CAM explains (last spatial feature map)."""
    check_arch(arch)
    if arch in RESNETS:
        return model.layer4
    return model._conv_head
