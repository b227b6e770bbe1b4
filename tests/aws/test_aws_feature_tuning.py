"""`byoc tune --backend sagemaker` with a head-only spec, against moto: the extraction job, the tuning job
on its features channel, the final job on the same channel; reuse by key; the three requests in a dry run."""

from __future__ import annotations

import json

from byoc.aws import s3_data
from byoc.aws.manifest import Manifest
from byoc.backends.sagemaker import SageMakerBackend
from byoc.tuning.specs import DEMO_SPEC
from container_train.hyperparameters import to_sagemaker_strings
from tests.helpers.moto_server import BUCKET, REGION

DATA = f"s3://{BUCKET}/byoc/demo/data/"


def _upload(ctx, name="0.jpg") -> None:
    bucket, prefix = s3_data.parse_s3_uri(DATA)
    for split in ("train", "valid", "test"):
        ctx.s3.put_object(Bucket=bucket, Key=f"{prefix}{split}/001.a/{name}", Body=b"\xff\xd8jpeg")


def _channels(description: dict) -> dict[str, str]:
    return {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in description["InputDataConfig"]}


def _jobs(ctx) -> list[dict]:
    names = [s["TrainingJobName"] for s in ctx.sagemaker.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]]
    return [ctx.sagemaker.describe_training_job(TrainingJobName=n) for n in names]


def test_head_only_tuning_extracts_once_then_every_trial_and_the_final_job_read_the_features(ctx, settings_for):
    settings = settings_for()
    _upload(ctx)
    tuned = SageMakerBackend(settings).tune(DATA, str(DEMO_SPEC), max_jobs=4, max_parallel_jobs=2)

    jobs = {j["TrainingJobName"]: j for j in _jobs(ctx)}
    extraction, final = jobs[tuned.extraction_job], jobs[tuned.final.job]
    assert extraction["HyperParameters"]["task"] == "extract-features"
    assert extraction["HyperParameters"]["arch"] == "efficientnet_lite0"      # the spec's feature settings
    assert _channels(extraction) == {"training": DATA + "train/", "validation": DATA + "valid/",
                                     "test": DATA + "test/"}
    assert "DebugHookConfig" not in extraction                               # it trains nothing
    features = extraction["ModelArtifacts"]["S3ModelArtifacts"]
    assert tuned.features == features and features.endswith(f"/{tuned.extraction_job}/output/model.tar.gz")

    definition = ctx.sagemaker.describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=tuned.tuning_job)["TrainingJobDefinition"]
    assert _channels(definition) == {"features": features}                    # no trial reads an image
    assert definition["StaticHyperParameters"]["freeze"] == "head"

    assert _channels(final) == {"features": features}
    assert final["HyperParameters"] == {**to_sagemaker_strings(tuned.best_hyperparameters), "debugger": "true"}
    assert final["DebugRuleConfigurations"]                                    # the final job has Debugger
    entry = next(r for r in Manifest.load_or_new(settings.run_dir, REGION).resources
                 if r["name"] == tuned.extraction_job)
    assert entry["role"] == "feature-extraction" and len(entry["features_key"]) == 64


def test_a_second_tuning_on_the_same_data_reuses_the_extraction_and_new_data_does_not(ctx, settings_for, capsys):
    settings = settings_for()
    _upload(ctx)
    first = SageMakerBackend(settings).tune(DATA, str(DEMO_SPEC), max_jobs=2, max_parallel_jobs=1, final=False)
    again = SageMakerBackend(settings).tune(DATA, str(DEMO_SPEC), max_jobs=2, max_parallel_jobs=1, final=False)
    assert again.features_reused and again.extraction_job == first.extraction_job
    assert f"reusing extraction job {first.extraction_job}" in capsys.readouterr().out
    assert again.final is None
    assert [j["HyperParameters"].get("task") for j in _jobs(ctx)] == ["extract-features"]   # one job in all

    _upload(ctx, name="1.jpg")                                                 # one more image: new features
    changed = SageMakerBackend(settings).tune(DATA, str(DEMO_SPEC), max_jobs=2, max_parallel_jobs=1, final=False)
    assert not changed.features_reused and changed.extraction_job != first.extraction_job


def test_a_spec_that_trains_backbone_layers_tunes_on_the_images_and_says_why(ctx, settings_for, capsys):
    _upload(ctx)
    tuned = SageMakerBackend(settings_for()).tune(DATA, str(DEMO_SPEC), max_jobs=2, max_parallel_jobs=1,
                                                  static={"freeze": "layer4"})
    assert "tuning on the images: the spec trains backbone layers (freeze=layer4)" in capsys.readouterr().out
    assert tuned.extraction_job is None and not _jobs(ctx)


def test_dry_run_shows_the_extraction_the_tuning_job_and_the_final_job(tmp_path, monkeypatch, capsys):
    from byoc.cli import main
    from tests.helpers.moto_server import ROLE, TRAIN_IMAGE

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    rc = main(["tune", "--data", DATA, "--spec", "local-demo", "--backend", "sagemaker", "--dry-run",
               "--region", REGION, "--role-arn", ROLE, "--bucket", BUCKET, "--train-image", TRAIN_IMAGE,
               "--run-dir", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    requests = [(line.split(" ", 2)[1], json.loads(line.split(" ", 2)[2])) for line in out.splitlines()
                if line.startswith("DRY-RUN sagemaker.Create")]
    assert [op for op, _ in requests] == ["sagemaker.CreateTrainingJob", "sagemaker.CreateHyperParameterTuningJob",
                                          "sagemaker.CreateTrainingJob"]
    (_, extraction), (_, tuning), (_, final) = requests
    features = f"s3://{BUCKET}/byoc/run/jobs/{extraction['TrainingJobName']}/output/model.tar.gz"
    assert extraction["HyperParameters"]["task"] == "extract-features"
    assert _channels(tuning["TrainingJobDefinition"]) == {"features": features}
    assert _channels(final) == {"features": features}
    assert final["HyperParameters"]["lr"] == f"<best of {tuning['HyperParameterTuningJobName']}>"
    assert not (tmp_path / "run" / "aws-resources.json").exists()
