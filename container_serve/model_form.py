"""The form the network is served in, made at load time from the plain weights (data, never code).

``model.pth`` is read by the artifact contract's one loader (:func:`byoc_common.artifact.load_network`):
``torch.load(mmap=True, weights_only=True)`` into a network built on the ``meta`` device
(``load_state_dict(assign=True)``), so the weights are not copied from a state_dict into a second set
of tensors (the load needs the file's pages once, not twice), each tensor checked first (dtype, shape,
stored densely, finite).

``BYOC_MODEL_FORM`` (:mod:`container_serve.settings`) then picks the form:

* ``fp32``: the network as trained, eager, float32 (what the trainer evaluated).
* ``bf16``: every BatchNorm folded into the convolution before it (exact algebra, done in float32),
  then parameters cast to bfloat16; requests are cast to bfloat16 on the way in and the logits back to
  float32 before the softmax. Half the weight memory, and on CPUs with AVX-512 BF16 (or AMX) oneDNN's
  bf16 convolutions: ~3x less forward time for ResNet50 at one thread and 1.9x the requests/s of the
  served float32 form on this project's bench machine (``bench/RESULTS.md`` section 3). Agreement with the float32 network is tested
  (``tests/serve/test_serve_model_form.py``): top-1 agreement at least
  :data:`BF16_MIN_TOP1_AGREEMENT` on held-out images; per image the largest difference of any class's
  probability at most :data:`BF16_MAX_PROBABILITY_DIFF`, its median over images at most
  :data:`BF16_MEDIAN_PROBABILITY_DIFF`.
* ``auto`` (default): ``bf16`` where the host CPU has native bf16 (:func:`cpu_has_bf16`), else ``fp32``.

A form that does not suit the host falls back to ``fp32`` with one log line saying why: ``bf16`` asked
for on a CPU without native bf16 (it would run emulated, slower than float32), or any failure while
converting or warming up the converted network.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from byoc_common.artifact import ModelArtifactError, ModelConfig, load_network, read_model_metadata
from byoc_common.cpu_features import cpu_has_bf16  # the training image asks the same probe
from container_serve.settings import MODEL_FORM_AUTO as AUTO
from container_serve.settings import MODEL_FORM_BF16 as BF16
from container_serve.settings import MODEL_FORM_FP32 as FP32

logger = logging.getLogger(__name__)

# The tolerance the bf16 form is held to against float32 (bfloat16 keeps 8 bits of mantissa: logits move
# by ~0.5%). Measured: a trained ResNet18 100% top-1 agreement, per-image max |dp| median 0.000, largest
# 0.099; the bench's random-weight ResNet50 99%, median 0.014, largest 0.090 (200 held-out images each).
BF16_MIN_TOP1_AGREEMENT = 0.99
BF16_MAX_PROBABILITY_DIFF = 0.15
BF16_MEDIAN_PROBABILITY_DIFF = 0.02


class ServedModel(nn.Module):
    """The network in its served form: float32 NCHW in, float32 logits out, whatever runs inside."""

    def __init__(self, net: nn.Module, form: str):
        super().__init__()
        self.net = net
        self.form = form
        self.dtype = torch.bfloat16 if form == BF16 else torch.float32

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.dtype)
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x).float()


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` in the same container
    into that convolution (the BatchNorm becomes ``Identity``). In place; returns ``module``."""
    names = list(module._modules)
    for i, name in enumerate(names):
        child = module._modules[name]
        before = module._modules[names[i - 1]] if i > 0 else None
        if isinstance(child, nn.BatchNorm2d) and isinstance(before, nn.Conv2d):
            module._modules[names[i - 1]] = fuse_conv_bn_eval(before, child)
            module._modules[name] = nn.Identity()
        elif child is not None:
            fold_batchnorm(child)
    return module


def choose_form(requested: str) -> tuple[str, str | None]:
    """(form, reason for falling back or None) for the ``BYOC_MODEL_FORM`` value on this host."""
    if requested == FP32:
        return FP32, None
    if cpu_has_bf16():
        return BF16, None
    reason = "this CPU has no native bf16 (AVX-512 BF16 / AMX)"
    return FP32, (reason if requested == BF16 else None)


def _convert(net: nn.Module, form: str, image_size: int) -> ServedModel:
    if form == BF16:
        net = fold_batchnorm(net).to(torch.bfloat16)
    # channels_last (NHWC), the layout oneDNN's convolutions compute in: in NCHW every convolution
    # reordered its input and output, 60-78% of a bf16 ResNet50 pass (ONEDNN_VERBOSE); NHWC measured
    # 1.7-1.8x less CPU time per bf16 pass, float32 within noise (bench/RESULTS.md section 10a). Same values.
    net = net.to(memory_format=torch.channels_last)
    served = ServedModel(net, form).eval()
    for p in served.parameters():
        p.requires_grad_(False)
    with torch.inference_mode():
        served(torch.zeros(1, 3, image_size, image_size))  # warm-up (oneDNN primitive creation)
    _give_back_freed_memory()
    return served


def _give_back_freed_memory() -> None:
    """Return the heap the float32 temporaries of a conversion left free to the OS (glibc keeps it
    otherwise): measured -55 MiB per bf16 ResNet50 worker, the size of its bf16 weights."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def load_served_model(model_dir: str | Path, requested: str = AUTO
                      ) -> tuple[ServedModel, list[str], ModelConfig]:
    """The artifact's network in the form ``requested`` suits on this host, warmed up."""
    model_dir = Path(model_dir)
    config, classes = read_model_metadata(model_dir)
    form, reason = choose_form(requested)
    if reason:
        logger.warning("BYOC_MODEL_FORM=%s: %s; serving the plain float32 weights", requested, reason)
    if form == FP32:
        return _convert(load_network(model_dir, config), FP32, config.image_size), classes, config
    try:
        return _convert(load_network(model_dir, config), form, config.image_size), classes, config
    except ModelArtifactError:
        raise
    except Exception as e:  # noqa: BLE001 - a form the host cannot run: fall back, say why
        if isinstance(e, MemoryError) or "memory" in str(e).lower():
            raise  # the handler answers 507 for it; a float32 copy would not fit either
        logger.warning("BYOC_MODEL_FORM=%s: converting to %s failed (%s: %s); serving the plain float32 "
                       "weights", requested, form, type(e).__name__, e)
    return _convert(load_network(model_dir, config), FP32, config.image_size), classes, config
