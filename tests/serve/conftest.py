"""Fixtures for the serving tests: two models trained by the real trainer, and real MMS endpoints.

Everything expensive is session-scoped: the two training jobs run once, one multi-model endpoint and
one single-model endpoint are shared by all tests that only read from them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from byoc.datasets.synthetic import make_dataset
from byoc.local.endpoint import LocalEndpoint
from byoc.local.training_job import run_training_job
from byoc_common.artifact import read_model_metadata
from container_serve.model_archive import create_model_archive

IMAGE_SIZE = 32
MAX_PAYLOAD_MB = 1  # small, so the 413 test needs only a small body
TRAIN_HPS = {
    "arch": "resnet18", "pretrained": "false", "freeze": "none", "epochs": 1, "image-size": IMAGE_SIZE,
    "batch-size": 8, "workers": 0, "max-steps-per-epoch": 2, "debugger": "false", "checkpoint": "false",
}
# Two models with different class sets (different names and different counts).
MODEL_SPECS = {
    "shapes-a": ["001.Alpha", "002.Beta", "003.Gamma"],
    "shapes-b": ["001.Circle_dog", "002.Square_cat"],
}


@dataclass(frozen=True)
class TrainedModel:
    name: str
    model_dir: Path      # the trainer's SM_MODEL_DIR
    archive: Path        # model.tar.gz of it, as SageMaker would upload it
    data_root: Path      # the generated dataset it was trained on
    classes: list[str]

    def test_images(self) -> list[Path]:
        return sorted((self.data_root / "test").rglob("*.jpg"))


def _train(root: Path, name: str, folders: list[str], seed: int) -> TrainedModel:
    data = make_dataset(root / "data", num_classes=len(folders), per_class={"train": 6, "valid": 3, "test": 2},
                        size=48, seed=seed, class_names=folders)
    result = run_training_job(root / "job", {**TRAIN_HPS, "seed": seed}, {"training": data}, timeout=600)
    assert result.ok, f"training {name} failed: {result.failure_reason}\n{result.log_text[-3000:]}"
    _, classes = read_model_metadata(result.model_dir)
    archive = create_model_archive(result.model_dir, root / "model.tar.gz")
    return TrainedModel(name, result.model_dir, archive, data, classes)


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory) -> dict[str, TrainedModel]:
    root = tmp_path_factory.mktemp("serve-models")
    return {name: _train(root / name, name, folders, seed)
            for seed, (name, folders) in enumerate(MODEL_SPECS.items(), start=1)}


@pytest.fixture(scope="session")
def multi_endpoint(tmp_path_factory, trained_models):
    """A multi-model endpoint with both models deployed (unpacked from model.tar.gz) but not loaded."""
    root = tmp_path_factory.mktemp("mme")
    ep = LocalEndpoint(model_root=root / "models", multi_model=True, log_file=root / "endpoint.log",
                       env={"SAGEMAKER_MAX_PAYLOAD_IN_MB": str(MAX_PAYLOAD_MB)})
    for name, model in trained_models.items():
        ep.deploy(name, model.archive)
    with ep:
        yield ep


@pytest.fixture(scope="session")
def loaded_endpoint(multi_endpoint, trained_models):
    """The multi-model endpoint with both models loaded through POST /models."""
    for name in trained_models:
        reply = multi_endpoint.client.load_model(name, multi_endpoint.model_url(name))
        status, body = reply.status, reply.json()
        assert status == 200, body
    return multi_endpoint


@pytest.fixture(scope="session")
def single_endpoint(tmp_path_factory, trained_models):
    """A single-model endpoint serving shapes-a from its model directory (/opt/ml/model), which also
    holds the inert model.tar.gz and output.tar.gz that SDK local mode leaves there."""
    root = tmp_path_factory.mktemp("single")
    model_dir = root / "model"
    shutil.copytree(trained_models["shapes-a"].model_dir, model_dir)
    # As the SageMaker Python SDK's local mode mounts it: the archive beside what it extracted from it.
    shutil.copy(trained_models["shapes-a"].archive, model_dir / "model.tar.gz")
    (model_dir / "output.tar.gz").write_bytes(b"")
    with LocalEndpoint(model_root=model_dir, multi_model=False, log_file=root / "endpoint.log") as ep:
        yield ep
