"""Shared fixtures for the feature-cache tests: a tiny generated dataset and a small frozen model."""

from __future__ import annotations

import pytest
import torch

from byoc_common.architectures import build_classifier
from byoc_common.artifact import ModelConfig
from container_train.data import load_splits
from container_train.pretrained import apply_freeze_policy
from scripts.synthetic_dataset import make_dataset

ARCH = "resnet18"
NUM_CLASSES = 3


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fc-data")
    make_dataset(root, num_classes=NUM_CLASSES, per_class={"train": 10, "valid": 6, "test": 2}, size=40, seed=1)
    return root


@pytest.fixture
def splits(tiny_data):
    return load_splits({"training": tiny_data})


@pytest.fixture
def config():
    return ModelConfig(ARCH, NUM_CLASSES, image_size=32, resize_size=36)


def _make_model(seed: int = 0) -> torch.nn.Module:
    """A randomly initialised (seeded) resnet18 classifier frozen for head-only training."""
    torch.manual_seed(seed)
    model = build_classifier(ARCH, NUM_CLASSES)
    apply_freeze_policy(model, ARCH, "head")
    return model


@pytest.fixture
def make_model():
    return _make_model
