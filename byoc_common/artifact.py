"""The model artifact contract: what the trainer writes to ``SM_MODEL_DIR`` and the server loads.

Layout of a model directory (and of ``model.tar.gz``, which is that directory tarred flat)::

    model.pth          state_dict of the full classifier; loads with torch.load(weights_only=True)
    classes.json       JSON list of class names, index i = output logit i
    model_config.json  {"format_version", "arch", "num_classes", "image_size", "resize_size",
                        "mean", "std"}

Both images build the network from ``model_config.json`` with
:func:`byoc_common.architectures.build_classifier` and then load ``model.pth`` into it, so no
pickled code ever crosses from the training job to the endpoint.

Faster forms of the network are not part of the artifact: the serving image makes them at load time
from ``model.pth``, as data (tensors), never code (no pickles, no TorchScript), and falls back to these
plain float32 weights with a log line when the host CPU does not suit the form
(:mod:`container_serve.model_form`, ``BYOC_MODEL_FORM``): ``bf16`` folds every BatchNorm into the
convolution before it, in float32, then casts the parameters to bfloat16 (on CPUs with AVX-512 BF16 or
AMX).

:func:`load_model_artifact` is the one loader, used by the server (:mod:`container_serve.model_form`)
and by the tests alike: ``model.pth`` is read with ``torch.load(mmap=True, weights_only=True)`` into a
network built on the ``meta`` device (``load_state_dict(assign=True)``), so the weights are never held
twice. Because ``assign=True`` keeps the file's tensors as they are, each one is checked first: the
dtype and shape the network expects, stored densely (a stride-0 "expanded" tensor is a few bytes in the
file and gigabytes once an operation materialises it; channels-last is dense and fine), and finite (NaN
weights make every answer NaN). A model directory is the operator's, but the server promises 400 (bad
artifact) or 507 (no room) for it, never a killed worker: so :meth:`ModelConfig.from_json` also bounds
the figures that size the work (:data:`MAX_IMAGE_SIZE`, :data:`MAX_RESIZE_SIZE`, :data:`MAX_NUM_CLASSES`)
and :func:`network_bytes` says what the network holds by element count, whatever the file's size.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from byoc_common import durable
from byoc_common.architectures import IMAGENET_MEAN, IMAGENET_STD, build_classifier, check_arch
from byoc_common.artifact_files import (
    ARTIFACT_FILES,
    CLASSES_FILE,
    CONFIG_FILE,
    MAX_IMAGE_SIZE,
    MAX_NUM_CLASSES,
    MAX_RESIZE_SIZE,
    MIN_IMAGE_SIZE,
    WEIGHTS_FILE,
)

FORMAT_VERSION = 1

MAX_METADATA_BYTES = 16 * 1024 * 1024  # classes.json / model_config.json are read whole: bounded first


class ModelArtifactError(ValueError):
    """The directory is not a model artifact this code can load."""


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    num_classes: int
    image_size: int = 224
    # Evaluation resizes the short side to resize_size, then centre-crops image_size
    # (torchvision's reference recipe: 256 -> 224).
    resize_size: int = 256
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    format_version: int = FORMAT_VERSION

    @staticmethod
    def default_resize(image_size: int) -> int:
        return int(round(image_size * 256 / 224))

    def to_json(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_json(cls, d: dict) -> ModelConfig:
        try:
            cfg = cls(
                arch=check_arch(d["arch"]),
                num_classes=int(d["num_classes"]),
                image_size=int(d["image_size"]),
                resize_size=int(d.get("resize_size") or cls.default_resize(int(d["image_size"]))),
                mean=tuple(float(x) for x in d.get("mean", IMAGENET_MEAN)),
                std=tuple(float(x) for x in d.get("std", IMAGENET_STD)),
                format_version=int(d.get("format_version", FORMAT_VERSION)),
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
            raise ModelArtifactError(f"{CONFIG_FILE} is invalid: {e}") from e
        if cfg.format_version > FORMAT_VERSION:
            raise ModelArtifactError(
                f"{CONFIG_FILE} has format_version {cfg.format_version}; this code reads up to {FORMAT_VERSION}"
            )
        cfg.check_bounds()
        return cfg

    def check_bounds(self) -> None:
        """ModelArtifactError unless every figure lies within what the server can promise to serve."""
        for name, value, low, high in (("num_classes", self.num_classes, 1, MAX_NUM_CLASSES),
                                       ("image_size", self.image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),
                                       ("resize_size", self.resize_size, self.image_size, MAX_RESIZE_SIZE)):
            if not low <= value <= high:
                raise ModelArtifactError(f"{CONFIG_FILE}: {name} {value} is outside {low}..{high}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                raise ModelArtifactError(f"{CONFIG_FILE}: {name} must be 3 finite numbers, not {list(values)}")
        if min(self.std) <= 0:
            raise ModelArtifactError(f"{CONFIG_FILE}: std must be positive, not {list(self.std)}")


def save_model_artifact(model_dir: str | os.PathLike, model: nn.Module, class_names: list[str],
                        config: ModelConfig) -> Path:
    """Write the three artifact files into ``model_dir``, each durably (:mod:`byoc_common.durable`)."""
    if len(class_names) != config.num_classes:
        raise ValueError(f"{len(class_names)} class names for a {config.num_classes}-way model")
    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    durable.write_with(out / WEIGHTS_FILE, lambda f: torch.save(state, f))
    durable.write_text(out / CLASSES_FILE, json.dumps(list(class_names), indent=1))
    durable.write_text(out / CONFIG_FILE, json.dumps(config.to_json(), indent=1))
    return out


def read_model_metadata(model_dir: str | os.PathLike) -> tuple[ModelConfig, list[str]]:
    """Config and class names, without touching the weights."""
    d = Path(model_dir)
    missing = [f for f in ARTIFACT_FILES if not (d / f).is_file()]
    if missing:
        raise ModelArtifactError(f"{d} is not a model artifact: missing {', '.join(missing)}")
    config = ModelConfig.from_json(_read_json(d / CONFIG_FILE))
    classes = _read_json(d / CLASSES_FILE)
    if not isinstance(classes, list) or len(classes) != config.num_classes:
        raise ModelArtifactError(f"{CLASSES_FILE} must list {config.num_classes} class names")
    return config, [str(c) for c in classes]


def load_model_artifact(model_dir: str | os.PathLike, device: str | torch.device = "cpu"
                        ) -> tuple[nn.Module, list[str], ModelConfig]:
    """Rebuild the classifier from a model directory, in eval mode on ``device``."""
    config, classes = read_model_metadata(model_dir)
    return load_network(model_dir, config).to(device), classes, config


def load_network(model_dir: str | os.PathLike, config: ModelConfig) -> nn.Module:
    """The network ``config`` describes with the weights of ``model.pth`` assigned (not copied), eval mode."""
    with torch.device("meta"):
        net = build_classifier(config.arch, config.num_classes)
    try:
        state = torch.load(Path(model_dir) / WEIGHTS_FILE, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means a bad artifact
        raise ModelArtifactError(f"{WEIGHTS_FILE} does not load into a {config.arch}: {e}") from e
    if not isinstance(state, dict):
        raise ModelArtifactError(f"{WEIGHTS_FILE} holds a {type(state).__name__}, not a state_dict")
    _check_tensors(state, net.state_dict())
    try:
        net.load_state_dict(state, assign=True)
    except Exception as e:  # noqa: BLE001 - missing or unexpected keys
        raise ModelArtifactError(f"{WEIGHTS_FILE} does not load into a {config.arch}: {e}") from e
    stray = [n for n, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    if stray:
        raise ModelArtifactError(f"{WEIGHTS_FILE} leaves {', '.join(stray[:5])} of the {config.arch} unset")
    return net.eval()


def network_bytes(config: ModelConfig) -> int:
    """Bytes the network of ``config`` holds (parameters and buffers, element count x element size):
    what its weights cost once loaded, whatever the size of the file they come from."""
    with torch.device("meta"):
        net = build_classifier(config.arch, config.num_classes)
    return sum(t.numel() * t.element_size() for t in net.state_dict().values())


def _check_tensors(state: dict, expected: dict[str, torch.Tensor]) -> None:
    """The file's tensors are assigned as they are: refuse what the network itself would not hold."""
    for name, want in expected.items():
        got = state.get(name)
        if not isinstance(got, torch.Tensor):
            continue  # load_state_dict names what is missing
        if got.dtype != want.dtype or got.shape != want.shape:
            raise ModelArtifactError(f"{WEIGHTS_FILE} does not load: {name} is {got.dtype} {tuple(got.shape)}, "
                                     f"the network expects {want.dtype} {tuple(want.shape)}")
        if not _dense(got):
            raise ModelArtifactError(f"{WEIGHTS_FILE}: {name} is not stored densely (strides {got.stride()} for "
                                     f"shape {tuple(got.shape)}); save tensors as a network's state_dict holds them")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise ModelArtifactError(f"{WEIGHTS_FILE}: {name} holds NaN or infinite values")


def _dense(t: torch.Tensor) -> bool:
    """Every element has its own place and the places leave no gap: the strides, smallest first, are the
    running products of the sizes (true for contiguous and channels-last tensors, false for an expanded view)."""
    if t.numel() == 0:
        return True
    step = 1
    for size, stride in sorted(((size, stride) for size, stride in zip(t.shape, t.stride(), strict=True)
                                if size != 1), key=lambda pair: pair[1]):
        if stride != step:
            return False
        step *= size
    return True


def _read_json(path: Path):
    size = path.stat().st_size
    if size > MAX_METADATA_BYTES:
        raise ModelArtifactError(f"{path.name} is {size} bytes; the limit is {MAX_METADATA_BYTES}")
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ModelArtifactError(f"{path.parent}: {path.name} is not readable JSON: {e}") from e
