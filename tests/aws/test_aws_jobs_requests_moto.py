"""The launcher's requests over real HTTP to a moto SageMaker server.

moto 5.2.5 stores CreateHyperParameterTuningJob and CreateTrainingJob requests and returns them from
the Describe calls (jobs complete at once; its BestTrainingJob is a fixed placeholder and it does not
keep ProfilerConfig), so this checks that the requests survive botocore serialisation and a
server round trip. The exact request contents are asserted with the Stubber in
test_tune_sagemaker_requests.py.
"""

from __future__ import annotations

import boto3
import pytest

from byoc.aws import debugger as dbg
from byoc.aws import training_jobs as tj
from byoc.aws import tuning_jobs as hpo
from byoc.tuning.spec import load_spec
from tests.helpers.moto_server import reset


@pytest.fixture
def sagemaker_client(moto_url):
    reset(moto_url)
    return boto3.client("sagemaker", region_name="us-east-1", endpoint_url=moto_url,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


RESOURCES = tj.TrainingResources(
    image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-train:latest",
    role_arn="arn:aws:iam::123456789012:role/SageMakerExecutionRole",
    channels={"training": "s3://bkt/data/train/", "validation": "s3://bkt/data/valid/"},
    output_s3_uri="s3://bkt/out", spot=True, checkpoint_s3_uri="s3://bkt/out/checkpoints", max_runtime_s=2400)


def test_tuning_job_round_trip(sagemaker_client):
    spec = load_spec("tuning")
    request = hpo.build_tuning_job_request(spec, "byoc-hpo-moto", RESOURCES)
    arn = hpo.send_tuning_job(sagemaker_client, request)
    assert arn.endswith(":hyper-parameter-tuning-job/byoc-hpo-moto")
    answer = hpo.wait_for_tuning_job(sagemaker_client, "byoc-hpo-moto", poll_s=0.1, timeout_s=10)
    assert answer["HyperParameterTuningJobStatus"] == "Completed"
    assert answer["HyperParameterTuningJobConfig"] == request["HyperParameterTuningJobConfig"]
    assert answer["TrainingJobDefinition"] == request["TrainingJobDefinition"]


def test_final_training_job_round_trip(sagemaker_client):
    debugger = dbg.DebuggerSettings(region="us-east-1")
    request = tj.build_training_job_request("byoc-final-moto", {"lr": 0.01, "arch": "resnet50"},
                                            RESOURCES, debugger)
    tj.send_training_job(sagemaker_client, request)
    answer = tj.wait_for_training_job(sagemaker_client, "byoc-final-moto", poll_s=0.1, timeout_s=10)
    assert answer["TrainingJobStatus"] == "Completed"
    assert answer["HyperParameters"] == {"lr": "0.01", "arch": "resnet50", "debugger": "true"}
    assert answer["CheckpointConfig"] == {"S3Uri": "s3://bkt/out/checkpoints/byoc-final-moto/",
                                          "LocalPath": "/opt/ml/checkpoints"}
    assert answer["DebugHookConfig"] == request["DebugHookConfig"]
    assert answer["DebugRuleConfigurations"] == request["DebugRuleConfigurations"]
    assert [r["RuleConfigurationName"] for r in answer["DebugRuleConfigurations"]] == list(dbg.DEFAULT_RULES)
    assert answer["EnableManagedSpotTraining"] is True
    assert answer["StoppingCondition"] == {"MaxRuntimeInSeconds": 2400, "MaxWaitTimeInSeconds": 4800}
