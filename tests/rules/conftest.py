"""Fixtures of the rules tests: the tiny smdebug training loop and real trainer jobs
(tests/helpers/training_jobs.py; the healthy job is shared with tests/report via tests/conftest.py)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest

from tests.helpers.training_jobs import TRAINER_BASE_HP, channels, run_trainer

TINY_TRAINING = Path(__file__).resolve().parent / "tiny_training.py"


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
def dataset(rules_dataset) -> Path:
    return rules_dataset


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
