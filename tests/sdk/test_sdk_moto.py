"""The SDK requests that local mode cannot run, against moto on 127.0.0.1: HyperparameterTuner.fit
(field by field against `byoc tune --dry-run`) and MultiDataModel (against `byoc serve --dry-run`).
SageMaker Python SDK local mode has no tuning (LocalSagemakerClient has no CreateHyperParameterTuningJob)
and no multi-model hosting (it mounts ModelDataUrl at /opt/ml/model and never loads a TargetModel)."""

from __future__ import annotations

import json

import boto3
import pytest

from byoc.cli import main
from container_train.contract import METRIC_DEFINITIONS
from container_train.hyperparameters import parse_bool
from tests.helpers.moto_server import BUCKET, REGION, ROLE, SERVE_IMAGE, TRAIN_IMAGE
from tests.sdk.local_mode import TELEMETRY_OFF

pytestmark = pytest.mark.slow     # imports the SDK and runs the CLI; no Docker

DATA = f"s3://{BUCKET}/byoc/run/data/"


def _flags(tmp_path, url: str) -> list[str]:
    return ["--backend", "sagemaker", "--region", REGION, "--role-arn", ROLE, "--bucket", BUCKET,
            "--train-image", TRAIN_IMAGE, "--serve-image", SERVE_IMAGE, "--run-dir", str(tmp_path / "run"),
            "--aws-endpoint-url", url, "--dry-run"]


def _dry_run(capsys, argv: list[str]) -> dict[str, dict]:
    assert main(argv) == 0
    lines = [line.split(" ", 2) for line in capsys.readouterr().out.splitlines() if line.startswith("DRY-RUN ")]
    return {op: json.loads(params) for _, op, params in lines}


class NotSent(Exception):
    """Raised by the recorder to keep a request from being sent."""


def _sdk_session(url: str, sent: dict[str, dict]):
    """A SageMaker SDK Session whose clients talk to moto, recording each request's parameters as the
    SDK passed them (before botocore serialises them)."""
    from sagemaker.session import Session

    boto = boto3.Session(region_name=REGION)
    clients = {name: boto.client(name, endpoint_url=url) for name in ("sagemaker", "sagemaker-runtime", "s3")}

    def record(params, model, **_):
        sent[model.name] = json.loads(json.dumps(params, default=str))

    def record_and_stop(params, model, **kwargs):
        record(params, model)
        raise NotSent(model.name)

    clients["sagemaker"].meta.events.register("before-parameter-build.sagemaker.*", record)
    # moto's InvokeEndpoint only echoes canned results (and can hold its server for tens of seconds):
    # the request is what is checked, so it is recorded and not sent.
    clients["sagemaker-runtime"].meta.events.register("before-parameter-build.sagemaker-runtime.*",
                                                      record_and_stop)
    session = Session(boto_session=boto, sagemaker_client=clients["sagemaker"],
                      sagemaker_runtime_client=clients["sagemaker-runtime"], sagemaker_config=TELEMETRY_OFF,
                      default_bucket=BUCKET)
    session.s3_client = clients["s3"]
    session.s3_resource = boto.resource("s3", endpoint_url=url)
    return session


@pytest.fixture
def moto(sdk_env, monkeypatch, tmp_path) -> str:
    monkeypatch.chdir(tmp_path)       # no stray ./byoc.yaml
    return sdk_env


def _diff(a, b, path: str = "") -> list[str]:
    """Dotted paths where two request documents differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{path}.{k}".lstrip("."))]
    return [] if a == b else [path]


# Where the SDK's HyperparameterTuner (2.253) and `byoc tune` differ, and why each is benign:
BENIGN = {
    # byoc says false; the SDK leaves it out unless use_spot_instances=True (absent means false).
    "TrainingJobDefinition.EnableManagedSpotTraining",
    # One set of hosts, two spellings: the SDK sends the newer HyperParameterTuningResourceConfig
    # (which can also carry InstanceConfigs), byoc the ResourceConfig of a training job; same values.
    "TrainingJobDefinition.ResourceConfig", "TrainingJobDefinition.HyperParameterTuningResourceConfig",
    # byoc names each channel's InputMode (File); the SDK leaves it to AlgorithmSpecification's
    # TrainingInputMode, File too.
    "TrainingJobDefinition.InputDataConfig",
    # str(True) == "True" where byoc writes "true": the trainer's parse_bool reads both.
    "TrainingJobDefinition.StaticHyperParameters.pretrained", "TrainingJobDefinition.StaticHyperParameters.debugger",
}


def test_hyperparameter_tuner_request_equals_byoc_tune_field_by_field(moto, tmp_path, capsys):
    from sagemaker.estimator import Estimator
    from sagemaker.tuner import CategoricalParameter, HyperparameterTuner

    ours = _dry_run(capsys, ["tune", "--data", DATA, "--spec", "tuning", *_flags(tmp_path, moto)])
    ours = ours["sagemaker.CreateHyperParameterTuningJob"]
    definition = ours["TrainingJobDefinition"]

    sent: dict[str, dict] = {}
    estimator = Estimator(image_uri=TRAIN_IMAGE, role=ROLE, instance_count=1, instance_type="ml.g4dn.xlarge",
                          volume_size=30, max_run=definition["StoppingCondition"]["MaxRuntimeInSeconds"],
                          output_path=definition["OutputDataConfig"]["S3OutputPath"],
                          hyperparameters={"arch": "resnet50", "pretrained": True, "freeze": "layer4",
                                           "image-size": 224, "debugger": False},
                          sagemaker_session=_sdk_session(moto, sent))
    tuner = HyperparameterTuner(
        estimator, "validation:accuracy",
        {"lr": CategoricalParameter([0.001, 0.01]), "batch-size": CategoricalParameter([32, 64]),
         "epochs": CategoricalParameter([2, 4])},
        # The SDK's tuner does not read the estimator's metric_definitions: pass them here.
        metric_definitions=METRIC_DEFINITIONS, strategy="Grid", objective_type="Maximize", max_jobs=8,
        max_parallel_jobs=2, early_stopping_type="Off", random_seed=42)
    tuner.fit({c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in definition["InputDataConfig"]},
              job_name=ours["HyperParameterTuningJobName"], wait=False)
    sdk = sent["CreateHyperParameterTuningJob"]

    assert set(_diff(ours, sdk)) == BENIGN
    ours_def, sdk_def = ours["TrainingJobDefinition"], sdk["TrainingJobDefinition"]
    assert ours_def["EnableManagedSpotTraining"] is False and "EnableManagedSpotTraining" not in sdk_def
    assert ours_def["ResourceConfig"] == sdk_def["HyperParameterTuningResourceConfig"]
    assert [{k: v for k, v in c.items() if k != "InputMode"} for c in ours_def["InputDataConfig"]] == \
        sdk_def["InputDataConfig"]
    assert {c["InputMode"] for c in ours_def["InputDataConfig"]} == {sdk_def["AlgorithmSpecification"]["TrainingInputMode"]}
    for name in ("pretrained", "debugger"):
        assert parse_bool(ours_def["StaticHyperParameters"][name]) == parse_bool(sdk_def["StaticHyperParameters"][name])
    stored = boto3.client("sagemaker", region_name=REGION, endpoint_url=moto).describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=ours["HyperParameterTuningJobName"])
    assert stored["TrainingJobDefinition"]["StaticHyperParameters"]["arch"] == "resnet50"


def test_multi_data_model_requests_match_byoc_serve(moto, tmp_path, capsys):
    """MultiDataModel.deploy sends the multi-model CreateModel byoc sends (same image, Mode, prefix), and
    its predictor's requests carry TargetModel as byoc invoke does."""
    from sagemaker.multidatamodel import MultiDataModel
    from sagemaker.predictor import Predictor

    ours = _dry_run(capsys, ["serve", *_flags(tmp_path, moto)])
    container = ours["sagemaker.CreateModel"]["PrimaryContainer"]

    sent: dict[str, dict] = {}
    session = _sdk_session(moto, sent)
    mdm = MultiDataModel(name="sdk-mme", model_data_prefix=container["ModelDataUrl"], image_uri=SERVE_IMAGE,
                         role=ROLE, sagemaker_session=session, predictor_cls=Predictor)
    predictor = mdm.deploy(1, "ml.m5.large", endpoint_name="sdk-mme", wait=False)
    sdk = sent["CreateModel"]["PrimaryContainer"]
    assert {k: sdk[k] for k in ("Image", "Mode", "ModelDataUrl")} == \
        {k: container[k] for k in ("Image", "Mode", "ModelDataUrl")}
    variant = sent["CreateEndpointConfig"]["ProductionVariants"][0]
    ours_variant = ours["sagemaker.CreateEndpointConfig"]["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == \
        (ours_variant["InstanceType"], ours_variant["InitialInstanceCount"])

    archive = tmp_path / "m.tar.gz"
    archive.write_bytes(b"artifact")
    mdm.add_model(str(archive), "fashion.tar.gz")
    assert list(mdm.list_models()) == ["fashion.tar.gz"]
    with pytest.raises(NotSent):
        predictor.predict(b"\xff\xd8 image bytes", target_model="fashion.tar.gz")
    invoke = sent["InvokeEndpoint"]       # the default Predictor: IdentitySerializer, image bytes as they are
    assert (invoke["EndpointName"], invoke["TargetModel"], invoke["ContentType"]) == \
        ("sdk-mme", "fashion.tar.gz", "application/octet-stream")

