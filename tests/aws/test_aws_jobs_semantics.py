"""What SageMaker does with the job requests, beyond their schema: checkpoint prefixes per job, the
hook switch matching DebugHookConfig, the output prefixes SageMaker extends itself, and channels
that must hold objects. Each test names where the behaviour is documented."""

from __future__ import annotations

import pytest

from byoc.aws import debugger as dbg
from byoc.aws import training_jobs as tj
from byoc.aws import tuning_jobs as hpo
from byoc.aws.errors import LaunchError
from byoc.tuning.spec import load_spec
from container_train.hyperparameters import to_sagemaker_strings

ROLE = "arn:aws:iam::123456789012:role/SageMakerExecutionRole"
CHANNELS = {"training": "s3://bkt/data/train/", "validation": "s3://bkt/data/valid/",
            "test": "s3://bkt/data/test/"}


def resources(**kw) -> tj.TrainingResources:
    base = dict(image_uri="123456789012.dkr.ecr.eu-west-1.amazonaws.com/byoc-train:1", role_arn=ROLE,
                channels=CHANNELS, output_s3_uri="s3://bkt/out", spot=True,
                checkpoint_s3_uri="s3://bkt/out/checkpoints")
    base.update(kw)
    return tj.TrainingResources(**base)


# ---- checkpoints ----------------------------------------------------------------------------------
def test_each_training_job_syncs_its_own_checkpoint_prefix():
    """SageMaker copies every key under CheckpointConfig.S3Uri into /opt/ml/checkpoints when a job
    starts ("Checkpoints in Amazon SageMaker AI"); S3Uri is a key prefix, so without the trailing
    slash job-1 would also receive job-10's files."""
    first = tj.build_training_job_request("byoc-run-train-1", {}, resources())
    tenth = tj.build_training_job_request("byoc-run-train-10", {}, resources())
    assert first["CheckpointConfig"] == {"S3Uri": "s3://bkt/out/checkpoints/byoc-run-train-1/",
                                         "LocalPath": "/opt/ml/checkpoints"}
    assert not tenth["CheckpointConfig"]["S3Uri"].startswith(first["CheckpointConfig"]["S3Uri"])
    assert "CheckpointConfig" not in tj.build_training_job_request("j", {}, resources(checkpoint_s3_uri=None))


def test_tuning_trials_never_share_a_checkpoint_prefix():
    """One HyperParameterTrainingJobDefinition.CheckpointConfig would be every trial's (the SDK copies
    checkpoint_s3_uri into it verbatim: tuner.py _prepare_training_config), so trials get none, and
    the final job's prefix is its own."""
    definition = hpo.build_tuning_job_request(load_spec("tuning"), "byoc-hpo", resources())["TrainingJobDefinition"]
    assert "CheckpointConfig" not in definition
    assert definition["EnableManagedSpotTraining"] is True          # spot trials restart from epoch 1


# ---- the hook switch --------------------------------------------------------------------------------
def test_final_job_with_rules_forces_the_hook_on():
    """A tuning spec's static ``debugger: false`` rides on the best hyperparameters into the final
    job: with DebugRuleConfigurations its rules would read no tensors."""
    demo = load_spec("local-demo")
    assert demo.static["debugger"] is False                      # what reaches the final job
    final = demo.static | {"lr": "0.01"}
    request = tj.build_training_job_request("final", final, resources(), dbg.DebuggerSettings(region="eu-west-1"))
    assert request["HyperParameters"]["debugger"] == "true" and "DebugRuleConfigurations" in request
    assert dbg.with_hook(final, on=True) == ({**final, "debugger": True}, True)   # the caller is told
    assert dbg.with_hook({"debugger": "TRUE"}, on=True)[1] is False


def test_jobs_without_a_hook_config_turn_the_hook_off():
    plain = tj.build_training_job_request("plain", {"debugger": "true"}, resources())
    assert plain["HyperParameters"]["debugger"] == "false" and "DebugHookConfig" not in plain
    spec = load_spec("tuning")
    static = hpo.build_tuning_job_request(spec, "hpo", resources())["TrainingJobDefinition"]["StaticHyperParameters"]
    assert static == {**to_sagemaker_strings(spec.static), "debugger": "false"}


# ---- output prefixes ------------------------------------------------------------------------------
def test_debugger_and_profiler_get_the_bare_output_prefix():
    """SageMaker writes to <S3OutputPath>/<job>/debug-output and .../<job>/profiler-output itself; the
    SDK sets both S3OutputPaths to the estimator's output_path (estimator.py
    _prepare_debugger_for_training, _prepare_profiler_for_training) and reads the tensors back from
    os.path.join(s3_output_path, job, "debug-output") (latest_job_debugger_artifacts_path)."""
    request = tj.build_training_job_request("final", {}, resources(output_s3_uri="s3://bkt/run/jobs"),
                                            dbg.DebuggerSettings(region="eu-west-1"))
    assert request["DebugHookConfig"]["S3OutputPath"] == "s3://bkt/run/jobs"
    assert request["ProfilerConfig"]["S3OutputPath"] == "s3://bkt/run/jobs"
    assert request["OutputDataConfig"]["S3OutputPath"] == "s3://bkt/run/jobs"


# ---- channels ---------------------------------------------------------------------------------------
def test_empty_test_split_is_left_out_and_empty_required_splits_stop_the_launch():
    """A channel whose prefix holds no object fails the job ("No S3 objects found under S3 URL")."""
    present = {"s3://bkt/data/train/", "s3://bkt/data/valid/"}
    assert tj.select_channels(CHANNELS, present.__contains__) == {
        "training": "s3://bkt/data/train/", "validation": "s3://bkt/data/valid/"}
    assert tj.select_channels(CHANNELS, lambda uri: True) == CHANNELS
    with pytest.raises(LaunchError, match=r"validation \(s3://bkt/data/valid/\)"):
        tj.select_channels(CHANNELS, {"s3://bkt/data/train/"}.__contains__)
    assert tj.OPTIONAL_CHANNELS == {"test"}
