"""moto in server mode on 127.0.0.1 for the SageMaker backend tests (no real AWS, ever)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import requests

from scripts.aws.session import AwsContext
from scripts.config import load_settings

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
BUCKET = "byoc-test-bucket"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
REGION = "eu-west-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory):
    if not MOTO_SERVER.exists():
        pytest.fail(f"{MOTO_SERVER} missing: install the dev extras (moto[server])")
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            requests.get(url + "/moto-api/", timeout=1)
            break
        except requests.ConnectionError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"moto_server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


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
    requests.post(moto_url + "/moto-api/reset", timeout=5)
    return moto_url


@pytest.fixture
def settings_for(tmp_path, aws_env):
    def make(**over):
        values = dict(backend="sagemaker", region=REGION, role_arn=ROLE, bucket=BUCKET, prefix="byoc",
                      serve_image="123456789012.dkr.ecr.eu-west-1.amazonaws.com/byoc-serve:1",
                      train_image="123456789012.dkr.ecr.eu-west-1.amazonaws.com/byoc-train:1",
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
