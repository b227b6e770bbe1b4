"""Requests SageMaker would refuse are refused here first, with SageMaker's reason: Hyperband without a
max resource, a profiling interval SageMaker does not offer, a GPU instance for this multi-model
endpoint. Nothing is sent (the dry-run client would print it)."""

from __future__ import annotations

import pytest

from byoc.aws import debugger as dbg
from byoc.aws import endpoints
from byoc.aws import training_jobs as tj
from byoc.aws import tuning_jobs as hpo
from byoc.aws.errors import LaunchError
from byoc.backends.sagemaker import SageMakerBackend
from byoc.settings import load_settings
from byoc.tuning.errors import SpecError
from byoc.tuning.search import make_pruner
from byoc.tuning.spec import parse_spec
from tests.helpers.moto_server import BUCKET, REGION, ROLE, SERVE_IMAGE


def resources() -> tj.TrainingResources:
    return tj.TrainingResources(image_uri="123456789012.dkr.ecr.eu-west-1.amazonaws.com/byoc-train:1",
                                role_arn=ROLE, channels={"training": "s3://bkt/data/train/"},
                                output_s3_uri="s3://bkt/out")


HYPERBAND = {
    "objective": {"metric": "validation:accuracy", "direction": "Maximize"},
    "strategy": "Hyperband", "max_jobs": 6, "max_parallel_jobs": 2, "early_stopping": "Off",
    "parameters": {"lr": {"type": "continuous", "min": 0.0001, "max": 0.1, "scaling": "log"}},
    "static": {"arch": "resnet18"},
}


def test_hyperband_without_a_max_resource_is_refused_before_sending():
    spec = parse_spec(HYPERBAND)
    with pytest.raises(SpecError, match="Hyperband needs a max resource"):
        hpo.build_tuning_job_request(spec, "hb", resources())
    with pytest.raises(SpecError, match="Hyperband needs a max resource"):
        make_pruner(spec)                    # the local tuner refuses it the same way


def test_hyperband_max_resource_inferred_from_static_epochs_as_sagemaker_does():
    spec = parse_spec({**HYPERBAND, "static": {"arch": "resnet18", "epochs": 8}})
    config = hpo.build_tuning_job_request(spec, "hb", resources())["HyperParameterTuningJobConfig"]
    assert "StrategyConfig" not in config          # SageMaker infers MaxResource from the static epochs
    assert spec.hyperband_resources().max_resource == 8
    assert make_pruner(spec)._max_resource == 8


def test_hyperband_max_resource_over_sagemakers_limit_is_refused():
    spec = parse_spec({**HYPERBAND, "hyperband": {"min_resource": 1, "max_resource": 20_001}})
    with pytest.raises(SpecError, match="at most 20000 epochs"):
        hpo.build_tuning_job_request(spec, "hb", resources())


@pytest.mark.parametrize("interval", [100, 200, 500, 1000, 5000, 60000])
def test_profiling_intervals_sagemaker_offers(interval):
    assert dbg.DebuggerSettings(region=REGION, profiling_interval_ms=interval).profiling_interval_ms == interval


@pytest.mark.parametrize("interval", [50, 250, 2000, 120000])
def test_other_profiling_intervals_are_refused(interval):
    with pytest.raises(LaunchError, match="one of SageMaker's 100, 200, 500, 1000, 5000, 60000"):
        dbg.DebuggerSettings(region=REGION, profiling_interval_ms=interval)


@pytest.mark.parametrize("instance_type", ["ml.g5.xlarge", "ml.g4dn.xlarge", "ml.p3.2xlarge", "ml.inf2.xlarge"])
def test_gpu_instance_for_the_multi_model_endpoint_is_refused(instance_type, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(overrides=dict(backend="sagemaker", region=REGION, role_arn=ROLE, bucket=BUCKET,
                                            serve_image=SERVE_IMAGE, run_dir=str(tmp_path / "run"),
                                            dry_run=True), environ={})
    settings = settings.__class__(**{**settings.__dict__, "endpoint_instance_type": instance_type})
    with pytest.raises(LaunchError, match="only with the Triton Inference Server"):
        SageMakerBackend(settings).start_endpoint()
    assert "DRY-RUN" not in capsys.readouterr().out          # refused before any request


def test_cpu_instance_types_pass():
    for instance_type in ("ml.m5.large", "ml.c7i.xlarge", "ml.r6i.large", "ml.t2.medium"):
        assert endpoints.check_multi_model_instance_type(instance_type) == instance_type
