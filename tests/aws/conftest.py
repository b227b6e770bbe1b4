"""AWS fixtures on the shared moto server (tests/conftest.py): dummy credentials, settings, clients."""

from __future__ import annotations

import os

import boto3
import pytest

from byoc.aws.session import AwsContext
from byoc.settings import load_settings
from tests.helpers.moto_server import BUCKET, REGION, ROLE, SERVE_IMAGE, TRAIN_IMAGE, reset


@pytest.fixture
def aws_env(monkeypatch, tmp_path, moto_url):
    """Dummy credentials, and no profile/config from the machine leaking in."""
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.chdir(tmp_path)  # no stray ./byoc.yaml
    reset(moto_url)
    return moto_url


@pytest.fixture
def settings_for(tmp_path, aws_env):
    def make(**over):
        values = dict(backend="sagemaker", region=REGION, role_arn=ROLE, bucket=BUCKET, prefix="byoc",
                      serve_image=SERVE_IMAGE, train_image=TRAIN_IMAGE,
                      run_dir=str(tmp_path / "runs" / "demo"), endpoint_url=aws_env)
        values.update(over)
        return load_settings(overrides=values, environ={})
    return make


@pytest.fixture
def ctx(settings_for):
    c = AwsContext.from_settings(settings_for())
    c.s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    return c


@pytest.fixture
def raw_s3(aws_env):
    return boto3.client("s3", region_name=REGION, endpoint_url=aws_env)
