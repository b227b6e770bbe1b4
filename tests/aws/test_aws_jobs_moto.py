"""Tuning and training jobs through the SageMaker backend against moto (the request builders are
the tune helper's; this checks the backend's plumbing: names, waiting, outputs, manifest)."""

from __future__ import annotations

from pathlib import Path

from byoc.aws.manifest import Manifest
from byoc.backends.sagemaker import SageMakerBackend
from byoc.tuning.best import read_best_hyperparameters
from byoc.tuning.specs import DEMO_SPEC
from tests.helpers.moto_server import BUCKET, REGION


def test_tune_then_train_then_report(ctx, settings_for, tmp_path):
    settings = settings_for()
    backend = SageMakerBackend(settings)
    data = f"s3://{BUCKET}/byoc/demo/data/"
    tuned = backend.tune(data, str(DEMO_SPEC), max_jobs=4, max_parallel_jobs=2,
                                   static={"arch": "efficientnet_lite0"})
    desc = ctx.sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuned["tuning_job"])
    definition = desc["TrainingJobDefinition"]
    assert definition["StaticHyperParameters"]["arch"] == "efficientnet_lite0"
    assert {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in definition["InputDataConfig"]} == {
        "training": data + "train/", "validation": data + "valid/", "test": data + "test/"}
    # moto reports a canned best job; its tuned values land on top of the static ones.
    best = read_best_hyperparameters(Path(settings.run_dir) / "tune")   # what `train --from-tuning` reads
    assert best["arch"] == "efficientnet_lite0" and tuned["best_hyperparameters"] == best

    trained = backend.train(data, {"arch": "resnet18", "epochs": "2"})
    assert trained["status"] == "Completed" and trained["model_data"]
    job = ctx.sagemaker.describe_training_job(TrainingJobName=trained["training_job"])
    assert job["HyperParameters"] == {"arch": "resnet18", "epochs": "2"}
    assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/byoc/demo/jobs"

    report = backend.report(trained["job"])
    assert report["training_job"] == trained["training_job"] and isinstance(report["rules"], dict)

    kinds = {(r["kind"], r["name"]) for r in Manifest.load_or_new(settings.run_dir, REGION).resources}
    assert ("tuning_job", tuned["tuning_job"]) in kinds and ("training_job", trained["training_job"]) in kinds
