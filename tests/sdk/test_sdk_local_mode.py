"""A SageMaker Python SDK user's own code, unchanged, on both images: the SDK's classes in local mode
(docker-compose, the real images), S3 on moto. What a notebook does: Estimator.fit with one channel and
with three, estimator.deploy(image_uri=<serving image>) with the default Predictor, Model(model_data=
'file://.../model.tar.gz').deploy with PyTorchPredictor's defaults (npy in, npy out), and a Transformer.
"""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from byoc_common.artifact_files import ARTIFACT_FILES
from container_train.contract import METRIC_DEFINITIONS
from tests.helpers.moto_server import BUCKET, ROLE
from tests.sdk.conftest import CLASSES, HYPERPARAMETERS, LABELS

pytestmark = [pytest.mark.slow, pytest.mark.container]


def _estimator(session, train_image, prefix: str):
    from sagemaker.estimator import Estimator

    return Estimator(image_uri=train_image, role=ROLE, instance_count=1, instance_type="local",
                     output_path=f"s3://{BUCKET}/{prefix}", hyperparameters=HYPERPARAMETERS,
                     metric_definitions=METRIC_DEFINITIONS, sagemaker_session=session)


def _archive_names(s3, uri: str) -> list[str]:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        return sorted(name.removeprefix("./") for name in tar.getnames() if name not in (".", ""))


@pytest.fixture(scope="module")
def fitted(session, train_image, data_uris):
    """Estimator.fit with the one `training` channel holding train/ valid/ test/ (as dogImages does)."""
    estimator = _estimator(session, train_image, "sdk/one-channel")
    estimator.fit({"training": data_uris["all"]}, wait=True, logs=False)
    return estimator


def test_fit_with_one_channel_writes_the_artifact_where_output_path_says(fitted, s3):
    assert fitted.model_data.startswith(f"s3://{BUCKET}/sdk/one-channel/{fitted.latest_training_job.name}/")
    assert _archive_names(s3, fitted.model_data) == sorted(ARTIFACT_FILES)


def test_fit_with_training_validation_and_test_channels(session, train_image, data_uris, s3):
    estimator = _estimator(session, train_image, "sdk/three-channels")
    estimator.fit({"training": data_uris["train"], "validation": data_uris["valid"], "test": data_uris["test"]},
                  wait=True, logs=False)
    assert _archive_names(s3, estimator.model_data) == sorted(ARTIFACT_FILES)
    described = session.sagemaker_client.describe_training_job(estimator.latest_training_job.name)
    assert described["TrainingJobStatus"] == "Completed"


def _jpeg(dataset) -> bytes:
    return sorted((dataset / "test").rglob("*.jpg"))[0].read_bytes()


def test_estimator_deploy_with_the_serving_image_and_the_default_predictor(fitted, serve_image, dataset):
    """The notebook flow: fit, then deploy(image_uri=<serving image>). Local mode mounts the folder
    holding model.tar.gz at /opt/ml/model; the server ignores the archive and serves the three files."""
    predictor = fitted.deploy(1, "local", image_uri=serve_image)
    try:
        answer = json.loads(predictor.predict(_jpeg(dataset)))    # IdentitySerializer: octet-stream
        assert answer["predictions"][0]["label"] in LABELS
    finally:
        predictor.delete_endpoint()


def test_model_deploy_from_a_file_archive_with_pytorch_predictor_defaults(fitted, serve_image, session, s3,
                                                                            dataset, tmp_path):
    """Model(model_data='file://.../model.tar.gz').deploy, then PyTorchPredictor as the SDK builds it:
    NumpySerializer in, Accept application/x-npy, NumpyDeserializer out."""
    from sagemaker.model import Model
    from sagemaker.pytorch.model import PyTorchPredictor

    bucket, key = fitted.model_data.removeprefix("s3://").split("/", 1)
    s3.download_file(bucket, key, str(tmp_path / "model.tar.gz"))
    model = Model(image_uri=serve_image, model_data=f"file://{tmp_path / 'model.tar.gz'}", role=ROLE,
                  sagemaker_session=session, predictor_cls=PyTorchPredictor)
    predictor = model.deploy(1, "local")
    try:
        pixels = np.asarray(Image.open(io.BytesIO(_jpeg(dataset))).convert("RGB"))    # uint8 HWC
        probabilities = predictor.predict(pixels)
        assert probabilities.dtype == np.float32 and probabilities.shape == (1, len(CLASSES))
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-4)
    finally:
        predictor.delete_endpoint()
    # What the server was given: the SDK extracted the archive beside itself and mounted that folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*ARTIFACT_FILES, "model.tar.gz"])


def test_transformer_single_record_writes_one_output_per_image(fitted, serve_image, session, data_uris, s3):
    """Batch transform through the SDK's Transformer, on the serving image (estimator.transformer() would
    take the training image). Local mode accepts only the API spelling of BatchStrategy, and our
    /execution-parameters answers AWS's container spelling (SINGLE_RECORD), so local-mode users pass
    strategy='SingleRecord' (README, "From the SageMaker Python SDK")."""
    from sagemaker.model import Model

    model = Model(image_uri=serve_image, model_data=fitted.model_data, role=ROLE, sagemaker_session=session)
    transformer = model.transformer(1, "local", strategy="SingleRecord", accept="application/json",
                                    output_path=f"s3://{BUCKET}/sdk/transform/")
    transformer.transform(data_uris["batch"], content_type="image/jpeg", wait=True, logs=False)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="sdk/transform/").get("Contents", []))
    assert len(keys) == 3 * 2 and all(k.endswith(".jpg.out") for k in keys), keys
    answer = json.loads(s3.get_object(Bucket=BUCKET, Key=keys[0])["Body"].read())
    assert answer["predictions"][0]["label"] in LABELS
