"""Shared pieces for the rules/report tests: the tiny smdebug training loop and real trainer jobs."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TINY_TRAINING = HERE / "tiny_training.py"

# Small enough for a shared 2-core machine.
TRAINER_BASE_HP = {
    "arch": "resnet18", "pretrained": "false", "freeze": "none", "batch-size": 8, "image-size": 32,
    "workers": 0, "debugger-save-interval": 1, "lr-scheduler": "none", "log-interval-s": 5,
    "checkpoint": "false", "seed": 7,
}


@pytest.fixture(autouse=True)
def _quiet_smdebug():
    logging.getLogger("smdebug").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def tiny():
    spec = importlib.util.spec_from_file_location("rules_tiny_training", TINY_TRAINING)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    from byoc.datasets.synthetic import make_dataset

    root = tmp_path_factory.mktemp("rules-data")
    make_dataset(root, num_classes=4, per_class=8, size=40)   # 4 training steps of 8 images per epoch
    return root


def channels(root: Path) -> dict[str, Path]:
    return {"training": root / "train", "validation": root / "valid"}


def run_trainer(job_dir: Path, dataset: Path, **hp):
    """A real local training job (process mode) with the Debugger hook saving every step."""
    from byoc.local.training_job import run_training_job

    result = run_training_job(job_dir, {**TRAINER_BASE_HP, **hp}, channels(dataset), timeout=900)
    assert result.returncode == 0, f"training job failed: {result.failure_reason}\n{result.log_text[-3000:]}"
    return result


@pytest.fixture(scope="session")
def healthy_job(tmp_path_factory, dataset):
    """ResNet18 from random weights, full-batch SGD (the 32 training images in one step) at lr 0.003,
    12 epochs: the training loss falls step after step (1.65 -> 0.02 here). Mini-batches of 8 made the
    per-step loss jump between 0.15 and 1.5, and Overtraining's patience of 5 steps then fired or not
    by chance."""
    return run_trainer(tmp_path_factory.mktemp("healthy-job"), dataset, lr=0.003, epochs=12,
                       **{"batch-size": 32})


@pytest.fixture(scope="session")
def trainer():
    """``trainer(job_dir, dataset, **hyperparameters)`` -> TrainingJobResult (asserts success)."""
    return run_trainer


@pytest.fixture
def base_hp() -> dict:
    return dict(TRAINER_BASE_HP)


@pytest.fixture(scope="session")
def dataset_channels(dataset) -> dict[str, Path]:
    return channels(dataset)
