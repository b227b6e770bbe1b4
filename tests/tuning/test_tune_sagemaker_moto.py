"""The launcher's requests over real HTTP to a moto SageMaker server.

moto 5.2.5 stores CreateHyperParameterTuningJob and CreateTrainingJob requests and returns them from
the Describe calls (jobs complete at once; its BestTrainingJob is a fixed placeholder and it does not
keep ProfilerConfig), so this checks that the requests survive botocore serialisation and a
server round trip. The exact request contents are asserted with the Stubber in
test_tune_sagemaker_requests.py.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from scripts.aws import sagemaker_training as sm
from scripts.tuning.spec import load_spec

MOTO_SERVER = Path(sys.executable).parent / "moto_server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sagemaker_client():
    if not MOTO_SERVER.exists():
        pytest.fail(f"{MOTO_SERVER} is missing: install the dev dependencies (moto[server])")
    port = _free_port()
    proc = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto_server did not start on port {port}")
            time.sleep(0.2)
    try:
        yield boto3.client("sagemaker", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


RESOURCES = sm.TrainingResources(
    image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-train:latest",
    role_arn="arn:aws:iam::123456789012:role/SageMakerExecutionRole",
    channels={"training": "s3://bkt/data/train/", "validation": "s3://bkt/data/valid/"},
    output_s3_uri="s3://bkt/out", spot=True, checkpoint_s3_uri="s3://bkt/out/checkpoints")


def test_tuning_job_round_trip(sagemaker_client):
    spec = load_spec("tuning/tuning.yaml")
    request = sm.build_tuning_job_request(spec, "byoc-hpo-moto", RESOURCES)
    arn = sm.send_tuning_job(sagemaker_client, request)
    assert arn.endswith(":hyper-parameter-tuning-job/byoc-hpo-moto")
    answer = sm.wait_for_tuning_job(sagemaker_client, "byoc-hpo-moto", poll_s=0.1, timeout_s=10)
    assert answer["HyperParameterTuningJobStatus"] == "Completed"
    assert answer["HyperParameterTuningJobConfig"] == request["HyperParameterTuningJobConfig"]
    assert answer["TrainingJobDefinition"] == request["TrainingJobDefinition"]


def test_final_training_job_round_trip(sagemaker_client):
    debugger = sm.DebuggerSettings(region="us-east-1")
    request = sm.build_training_job_request("byoc-final-moto", {"lr": 0.01, "arch": "resnet50"},
                                            RESOURCES, debugger)
    sm.send_training_job(sagemaker_client, request)
    answer = sm.wait_for_training_job(sagemaker_client, "byoc-final-moto", poll_s=0.1, timeout_s=10)
    assert answer["TrainingJobStatus"] == "Completed"
    assert answer["HyperParameters"] == {"lr": "0.01", "arch": "resnet50"}
    assert answer["DebugHookConfig"] == request["DebugHookConfig"]
    assert answer["DebugRuleConfigurations"] == request["DebugRuleConfigurations"]
    assert [r["RuleConfigurationName"] for r in answer["DebugRuleConfigurations"]] == list(sm.BUILTIN_RULES)
    assert answer["EnableManagedSpotTraining"] is True
    assert answer["StoppingCondition"] == {"MaxRuntimeInSeconds": 2400, "MaxWaitTimeInSeconds": 4800}
