"""The names of the architectures the images know, and the ImageNet statistics they share, without torch.

:mod:`byoc_common.architectures` builds the networks and imports torch; the hyperparameter table and
the operator CLI only need the names, and importing torch for them made every ``byoc`` command (its
``--help`` included) take seconds to start. :mod:`byoc_common.architectures` re-exports these.
"""

from __future__ import annotations

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
EFFICIENTNET_LITE = ("efficientnet_lite0",)
SUPPORTED_ARCHS = RESNETS + EFFICIENTNET_LITE
DEFAULT_ARCH = "resnet50"

# Every supported backbone's last convolutional layer (what Grad-CAM explains) sees the input at 1/32
# of its side: a 96 px input gives a 3x3 map, 224 px a 7x7 one (torchvision's ResNets and
# EfficientNet-Lite0 both downsample five times by 2).
LAST_CONV_STRIDE = 32

# ImageNet statistics: every supported backbone was pretrained with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class UnknownArchitectureError(ValueError):
    pass


def check_arch(arch: str) -> str:
    if arch not in SUPPORTED_ARCHS:
        raise UnknownArchitectureError(
            f"unknown arch {arch!r}; supported: {', '.join(SUPPORTED_ARCHS)}"
        )
    return arch
