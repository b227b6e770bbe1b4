"""Issue 24 items 1, 3, 4, 5: each job kind's time limit (and a job stopped at it keeps its model), managed
spot with per-job checkpoints, the features flow's final job on the trials' hosts, Graviton refused."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest
from botocore.stub import Stubber

from byoc.aws import batch_transform, endpoints
from byoc.aws import training_jobs as tj
from byoc.aws.errors import LaunchError
from byoc.aws.instance_types import check_amd64_instance_type, is_graviton
from byoc.aws.session import AwsContext
from byoc.backends.sagemaker import SageMakerBackend
from byoc.cli import main
from byoc.tuning.specs import DEMO_SPEC
from tests.aws.test_aws_cli import _flags
from tests.aws.test_aws_feature_tuning import DATA
from tests.helpers.moto_server import BUCKET

MODEL = f"s3://{BUCKET}/byoc/demo/jobs/j/output/model.tar.gz"


def _described(status: str, secondary: str, artifacts: str | None = MODEL, **extra) -> dict:
    """A DescribeTrainingJob answer as SageMaker gives it (the fields botocore's model requires)."""
    answer = {"TrainingJobName": "j", "TrainingJobArn": "arn:aws:sagemaker:eu-west-1:123456789012:training-job/j",
              "TrainingJobStatus": status, "SecondaryStatus": secondary,
              "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "img"},
              "ResourceConfig": {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
              "StoppingCondition": {"MaxRuntimeInSeconds": 3600}, "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
              "ModelArtifacts": {"S3ModelArtifacts": artifacts or ""}, **extra}
    if artifacts is None:
        del answer["ModelArtifacts"]
    return answer


# ---- item 1: time limits ----------------------------------------------------------------------

def test_every_job_kind_defaults_to_the_sdks_24_hours(settings_for):
    s = settings_for()
    for kind in tj.JOB_KINDS:
        assert tj.limits_from_settings(s, kind)["max_runtime_s"] == 86400   # sagemaker-python-sdk max_run
    assert tj.TrainingResources("i", "r", {}, "s3://b/o").max_runtime_s == 86400


def test_a_job_stopped_at_its_time_limit_is_used_with_one_line_saying_so(settings_for, aws_env, capsys):
    backend = SageMakerBackend(settings_for())
    with Stubber(backend.ctx.sagemaker) as stub:
        stub.add_response("describe_training_job", _described("InProgress", "Training"), {"TrainingJobName": "j"})
        stub.add_response("describe_training_job", _described("Stopped", "MaxRuntimeExceeded"),
                          {"TrainingJobName": "j"})
        finished = tj.finished_job(tj.wait_for_training_job(backend.ctx.sagemaker, "j", poll_s=0,
                                                            sleep=lambda _: None))
        stub.add_response("describe_training_job", _described("Stopped", "MaxRuntimeExceeded"),
                          {"TrainingJobName": "j"})
        from_backend = backend._wait_for_training("j")
        stub.assert_no_pending_responses()
    assert finished == from_backend
    assert (finished.status, finished.model_data) == ("Stopped", MODEL)
    assert "time limit (3600 s, MaxRuntimeExceeded)" in finished.note
    lines = [line for line in capsys.readouterr().out.splitlines() if "MaxRuntimeExceeded" in line]
    assert len(lines) == 1


@pytest.mark.parametrize("answer, why", [
    (_described("Stopped", "Stopped"), "ended Stopped: SecondaryStatus Stopped"),           # StopTrainingJob
    (_described("Stopped", "MaxWaitTimeExceeded"), "MaxWaitTimeExceeded"),                  # spot never ran
    (_described("Failed", "Failed", FailureReason="AlgorithmError: boom"), "AlgorithmError: boom"),
    (_described("Stopped", "MaxRuntimeExceeded", artifacts=None), "no model artifact was uploaded"),
])
def test_other_ends_are_failures_with_the_reason(answer, why):
    with pytest.raises(LaunchError, match=why):
        tj.finished_job(answer)


def test_an_extraction_stopped_at_its_limit_is_not_used():
    """Its features are whole only when it completed: the reason names the limit to raise."""
    with pytest.raises(LaunchError, match="higher time limit"):
        tj.finished_job(_described("Stopped", "MaxRuntimeExceeded"), time_limit_usable=False)
    assert tj.finished_job(_described("Completed", "Completed"), time_limit_usable=False).note is None


def test_runtime_bounds_are_sagemakers():
    base = tj.TrainingResources("i", "arn:aws:iam::123456789012:role/r", {"training": "s3://b/t/"}, "s3://b/o")
    for bad in (0, 28 * 86400 + 1):
        with pytest.raises(LaunchError, match="max_runtime_s must be 1..2419200"):
            tj.TrainingResources(**{**base.__dict__, "max_runtime_s": bad}).validate()


def _dry_requests(out: str, op: str) -> list[dict]:
    return [json.loads(line.split(" ", 2)[2]) for line in out.splitlines() if line.startswith(f"DRY-RUN {op} ")]


def test_train_flags_set_the_limit_spot_and_checkpoints(tmp_path, aws_env, capsys):
    rc = main(["train", "--data", DATA, "--dry-run", "--max-runtime", "7200", "--spot", "--max-wait", "9000",
               *_flags(tmp_path, aws_env)])
    out = capsys.readouterr().out
    assert rc == 0, out[-2000:]
    (job,) = _dry_requests(out, "sagemaker.CreateTrainingJob")
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 9000}
    assert job["EnableManagedSpotTraining"] is True
    # Spot without a checkpoint base: the run's jobs/checkpoints/, one prefix per job name (README).
    assert job["CheckpointConfig"] == {
        "S3Uri": f"s3://{BUCKET}/byoc/run/jobs/checkpoints/{job['TrainingJobName']}/",
        "LocalPath": "/opt/ml/checkpoints"}


def test_on_demand_jobs_have_no_spot_fields_unless_a_checkpoint_base_is_given(tmp_path, aws_env, capsys):
    assert main(["train", "--data", DATA, "--dry-run", *_flags(tmp_path, aws_env)]) == 0
    assert main(["train", "--data", DATA, "--dry-run", "--checkpoint-s3-uri", f"s3://{BUCKET}/ckpt",
                 *_flags(tmp_path, aws_env)]) == 0
    plain, with_base = _dry_requests(capsys.readouterr().out, "sagemaker.CreateTrainingJob")
    assert plain["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}
    assert plain["EnableManagedSpotTraining"] is False and "CheckpointConfig" not in plain
    assert with_base["CheckpointConfig"]["S3Uri"] == f"s3://{BUCKET}/ckpt/{with_base['TrainingJobName']}/"


def test_spot_wait_shorter_than_the_runtime_is_refused_before_any_request(tmp_path, aws_env, capsys):
    rc = main(["train", "--data", DATA, "--dry-run", "--max-runtime", "7200", "--spot", "--max-wait", "600",
               *_flags(tmp_path, aws_env)])
    captured = capsys.readouterr()
    assert rc == 1 and "max_wait_s (600) must be >= max_runtime_s (7200)" in captured.err
    assert "DRY-RUN sagemaker.CreateTrainingJob" not in captured.out


# ---- items 1, 3, 4 on a features-channel tuning run ------------------------------

def test_features_flow_limits_per_kind_spot_and_the_final_job_on_the_trials_hosts(settings_for):
    """The three requests of a head-only tuning run (a dry run: the final job's request is built as after
    the tuning job, with placeholders for what it will choose)."""
    out = io.StringIO()
    backend = SageMakerBackend(settings_for(max_runtime_extraction_s=1800, max_runtime_trial_s=3600,
                                            max_runtime_final_s=7200, spot=True, dry_run=True))
    backend.ctx.dry_run.stream = out
    backend.tune(DATA, str(DEMO_SPEC), max_jobs=2, max_parallel_jobs=1, instance_count=2,
                 distribution="torch_distributed")
    extraction, final = _dry_requests(out.getvalue(), "sagemaker.CreateTrainingJob")
    (tuning,) = _dry_requests(out.getvalue(), "sagemaker.CreateHyperParameterTuningJob")
    definition = tuning["TrainingJobDefinition"]

    assert extraction["HyperParameters"]["task"] == "extract-features"
    assert extraction["StoppingCondition"] == {"MaxRuntimeInSeconds": 1800, "MaxWaitTimeInSeconds": 3600}
    assert definition["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert final["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 14400}
    assert all(j["EnableManagedSpotTraining"] for j in (extraction, final, definition))
    # Item 4: the final job runs as the trials did (2 hosts, torchrun), so the tuned lr meets the same global batch.
    assert definition["ResourceConfig"]["InstanceCount"] == final["ResourceConfig"]["InstanceCount"] == 2
    assert definition["StaticHyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"
    assert final["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"
    assert [c["ChannelName"] for c in final["InputDataConfig"]] == ["features"]
    assert extraction["ResourceConfig"]["InstanceCount"] == 1              # features do not depend on hosts
    # Checkpoints: each job its own prefix; trials none (tuning_jobs: one prefix would be every trial's).
    assert final["CheckpointConfig"]["S3Uri"].endswith(f"/jobs/checkpoints/{final['TrainingJobName']}/")
    assert "CheckpointConfig" not in definition


# ---- item 5: Graviton ---------------------------------------------------------------------------

@pytest.mark.parametrize("instance_type", ["ml.c6g.large", "ml.c6gd.2xlarge", "ml.c6gn.xlarge", "ml.c7g.4xlarge",
                                           "ml.m6g.large", "ml.m6gd.large", "ml.m7g.xlarge", "ml.r6g.large",
                                           "ml.r7g.large", "ml.r8g.large", "ml.g5g.xlarge", "ml.t4g.medium"])
def test_graviton_types_are_refused(instance_type):
    assert is_graviton(instance_type)
    with pytest.raises(LaunchError, match="Graviton .*linux/amd64"):
        check_amd64_instance_type(instance_type, "train_instance_type")


@pytest.mark.parametrize("instance_type", ["ml.m5.large", "ml.c7i.xlarge", "ml.g4dn.xlarge", "ml.g5.2xlarge",
                                           "ml.g6e.xlarge", "ml.p4d.24xlarge", "ml.p4de.24xlarge", "ml.m6id.large",
                                           "ml.gr6.4xlarge", "ml.inf2.xlarge", "ml.trn1.2xlarge", "ml.c6a.large"])
def test_x86_types_pass(instance_type):
    assert check_amd64_instance_type(instance_type, "x") == instance_type


def test_graviton_is_refused_before_any_request_for_every_command(settings_for, tmp_path):
    """train, the endpoint and a transform job each check their instance type before the first request."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"\xff\xd8")
    cases = [
        (dict(train_instance_type="ml.c7g.xlarge"), lambda b: b.train(DATA, {})),
        (dict(endpoint_instance_type="ml.m6g.large"), lambda b: b.serve()),
        (dict(transform_instance_type="ml.r7g.large"),
         lambda b: batch_transform.run_transform_job(b.ctx, "b", "s3://b/m.tar.gz", folder, "image/jpeg")),
    ]
    for over, call in cases:
        backend = SageMakerBackend(settings_for(dry_run=True, **over))
        backend.ctx.dry_run.stream = io.StringIO()
        with pytest.raises(LaunchError, match="Graviton"):
            call(backend)
        assert backend.ctx.dry_run.requests == [], over


def test_endpoint_refuses_graviton_even_when_called_directly(settings_for):
    ctx = AwsContext.from_settings(settings_for(dry_run=True))
    with pytest.raises(LaunchError, match="Graviton"):
        endpoints.create_multi_model_endpoint(ctx, endpoints.MultiModelEndpoint.for_run(ctx),
                                              instance_type="ml.c7g.large")


def test_tune_flags_set_each_kinds_limit(tmp_path, aws_env, capsys):
    rc = main(["tune", "--data", DATA, "--spec", str(DEMO_SPEC), "--dry-run", "--max-runtime-extraction", "600",
               "--max-runtime-trial", "1200", "--max-runtime-final", "2400", *_flags(tmp_path, aws_env)])
    out = capsys.readouterr().out
    assert rc == 0, out[-2000:]
    extraction, final = _dry_requests(out, "sagemaker.CreateTrainingJob")
    (tuning,) = _dry_requests(out, "sagemaker.CreateHyperParameterTuningJob")
    assert [extraction["StoppingCondition"], tuning["TrainingJobDefinition"]["StoppingCondition"],
            final["StoppingCondition"]] == [{"MaxRuntimeInSeconds": s} for s in (600, 1200, 2400)]


def test_limits_come_from_byoc_yaml_and_the_environment(settings_for, tmp_path):
    from byoc.settings import load_settings

    (tmp_path / "byoc.yaml").write_text("max_runtime_trial_s: 5400\nspot: yes\n")
    s = load_settings(str(tmp_path / "byoc.yaml"), environ={"BYOC_MAX_WAIT_S": "9000"},
                      overrides={"bucket": BUCKET})
    assert (s.max_runtime_trial_s, s.spot, s.max_wait_s, s.max_runtime_final_s) == (5400, True, 9000, 86400)
