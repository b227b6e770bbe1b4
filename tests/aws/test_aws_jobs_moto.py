"""Tuning and training jobs through the SageMaker backend against moto (the request builders are
the tune helper's; this checks the backend's plumbing: names, waiting, outputs, manifest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from byoc.aws import s3_data
from byoc.aws.errors import LaunchError
from byoc.aws.manifest import Manifest
from byoc.backends.sagemaker import SageMakerBackend
from byoc.tuning.best import read_best_hyperparameters
from byoc.tuning.specs import DEMO_SPEC
from tests.helpers.moto_server import BUCKET, REGION


def _upload_splits(ctx, data: str, splits=("train", "valid", "test")) -> None:
    bucket, prefix = s3_data.parse_s3_uri(data)
    for split in splits:
        ctx.s3.put_object(Bucket=bucket, Key=f"{prefix}{split}/001.a/0.jpg", Body=b"\xff\xd8jpeg")


def test_tune_then_train_then_report(ctx, settings_for, tmp_path):
    settings = settings_for()
    backend = SageMakerBackend(settings)
    data = f"s3://{BUCKET}/byoc/demo/data/"
    _upload_splits(ctx, data)
    tuned = backend.tune(data, str(DEMO_SPEC), max_jobs=4, max_parallel_jobs=2,
                         static={"arch": "efficientnet_lite0", "freeze": "layer4"})   # not head-only: images
    desc = ctx.sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuned.tuning_job)
    definition = desc["TrainingJobDefinition"]
    assert definition["StaticHyperParameters"]["arch"] == "efficientnet_lite0"
    assert _channels(definition) == {"training": data + "train/", "validation": data + "valid/",
                                     "test": data + "test/"}
    # moto reports a canned best job; its tuned values land on top of the static ones.
    best = read_best_hyperparameters(Path(settings.run_dir) / "tune")   # what `train --from-tuning` reads
    assert best["arch"] == "efficientnet_lite0" and tuned.best_hyperparameters == best

    trained = backend.train(data, {"arch": "resnet18", "epochs": "2"})
    assert trained.status == "Completed" and trained.model_data
    job = ctx.sagemaker.describe_training_job(TrainingJobName=trained.job)
    assert job["HyperParameters"] == {"arch": "resnet18", "epochs": "2", "debugger": "true"}
    assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/byoc/demo/jobs"

    report = backend.report(trained.job)
    assert report.job == trained.job and isinstance(report.rules, dict)

    kinds = {(r["kind"], r["name"]) for r in Manifest.load_or_new(settings.run_dir, REGION).resources}
    assert ("tuning_job", tuned.tuning_job) in kinds and ("training_job", trained.job) in kinds


def _channels(description: dict) -> dict[str, str]:
    return {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in description["InputDataConfig"]}


def test_empty_test_split_is_not_sent_and_missing_validation_stops_the_launch(ctx, settings_for):
    """SageMaker fails a job whose channel prefix holds no object ("No S3 objects found")."""
    backend = SageMakerBackend(settings_for())
    data = f"s3://{BUCKET}/byoc/demo/data/"
    _upload_splits(ctx, data, ("train", "valid"))
    tuned = backend.tune(data, str(DEMO_SPEC), max_jobs=2, max_parallel_jobs=1, static={"freeze": "layer4"})
    desc = ctx.sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuned.tuning_job)
    assert _channels(desc["TrainingJobDefinition"]) == {"training": data + "train/", "validation": data + "valid/"}
    trained = backend.train(data, {"epochs": "1"})
    job = ctx.sagemaker.describe_training_job(TrainingJobName=trained.job)
    assert set(_channels(job)) == {"training", "validation"}

    other = f"s3://{BUCKET}/byoc/demo/only-train/"
    _upload_splits(ctx, other, ("train",))
    with pytest.raises(LaunchError, match="no S3 objects under the channel prefix.*validation"):
        backend.train(other, {"epochs": "1"})
    assert len(ctx.sagemaker.list_training_jobs()["TrainingJobSummaries"]) == 1   # nothing else started


def test_final_job_forces_the_hook_on_and_says_so(ctx, settings_for, capsys):
    data = f"s3://{BUCKET}/byoc/demo/data/"
    _upload_splits(ctx, data)
    trained = SageMakerBackend(settings_for()).train(data, {"debugger": "false", "lr": "0.01"})
    job = ctx.sagemaker.describe_training_job(TrainingJobName=trained.job)
    assert job["HyperParameters"]["debugger"] == "true" and job["DebugRuleConfigurations"]
    assert "debugger=false overridden, hook on" in capsys.readouterr().out


def test_region_without_debugger_warns_and_trains(settings_for, capsys):
    """The SDK turns Debugger off in such regions and trains (estimator.py, fw_utils.py)."""
    from byoc.aws.session import AwsContext

    settings = settings_for(region="ap-southeast-3")
    c = AwsContext.from_settings(settings)
    c.s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "ap-southeast-3"})
    data = f"s3://{BUCKET}/byoc/demo/data/"
    _upload_splits(c, data)
    trained = SageMakerBackend(settings).train(data, {"lr": "0.01"})
    job = c.sagemaker.describe_training_job(TrainingJobName=trained.job)
    assert trained.status == "Completed"
    assert "DebugHookConfig" not in job and not job.get("DebugRuleConfigurations")
    assert job["HyperParameters"]["debugger"] == "false"
    assert "not published in ap-southeast-3" in capsys.readouterr().out


def test_cli_train_no_debugger(ctx, settings_for, tmp_path):
    from byoc.cli import main

    s = settings_for()
    data = f"s3://{BUCKET}/byoc/demo/data/"
    _upload_splits(ctx, data)
    flags = ["--backend", "sagemaker", "--region", s.region, "--role-arn", s.role_arn, "--bucket", BUCKET,
             "--train-image", s.train_image, "--run-dir", s.run_dir, "--aws-endpoint-url", s.endpoint_url]
    assert main(["train", "--data", data, "--hp", "lr=0.01", "--no-debugger", *flags]) == 0
    (summary,) = ctx.sagemaker.list_training_jobs()["TrainingJobSummaries"]
    job = ctx.sagemaker.describe_training_job(TrainingJobName=summary["TrainingJobName"])
    assert "DebugHookConfig" not in job and not job.get("DebugRuleConfigurations")
    assert job["HyperParameters"] == {"lr": "0.01", "debugger": "false"}
