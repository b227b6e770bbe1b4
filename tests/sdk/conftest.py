"""Fixtures for the SageMaker Python SDK tests: the SDK's local mode on the real images, S3 on the
session's moto server (tests/conftest.py), one tiny dataset and one fitted estimator per module.

The Docker fixtures (engine, images built from this checkout) are tests/containers' own, imported here
so both folders build the images the same way.
"""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from tests.containers.conftest import docker_engine, serve_image, train_image  # noqa: F401 (fixtures)
from tests.helpers.moto_server import BUCKET, REGION, reset
from tests.sdk.local_mode import AWS_ENV, host_network_compose, local_session

# The trainer's smallest real job (as tests/serve's): 2 steps of 8 images of 32 px, one epoch. Values as
# a notebook writes them: Python booleans and ints, which the SDK sends with str() ("False", "1").
HYPERPARAMETERS = {"arch": "resnet18", "pretrained": False, "freeze": "none", "epochs": 1, "image-size": 32,
                   "batch-size": 8, "workers": 0, "max-steps-per-epoch": 2, "debugger": False,
                   "checkpoint": False, "seed": 3}
CLASSES = ["001.Alpha", "002.Beta", "003.Gamma"]   # folder names, dogImages style
LABELS = ["Alpha", "Beta", "Gamma"]                # what the model answers: the trainer drops "NNN."


@pytest.fixture(scope="module")
def sdk_env(moto_url):
    """Dummy credentials and region for the module (the SDK reads them at import and session time)."""
    with pytest.MonkeyPatch.context() as mp:
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            mp.delenv(k, raising=False)
        for k, v in {**AWS_ENV, "AWS_DEFAULT_REGION": REGION}.items():
            mp.setenv(k, v)
        reset(moto_url)
        boto3.client("s3", region_name=REGION, endpoint_url=moto_url).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield moto_url


@pytest.fixture(scope="module")
def s3(sdk_env):
    return boto3.client("s3", region_name=REGION, endpoint_url=sdk_env)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """train/ valid/ test/ of three generated classes, 48 px."""
    from byoc.datasets.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("sdk-data"), num_classes=3,
                        per_class={"train": 6, "valid": 3, "test": 2}, size=48, seed=3, class_names=CLASSES)


def upload_folder(s3, folder: Path, prefix: str) -> str:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        s3.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")
    return f"s3://{BUCKET}/{prefix}/"


@pytest.fixture(scope="module")
def data_uris(s3, dataset) -> dict[str, str]:
    """The dataset on moto: one prefix holding train/ valid/ test/, and one prefix per split."""
    uris = {"all": upload_folder(s3, dataset, "sdk/data/all"),
            **{split: upload_folder(s3, dataset / split, f"sdk/data/{split}") for split in ("train", "valid", "test")}}
    # Batch input: the test images side by side. SDK local mode transforms only the objects directly under
    # the prefix (sagemaker/local/data.py LocalFileDataSource lists one level; SageMaker takes them all).
    for path in sorted((dataset / "test").rglob("*.jpg")):
        s3.upload_file(str(path), BUCKET, f"sdk/data/batch/{path.parent.name}-{path.name}")
    return {**uris, "batch": f"s3://{BUCKET}/sdk/data/batch/"}


@pytest.fixture(scope="module")
def session(sdk_env, docker_engine, tmp_path_factory):  # noqa: F811 (the imported fixture)
    """A LocalSession on moto, its compose files moved to the host network (tests/sdk/local_mode.py)."""
    from byoc.local.endpoint import free_port

    port = free_port()
    root = tmp_path_factory.mktemp("sdk-local")
    with host_network_compose(port):
        yield local_session(sdk_env, REGION, port, root)
