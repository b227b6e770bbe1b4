"""Shared fixtures for the trainer tests: tiny generated datasets (helpers: train_helpers.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from byoc.datasets.synthetic import make_dataset
from byoc_common.artifact import ModelConfig
from container_train.data import load_splits
from tests.train.train_helpers import CACHE_ARCH, CACHE_CLASSES, frozen_model


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """4 classes, dogImages layout (train/ valid/ test/), 48 px JPEGs. Treat as read-only."""
    return make_dataset(tmp_path_factory.mktemp("tiny") / "data", num_classes=4,
                        per_class={"train": 8, "valid": 4, "test": 4}, size=48)


@pytest.fixture
def dataset_copy(tiny_dataset, tmp_path) -> Path:
    """A private copy a test may break."""
    return Path(shutil.copytree(tiny_dataset, tmp_path / "data"))


# ---- the feature-cache tests: 3 classes, 10 train / 6 valid images each, a frozen resnet18 ----------

@pytest.fixture(scope="session")
def cache_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fc-data")
    make_dataset(root, num_classes=CACHE_CLASSES, per_class={"train": 10, "valid": 6, "test": 2}, size=40, seed=1)
    return root


@pytest.fixture
def cache_splits(cache_data):
    return load_splits({"training": cache_data})


@pytest.fixture
def cache_config():
    return ModelConfig(CACHE_ARCH, CACHE_CLASSES, image_size=32, resize_size=36)


@pytest.fixture
def make_model():
    """``make_model(seed)``: a seeded resnet18 frozen for head-only training."""
    return frozen_model
