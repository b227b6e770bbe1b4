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
AMX). ``model.pth`` is read there with ``torch.load(mmap=True, weights_only=True)`` into a network
built on the ``meta`` device, so the weights are never held twice.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from byoc_common import durable
from byoc_common.architectures import IMAGENET_MEAN, IMAGENET_STD, build_classifier, check_arch
from byoc_common.artifact_files import ARTIFACT_FILES, CLASSES_FILE, CONFIG_FILE, WEIGHTS_FILE

FORMAT_VERSION = 1


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
        except (KeyError, TypeError, ValueError) as e:
            raise ModelArtifactError(f"{CONFIG_FILE} is invalid: {e}") from e
        if cfg.format_version > FORMAT_VERSION:
            raise ModelArtifactError(
                f"{CONFIG_FILE} has format_version {cfg.format_version}; this code reads up to {FORMAT_VERSION}"
            )
        return cfg


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
    try:
        config = ModelConfig.from_json(json.loads((d / CONFIG_FILE).read_text()))
        classes = json.loads((d / CLASSES_FILE).read_text())
    except json.JSONDecodeError as e:
        raise ModelArtifactError(f"{d}: unreadable JSON: {e}") from e
    if not isinstance(classes, list) or len(classes) != config.num_classes:
        raise ModelArtifactError(f"{CLASSES_FILE} must list {config.num_classes} class names")
    return config, [str(c) for c in classes]


def load_model_artifact(model_dir: str | os.PathLike, device: str | torch.device = "cpu"
                        ) -> tuple[nn.Module, list[str], ModelConfig]:
    """Rebuild the classifier from a model directory, in eval mode on ``device``."""
    config, classes = read_model_metadata(model_dir)
    model = build_classifier(config.arch, config.num_classes)
    try:
        state = torch.load(Path(model_dir) / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - any failure here means a bad artifact
        raise ModelArtifactError(f"{WEIGHTS_FILE} does not load into a {config.arch}: {e}") from e
    return model.to(device).eval(), classes, config
