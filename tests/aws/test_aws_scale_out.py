"""Scaling out on SageMaker: training and tuning jobs on several hosts with the SDK's torch_distributed
launcher, and Application Auto Scaling on the multi-model endpoint's variant; against the moto
server, through `byoc` itself, and in --dry-run."""

from __future__ import annotations

import json
import socket

import boto3
import pytest

from byoc.aws import autoscaling, endpoints
from byoc.aws import training_jobs as tj
from byoc.aws import tuning_jobs as hpo
from byoc.aws.errors import LaunchError
from byoc.backends.base import BackendError
from byoc.backends.local import LocalBackend
from byoc.backends.sagemaker import SageMakerBackend
from byoc.cli import main
from byoc.settings import load_settings
from byoc.tuning.spec import load_spec
from tests.helpers.moto_server import BUCKET, REGION, ROLE, SERVE_IMAGE, TRAIN_IMAGE

RESOURCES = tj.TrainingResources(image_uri=TRAIN_IMAGE, role_arn=ROLE,
                                 channels={"training": "s3://bkt/data/train/", "validation": "s3://bkt/data/valid/"},
                                 output_s3_uri="s3://bkt/out", instance_type="ml.g5.12xlarge", instance_count=2,
                                 distribution="torch_distributed")
# What the SageMaker Python SDK's PyTorch estimator adds for distribution={"torch_distributed":
# {"enabled": True}} on ml.g5.12xlarge (src/sagemaker/pytorch/estimator.py, JSON-encoded values).
SDK_DISTRIBUTION = {"sagemaker_torch_distributed_enabled": "true", "sagemaker_instance_type": '"ml.g5.12xlarge"'}


def _flags(tmp_path, endpoint_url, *extra):
    return ["--backend", "sagemaker", "--region", REGION, "--role-arn", ROLE, "--bucket", BUCKET,
            "--train-image", TRAIN_IMAGE, "--serve-image", SERVE_IMAGE, "--run-dir", str(tmp_path / "run"),
            "--aws-endpoint-url", endpoint_url, *extra]


def _closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _dry_run_requests(out: str) -> dict[str, dict]:
    lines = [line.split(" ", 2) for line in out.splitlines() if line.startswith("DRY-RUN ")]
    return {op: json.loads(params) for _, op, params in lines}


def test_multi_host_training_and_tuning_jobs_round_trip_through_moto(aws_env):
    sm = boto3.client("sagemaker", region_name=REGION, endpoint_url=aws_env)
    request = tj.build_training_job_request("byoc-two-hosts", {"lr": 0.01}, RESOURCES)
    tj.send_training_job(sm, request)
    stored = sm.describe_training_job(TrainingJobName="byoc-two-hosts")
    assert stored["ResourceConfig"]["InstanceCount"] == 2
    assert stored["HyperParameters"] == {"lr": "0.01", "debugger": "false", **SDK_DISTRIBUTION}

    spec = load_spec("tuning").with_overrides(instance_count=3, distribution="torch_distributed")
    single = tj.TrainingResources(**{**RESOURCES.__dict__, "instance_count": 1, "distribution": None})
    hpo.send_tuning_job(sm, hpo.build_tuning_job_request(spec, "byoc-hpo-hosts", single))
    definition = sm.describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="byoc-hpo-hosts")["TrainingJobDefinition"]
    assert definition["ResourceConfig"]["InstanceCount"] == 3          # the spec's, not the resources'
    assert SDK_DISTRIBUTION.items() <= definition["StaticHyperParameters"].items()


def test_one_host_without_distribution_sends_no_launcher_hyperparameters():
    request = tj.build_training_job_request("byoc-one", {"lr": 0.01}, tj.TrainingResources(
        image_uri=TRAIN_IMAGE, role_arn=ROLE, channels=RESOURCES.channels, output_s3_uri="s3://bkt/out"))
    assert request["ResourceConfig"]["InstanceCount"] == 1
    assert not [k for k in request["HyperParameters"] if k.startswith("sagemaker_")]
    for bad in ({"instance_count": 0}, {"distribution": "mpi"}):
        with pytest.raises(LaunchError):
            tj.TrainingResources(**{**RESOURCES.__dict__, **bad}).validate()


def test_train_and_tune_dry_run_carry_the_instance_count(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    flags = _flags(tmp_path, _closed_url(), "--dry-run")
    data = f"s3://{BUCKET}/byoc/run/data/"
    assert main(["train", "--data", data, "--instance-count", "2", "--distribution", "torch_distributed",
                 "--no-debugger", *flags]) == 0
    job = _dry_run_requests(capsys.readouterr().out)["sagemaker.CreateTrainingJob"]
    assert job["ResourceConfig"]["InstanceCount"] == 2
    assert job["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"

    assert main(["tune", "--data", data, "--spec", "local-demo", "--instance-count", "4", *flags]) == 0
    tuning = _dry_run_requests(capsys.readouterr().out)["sagemaker.CreateHyperParameterTuningJob"]
    assert tuning["TrainingJobDefinition"]["ResourceConfig"]["InstanceCount"] == 4
    assert "sagemaker_torch_distributed_enabled" not in tuning["TrainingJobDefinition"]["StaticHyperParameters"]
    assert main(["train", "--data", data, "--instance-count", "0", *flags]) == 1
    assert "at least one host" in capsys.readouterr().err


def test_deploy_attaches_autoscaling_to_the_endpoint_variant(tmp_path, aws_env, raw_s3, capsys):
    raw_s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    flags = _flags(tmp_path, aws_env)
    archive = tmp_path / "m.tar.gz"
    archive.write_bytes(b"artifact")
    assert main(["serve", *flags]) == 0
    assert main(["deploy", str(archive), "--name", "fashion", "--min-instances", "2", "--max-instances", "5",
                 "--target-invocations", "600", *flags]) == 0
    assert "endpoint/byoc-run/variant/AllTraffic: 2-5 instances" in capsys.readouterr().out

    aas = boto3.client("application-autoscaling", region_name=REGION, endpoint_url=aws_env)
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["ResourceId"], t["ScalableDimension"], t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [
        ("endpoint/byoc-run/variant/AllTraffic", "sagemaker:variant:DesiredInstanceCount", 2, 5)]
    sm = boto3.client("sagemaker", region_name=REGION, endpoint_url=aws_env)
    variant = sm.describe_endpoint(EndpointName="byoc-run")["ProductionVariants"][0]["VariantName"]
    assert variant == endpoints.VARIANT_NAME          # the variant registered is the endpoint's own
    policies = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert len(policies) == 1
    assert policies[0]["PolicyType"] == "TargetTrackingScaling"
    assert policies[0]["TargetTrackingScalingPolicyConfiguration"] == {
        "TargetValue": 600.0,
        "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}}

    # Deploying again with other numbers updates the target and the policy in place.
    assert main(["deploy", str(archive), "--name", "fashion", "--max-instances", "3", "--target-invocations",
                 "100", *flags]) == 0
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [(1, 3)]
    policies = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert [p["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] for p in policies] == [100.0]


def test_autoscaling_needs_an_endpoint(settings_for, tmp_path, raw_s3):
    raw_s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    backend = SageMakerBackend(settings_for())
    with pytest.raises(Exception, match="(?i)could not find endpoint|does not exist"):
        autoscaling.attach_autoscaling(backend.ctx, "byoc-missing", autoscaling.EndpointScaling(1, 2, 10))
    aas = backend.ctx.client("application-autoscaling")
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []


def test_deploy_dry_run_prints_the_autoscaling_requests(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    archive = tmp_path / "m.tar.gz"
    archive.write_bytes(b"artifact")
    assert main(["deploy", str(archive), "--name", "m", "--max-instances", "3", "--target-invocations", "70",
                 *_flags(tmp_path, _closed_url(), "--dry-run")]) == 0
    sent = _dry_run_requests(capsys.readouterr().out)
    assert sent["application-autoscaling.RegisterScalableTarget"] == {
        "ServiceNamespace": "sagemaker", "ResourceId": "endpoint/byoc-run/variant/AllTraffic",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount", "MinCapacity": 1, "MaxCapacity": 3}
    policy = sent["application-autoscaling.PutScalingPolicy"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["ResourceId"] == "endpoint/byoc-run/variant/AllTraffic"
    assert policy["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}


@pytest.mark.parametrize(("flags", "message"), [
    (["--min-instances", "2"], "needs --max-instances and --target-invocations"),
    (["--max-instances", "2"], "needs --target-invocations"),
    (["--max-instances", "2", "--min-instances", "3", "--target-invocations", "5"], "must be >= --min-instances"),
    (["--max-instances", "2", "--min-instances", "0", "--target-invocations", "5"], "at least 1"),
    (["--max-instances", "2", "--target-invocations", "0"], "positive number"),
])
def test_autoscaling_flags_are_checked_before_anything_is_sent(tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.chdir(tmp_path)
    archive = tmp_path / "m.tar.gz"
    archive.write_bytes(b"artifact")
    assert main(["deploy", str(archive), "--name", "m", *flags, *_flags(tmp_path, _closed_url(), "--dry-run")]) == 1
    captured = capsys.readouterr()
    assert message in captured.err and "DRY-RUN" not in captured.out


def test_what_one_backend_cannot_honour_is_refused(tmp_path):
    local = LocalBackend(load_settings(overrides={"run_dir": str(tmp_path)}, environ={}))
    with pytest.raises(BackendError, match="a job needs at least one host"):
        local.train(str(tmp_path), {}, instance_count=0)
    with pytest.raises(BackendError, match="a local job offers torch_distributed only"):
        local.train(str(tmp_path), {}, distribution="smdistributed")
    with pytest.raises(BackendError, match="--max-instances does not apply to the local backend"):
        local.deploy(str(tmp_path / "m.tar.gz"), "m", scaling=autoscaling.EndpointScaling(1, 2, 10))
    sagemaker = SageMakerBackend(load_settings(overrides={"run_dir": str(tmp_path), "region": REGION},
                                               environ={}))
    with pytest.raises(BackendError, match="--storage does not apply to the sagemaker backend"):
        sagemaker.tune("s3://b/d/", "local-demo", storage="postgresql+psycopg2://u@h/db")
