"""Shared fixtures for the trainer tests: tiny generated datasets and fast hyperparameters."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scripts.synthetic_dataset import make_dataset

# Small and fast: resnet18 at 32 px, a couple of epochs, no DataLoader workers unless a test needs them.
FAST_HP = {
    "arch": "resnet18",
    "pretrained": False,
    "freeze": "none",
    "epochs": 2,
    "image-size": 32,
    "batch-size": 16,
    "workers": 0,
    "lr": 0.05,
    "log-interval-s": 1,
}


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """4 classes, dogImages layout (train/ valid/ test/), 48 px JPEGs. Treat as read-only."""
    return make_dataset(tmp_path_factory.mktemp("tiny") / "data", num_classes=4,
                        per_class={"train": 8, "valid": 4, "test": 4}, size=48)


@pytest.fixture
def dataset_copy(tiny_dataset, tmp_path) -> Path:
    """A private copy a test may break."""
    return Path(shutil.copytree(tiny_dataset, tmp_path / "data"))
