"""Issue 24 item 9: `byoc train --hp` values are checked against the trainer's hyperparameter table
before any job is created, on both backends: a typo costs no (billed) job. Locally no job folder is
made; on SageMaker no request at all is sent (moto's job list stays empty; a Stubber with no
responses queued fails on any call, and does fail on a valid request, so the check can fail)."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber, UnStubbedResponseError

from byoc.backends.base import BackendError
from byoc.backends.local import LocalBackend
from byoc.backends.sagemaker import SageMakerBackend
from byoc.cli import main
from byoc.settings import load_settings
from tests.helpers.moto_server import BUCKET, REGION, ROLE, TRAIN_IMAGE

TYPOS = ["--hp", "learning-rate=0.1", "--hp", "epochs=two"]


def _says_why(err: str) -> None:
    assert "unknown hyperparameter(s): learning-rate" in err and "epochs='two' is not an integer" in err


def test_local_train_with_a_bad_hp_starts_no_job(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "data"), *TYPOS, "--run-dir", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("byoc train: error: --hp: ") and len(err.strip().splitlines()) == 1
    _says_why(err)
    assert not run.exists()

    backend = LocalBackend(load_settings(overrides={"run_dir": str(run)}, environ={}))
    with pytest.raises(BackendError) as e:
        backend.train(str(tmp_path), {"learning-rate": "0.1", "epochs": "two"}, job_dir=str(tmp_path / "job"))
    _says_why(str(e.value))
    assert not (tmp_path / "job").exists()


def test_sagemaker_train_with_a_bad_hp_sends_no_request(tmp_path, aws_env, raw_s3, capsys):
    raw_s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    flags = ["--backend", "sagemaker", "--region", REGION, "--role-arn", ROLE, "--bucket", BUCKET,
             "--train-image", TRAIN_IMAGE, "--run-dir", str(tmp_path / "run"), "--aws-endpoint-url", aws_env]
    assert main(["train", "--data", f"s3://{BUCKET}/byoc/run/data/", *TYPOS, *flags]) == 1
    _says_why(capsys.readouterr().err)
    sm = boto3.client("sagemaker", region_name=REGION, endpoint_url=aws_env)
    assert sm.list_training_jobs()["TrainingJobSummaries"] == []


def test_sagemaker_backend_checks_before_any_call(settings_for):
    backend = SageMakerBackend(settings_for())
    data = f"s3://{BUCKET}/byoc/demo/data/"
    with Stubber(backend.ctx.sagemaker) as sm, Stubber(backend.ctx.s3) as s3:
        with pytest.raises(BackendError) as e:
            backend.train(data, {"learning-rate": "0.1", "epochs": "two"})
        _says_why(str(e.value))
        sm.assert_no_pending_responses()
        s3.assert_no_pending_responses()
        # The same call with valid values does reach AWS: the stubs would have caught a request.
        with pytest.raises(UnStubbedResponseError):
            backend.train(data, {"epochs": "2"})
