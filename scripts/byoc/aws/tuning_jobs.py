"""``CreateHyperParameterTuningJob`` on the plain API (boto3): the ranges, objective, strategy and
limits of a :class:`~byoc.tuning.spec.TuningSpec` over a training job definition on the training
image; waiting for it and reading its best training job (``BestTrainingJob``).

The trials carry no ``CheckpointConfig``. A ``HyperParameterTrainingJobDefinition`` holds one
static ``CheckpointConfig.S3Uri`` for every training job the tuning job launches: the API
reference documents no per-trial substitution (it is "the output location for managed spot
training checkpoint data"), and the SageMaker Python SDK copies the estimator's
``checkpoint_s3_uri`` into the definition verbatim (``tuner.py`` ``_prepare_training_config`` ->
``session._map_training_config``), so all trials would sync one prefix, overwrite each other's
``checkpoint.pth`` there and start from whichever was uploaded last. A trial is short; one that
loses its spot instance starts again from epoch 1. The final training job checkpoints under its
own ``<base>/<job name>/`` (:func:`~byoc.aws.training_jobs.checkpoint_config`).

Trials get no ``DebugHookConfig`` either, so their static ``debugger`` hyperparameter is forced
to ``false``: a hook would only write tensors nobody uploads.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from byoc.aws.debugger import with_hook
from byoc.aws.errors import LaunchError
from byoc.aws.training_jobs import (
    TrainingResources,
    algorithm_specification,
    common_job_fields,
    distribution_hyperparameters,
    job_tags,
    wait_until_done,
)
from byoc.tuning.spec import TuningSpec
from container_train.hyperparameters import Hyperparameters, sagemaker_string, to_sagemaker_strings

TUNING_DONE = ("Completed", "Failed", "Stopped")


def _number(value: float | int) -> str:
    return repr(value) if isinstance(value, float) else str(value)
_TUNING_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}")


def check_tuning_job_name(name: str) -> None:
    if not _TUNING_NAME.fullmatch(name):
        raise LaunchError(f"tuning job name {name!r} must be 1-32 letters, digits or hyphens "
                          "(starting with a letter or digit)")


def parameter_ranges(spec: TuningSpec) -> dict[str, list[dict[str, Any]]]:
    """The spec's ranges as SageMaker ``ParameterRanges`` (all values strings)."""
    ranges: dict[str, list[dict[str, Any]]] = {
        "ContinuousParameterRanges": [],
        "IntegerParameterRanges": [],
        "CategoricalParameterRanges": [],
    }
    for p in spec.parameters:
        if p.kind == "categorical":
            ranges["CategoricalParameterRanges"].append({"Name": p.name,
                                                         "Values": [sagemaker_string(v) for v in p.values]})
        else:
            key = "ContinuousParameterRanges" if p.kind == "continuous" else "IntegerParameterRanges"
            ranges[key].append({"Name": p.name, "MinValue": _number(p.min_value),
                                "MaxValue": _number(p.max_value), "ScalingType": p.scaling})
    return ranges


def on_spec_hosts(resources: TrainingResources, spec: TuningSpec) -> TrainingResources:
    """``resources`` on the spec's ``instance_count`` hosts with its ``distribution``: every trial's, and
    the final job's after a features-channel tuning. The global batch is batch-size x world size, so a
    final job on other hosts would train the tuned learning rate on another batch than the trials did."""
    return replace(resources, instance_count=spec.instance_count, distribution=spec.distribution)


def build_tuning_job_request(spec: TuningSpec, job_name: str, resources: TrainingResources) -> dict[str, Any]:
    """The ``CreateHyperParameterTuningJob`` request for ``spec`` (nothing is sent). Every trial runs
    on the spec's hosts (:func:`on_spec_hosts`: they win over ``resources``)."""
    resources = on_spec_hosts(resources, spec)
    resources.validate()
    check_tuning_job_name(job_name)
    config: dict[str, Any] = {
        "Strategy": spec.strategy,
        "HyperParameterTuningJobObjective": {"Type": spec.objective.direction,
                                             "MetricName": spec.objective.metric},
        "ResourceLimits": {"MaxNumberOfTrainingJobs": spec.max_jobs,
                           "MaxParallelTrainingJobs": spec.max_parallel_jobs},
        "ParameterRanges": parameter_ranges(spec),
        "TrainingJobEarlyStoppingType": spec.early_stopping,
    }
    if spec.random_seed is not None:
        config["RandomSeed"] = spec.random_seed
    if spec.strategy == "Hyperband":
        hyperband = spec.hyperband_resources()    # SageMaker's own check, before anything is sent
        if spec.hyperband is not None:
            config["StrategyConfig"] = {"HyperbandStrategyConfig": {
                "MinResource": hyperband.min_resource, "MaxResource": hyperband.max_resource}}
    static, _ = with_hook(spec.static, on=False)
    definition: dict[str, Any] = {
        "StaticHyperParameters": {**to_sagemaker_strings(static), **distribution_hyperparameters(resources)},
        "AlgorithmSpecification": algorithm_specification(resources.image_uri),
        **common_job_fields(resources),
    }
    request: dict[str, Any] = {
        "HyperParameterTuningJobName": job_name,
        "HyperParameterTuningJobConfig": config,
        "TrainingJobDefinition": definition,
    }
    if resources.tags:
        request["Tags"] = job_tags(resources)
    return request


def send_tuning_job(client, request: Mapping[str, Any]) -> str:
    return client.create_hyper_parameter_tuning_job(**request)["HyperParameterTuningJobArn"]


def wait_for_tuning_job(client, name: str, poll_s: float = 60, timeout_s: float | None = None,
                        on_status: Callable[[dict], None] | None = None,
                        sleep: Callable[[float], None] = time.sleep) -> dict:
    """Poll ``DescribeHyperParameterTuningJob`` until the job ends; returns the last answer."""
    return wait_until_done(lambda: client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name),
                 "HyperParameterTuningJobStatus", TUNING_DONE, f"tuning job {name}",
                 poll_s, timeout_s, on_status, sleep)


@dataclass(frozen=True)
class BestJob:
    training_job_name: str
    tuned_hyperparameters: dict[str, str]
    objective_metric: str
    objective_value: float


def best_training_job(description: Mapping[str, Any]) -> BestJob:
    """``BestTrainingJob`` of a ``DescribeHyperParameterTuningJob`` answer."""
    name = description.get("HyperParameterTuningJobName", "?")
    status = description.get("HyperParameterTuningJobStatus")
    best = description.get("BestTrainingJob")
    if not best:
        reason = description.get("FailureReason") or "no training job reported the objective metric"
        raise LaunchError(f"tuning job {name} ({status}) has no best training job: {reason}")
    metric = best.get("FinalHyperParameterTuningJobObjectiveMetric", {})
    return BestJob(training_job_name=best["TrainingJobName"],
                   tuned_hyperparameters=dict(best["TunedHyperParameters"]),
                   objective_metric=metric.get("MetricName", ""),
                   objective_value=float(metric.get("Value", "nan")))


def final_hyperparameters(spec: TuningSpec, best: BestJob) -> Hyperparameters:
    """Static hyperparameters plus the best job's values of the spec's tuned parameters (anything else
    SageMaker reports, such as its own ``_tuning_*`` names, is not the trainer's), typed."""
    tuned = {k: v for k, v in best.tuned_hyperparameters.items() if k in spec.parameter_names}
    return spec.static | tuned          # SageMaker's answer, checked like any other edge


