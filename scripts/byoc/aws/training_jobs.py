"""``CreateTrainingJob`` on the plain API (boto3): the request, its names, sending and waiting.

Building a request never talks to AWS, so ``--dry-run`` prints exactly what would be sent. The
``send_*``/``wait_*`` functions take a boto3 SageMaker client (tests use botocore's Stubber or a
moto server). The tuning job's training job definition shares :func:`common_job_fields`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from byoc.aws.debugger import (
    DebuggerSettings,
    debug_hook_config,
    debug_rule_configurations,
    profiler_config,
    profiler_rule_configurations,
    with_hook,
)
from byoc.aws.errors import LaunchError
from byoc.aws.instance_types import is_graviton
from byoc.settings import Settings
from byoc.tuning.schema import DISTRIBUTIONS
from byoc_common.sagemaker_paths import CHECKPOINT_DIR
from container_train import contract
from container_train.hyperparameters import to_sagemaker_strings

# Channels a job may run without when their split is empty (container_train/data.py: the test
# split is optional; training and validation are not).
OPTIONAL_CHANNELS = frozenset(c for c, split in contract.CHANNEL_SPLITS.items() if split == "test")
# Set next to a distribution's hyperparameter, as the SageMaker Python SDK's PyTorch estimator does
# (INSTANCE_TYPE_ENV_NAME in src/sagemaker/pytorch/estimator.py).
INSTANCE_TYPE_HYPERPARAMETER = "sagemaker_instance_type"
# StoppingCondition.MaxRuntimeInSeconds: the SageMaker Python SDK's default (EstimatorBase
# max_run=24 * 60 * 60, src/sagemaker/estimator.py) and AWS's upper bound (28 days, "StoppingCondition").
DEFAULT_MAX_RUNTIME_S = 24 * 60 * 60
MAX_RUNTIME_LIMIT_S = 28 * 24 * 60 * 60

# ---- settings shared by every training job ------------------------------------------------------

@dataclass(frozen=True)
class TrainingResources:
    """Where and on what a training job runs (the SDK's estimator arguments)."""

    image_uri: str                          # the ECR training image
    role_arn: str
    channels: Mapping[str, str]             # channel name -> s3:// prefix
    output_s3_uri: str                      # s3://bucket/prefix: model.tar.gz, output.tar.gz
    instance_type: str = "ml.g4dn.xlarge"
    instance_count: int = 1                 # hosts (ResourceConfig.InstanceCount)
    distribution: str | None = None         # a key of byoc.tuning.schema.DISTRIBUTIONS: how they are launched
    volume_size_gb: int = 30
    max_runtime_s: int = DEFAULT_MAX_RUNTIME_S   # per job (Settings.max_runtime_<kind>_s)
    spot: bool = False                      # EnableManagedSpotTraining
    max_wait_s: int | None = None           # spot only: runtime + waiting for capacity
    # Base prefix of /opt/ml/checkpoints (needed for spot resume): a training job syncs its own
    # <base>/<job name>/ (checkpoint_config); a tuning job's trials get none (tuning_jobs).
    checkpoint_s3_uri: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        problems = []
        if not re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/.+", self.role_arn):
            problems.append(f"role_arn {self.role_arn!r} is not an IAM role ARN")
        if not self.channels:
            problems.append("no input channels (need at least 'training')")
        for name, uri in {**self.channels, "output": self.output_s3_uri}.items():
            if not str(uri).startswith("s3://"):
                problems.append(f"{name}: {uri!r} is not an s3:// URI")
        if isinstance(self.instance_count, bool) or not isinstance(self.instance_count, int) \
                or self.instance_count < 1:
            problems.append(f"instance_count must be a whole number >= 1, got {self.instance_count!r}")
        if is_graviton(self.instance_type):
            problems.append(f"instance type {self.instance_type} is Graviton (arm64); the training image is "
                            "linux/amd64 only (byoc.aws.instance_types)")
        if not 0 < self.max_runtime_s <= MAX_RUNTIME_LIMIT_S:
            problems.append(f"max_runtime_s must be 1..{MAX_RUNTIME_LIMIT_S} (28 days, SageMaker's limit), "
                            f"got {self.max_runtime_s}")
        if self.distribution is not None and self.distribution not in DISTRIBUTIONS:
            problems.append(f"distribution {self.distribution!r} is not one of {', '.join(DISTRIBUTIONS)}")
        if self.checkpoint_s3_uri and not self.checkpoint_s3_uri.startswith("s3://"):
            problems.append(f"checkpoint_s3_uri {self.checkpoint_s3_uri!r} is not an s3:// URI")
        if self.spot and self.max_wait_s is not None and self.max_wait_s < self.max_runtime_s:
            problems.append(f"max_wait_s ({self.max_wait_s}) must be >= max_runtime_s ({self.max_runtime_s})")
        if problems:
            raise LaunchError("invalid training settings: " + "; ".join(problems))


# The kinds of training job a run starts, each with its own MaxRuntimeInSeconds setting
# (Settings.max_runtime_<kind>_s): a features extraction, a tuning trial, a final (or single) job.
JOB_KINDS = ("extraction", "trial", "final")
CHECKPOINTS_FOLDER = "jobs/checkpoints"     # under the run prefix: spot jobs' default checkpoint base


def limits_from_settings(settings: Settings, kind: str) -> dict[str, Any]:
    """The :class:`TrainingResources` fields the settings decide for a job of ``kind``: its time limit,
    managed spot, the spot wait and the checkpoint base (with spot and no ``checkpoint_s3_uri``:
    ``<run prefix>/jobs/checkpoints/``, so an interrupted spot job resumes from its last epoch)."""
    if kind not in JOB_KINDS:
        raise ValueError(f"job kind {kind!r} is not one of {JOB_KINDS}")
    checkpoints = settings.checkpoint_s3_uri
    if settings.spot and not checkpoints:
        checkpoints = settings.s3_run_prefix + CHECKPOINTS_FOLDER + "/"
    return {"max_runtime_s": getattr(settings, f"max_runtime_{kind}_s"), "spot": settings.spot,
            "max_wait_s": settings.max_wait_s, "checkpoint_s3_uri": checkpoints}


def _channels(resources: TrainingResources) -> list[dict[str, Any]]:
    return [
        {
            "ChannelName": name,
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                            "S3DataDistributionType": "FullyReplicated"}},
            "InputMode": "File",
        }
        for name, uri in resources.channels.items()
    ]


def select_channels(channels: Mapping[str, str], has_objects: Callable[[str], bool]) -> dict[str, str]:
    """The channels whose S3 prefix holds objects: SageMaker fails a job with a channel that has none
    ("ClientError: No S3 objects found under S3 URL ..."). The test split is optional (the trainer
    runs without it, container_train/data.py), so an empty one is left out; an empty training or
    validation split stops the launch here, before a job is billed."""
    chosen = {name: uri for name, uri in channels.items() if has_objects(uri)}
    missing = [f"{name} ({uri})" for name, uri in channels.items()
               if name not in chosen and name not in OPTIONAL_CHANNELS]
    if missing:
        raise LaunchError(f"no S3 objects under the channel prefix(es) {', '.join(missing)}: upload the "
                          "dataset first (`byoc data --backend sagemaker`) or pass the right --data")
    return chosen


def checkpoint_config(resources: TrainingResources, job_name: str) -> dict[str, str] | None:
    """``CheckpointConfig`` of training job ``job_name``: its own ``<base>/<job name>/``.

    The trailing ``/`` matters: SageMaker syncs every key under the S3Uri *prefix* into
    /opt/ml/checkpoints at start, so ``.../checkpoints/job-1`` would also bring ``job-10``'s files.
    One prefix per job means no job ever starts from another job's checkpoint."""
    if not resources.checkpoint_s3_uri:
        return None
    return {"S3Uri": f"{resources.checkpoint_s3_uri.rstrip('/')}/{job_name}/", "LocalPath": CHECKPOINT_DIR}


def common_job_fields(resources: TrainingResources) -> dict[str, Any]:
    """Fields a tuning job's training job definition and a plain training job have in common
    (not ``CheckpointConfig``, which is per job: :func:`checkpoint_config`)."""
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": resources.max_runtime_s}
    if resources.spot:
        stopping["MaxWaitTimeInSeconds"] = resources.max_wait_s or 2 * resources.max_runtime_s
    fields: dict[str, Any] = {
        "RoleArn": resources.role_arn,
        "InputDataConfig": _channels(resources),
        "OutputDataConfig": {"S3OutputPath": resources.output_s3_uri},
        "ResourceConfig": {"InstanceType": resources.instance_type,
                           "InstanceCount": resources.instance_count,
                           "VolumeSizeInGB": resources.volume_size_gb},
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": resources.spot,
    }
    return fields


def distribution_hyperparameters(resources: TrainingResources) -> dict[str, str]:
    """What the SageMaker Python SDK adds to a PyTorch estimator's hyperparameters for its
    ``distribution``: ``{"torch_distributed": {"enabled": True}}`` gives
    ``sagemaker_torch_distributed_enabled`` and ``sagemaker_instance_type``, each JSON-encoded
    (``_pytorch_distribution_configuration`` and ``EstimatorBase._json_encode_hyperparameters`` in
    aws/sagemaker-python-sdk src/sagemaker/pytorch/estimator.py). The training toolkit decodes them
    as additional framework parameters (``sagemaker_`` names never reach the trainer's arguments)."""
    if resources.distribution is None:
        return {}
    return {DISTRIBUTIONS[resources.distribution]: json.dumps(True),
            INSTANCE_TYPE_HYPERPARAMETER: json.dumps(resources.instance_type)}


def job_tags(resources: TrainingResources) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in resources.tags.items()]


def algorithm_specification(image_uri: str) -> dict[str, Any]:
    """The training image, File input mode and the trainer's metric regexes."""
    return {"TrainingImage": image_uri, "TrainingInputMode": "File",
            "MetricDefinitions": [dict(d) for d in contract.METRIC_DEFINITIONS]}


def build_training_job_request(job_name: str, hyperparameters: Mapping[str, Any],
                               resources: TrainingResources,
                               debugger: DebuggerSettings | None = None) -> dict[str, Any]:
    """The ``CreateTrainingJob`` request (nothing is sent); with ``debugger`` it carries the hook,
    the built-in rules, system profiling and the profiler report rule.

    The trainer's ``debugger`` hyperparameter always says whether the request has a
    ``DebugHookConfig``: forced on with one (rules over no tensors check nothing), off without
    (tensors nobody uploads only fill the volume). :func:`~byoc.aws.debugger.with_hook` tells
    the caller whether that overrode a value it gave."""
    resources.validate()
    check_training_job_name(job_name)
    hyperparameters, _ = with_hook(hyperparameters, on=debugger is not None)
    request: dict[str, Any] = {
        "TrainingJobName": job_name,
        "HyperParameters": {**to_sagemaker_strings(hyperparameters), **distribution_hyperparameters(resources)},
        "AlgorithmSpecification": algorithm_specification(resources.image_uri),
        **common_job_fields(resources),
    }
    checkpoints = checkpoint_config(resources, job_name)
    if checkpoints:
        request["CheckpointConfig"] = checkpoints
    if debugger is not None:
        request["DebugHookConfig"] = debug_hook_config(resources.output_s3_uri, debugger.save_interval)
        request["DebugRuleConfigurations"] = debug_rule_configurations(debugger)
        if debugger.profiler:
            request["ProfilerConfig"] = profiler_config(resources.output_s3_uri,
                                                        debugger.profiling_interval_ms)
            request["ProfilerRuleConfigurations"] = profiler_rule_configurations(debugger.region)
    if resources.tags:
        request["Tags"] = job_tags(resources)
    return request


# ---- names ----------------------------------------------------------------------------------------

_TRAINING_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")


def check_training_job_name(name: str) -> None:
    if not _TRAINING_NAME.fullmatch(name):
        raise LaunchError(f"training job name {name!r} must be 1-63 letters, digits or hyphens "
                          "(starting with a letter or digit)")


def unique_job_name(base: str, max_len: int, now: datetime | None = None) -> str:
    """``base-YYMMDD-HHMMSS-mmm`` cut to ``max_len`` (32 for tuning jobs, 63 for training jobs). The
    milliseconds keep two jobs started in one second apart, as the SageMaker Python SDK's
    ``sagemaker_timestamp`` does (src/sagemaker/utils.py: name_from_base)."""
    moment = now or datetime.now(UTC)
    stamp = f"{moment:%y%m%d-%H%M%S}-{moment.microsecond // 1000:03d}"
    base = re.sub(r"[^a-zA-Z0-9-]+", "-", base).strip("-") or "byoc"
    return f"{base[: max_len - len(stamp) - 1].rstrip('-')}-{stamp}"


# ---- sending and waiting ------------------------------------------------------------------------

TRAINING_DONE = ("Completed", "Failed", "Stopped")


def send_training_job(client, request: Mapping[str, Any]) -> str:
    return client.create_training_job(**request)["TrainingJobArn"]


def wait_until_done(describe: Callable[[], dict], status_key: str, done: tuple[str, ...], what: str,
          poll_s: float, timeout_s: float | None, on_status: Callable[[dict], None] | None,
          sleep: Callable[[float], None]) -> dict:
    started = time.monotonic()
    while True:
        answer = describe()
        if on_status is not None:
            on_status(answer)
        if answer[status_key] in done:
            return answer
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise LaunchError(f"{what} still {answer[status_key]} after {timeout_s:.0f} s")
        sleep(poll_s)


def wait_for_training_job(client, name: str, poll_s: float = 60, timeout_s: float | None = None,
                          on_status: Callable[[dict], None] | None = None,
                          sleep: Callable[[float], None] = time.sleep) -> dict:
    """Poll ``DescribeTrainingJob`` until the job ends; returns the last answer."""
    return wait_until_done(lambda: client.describe_training_job(TrainingJobName=name),
                 "TrainingJobStatus", TRAINING_DONE, f"training job {name}",
                 poll_s, timeout_s, on_status, sleep)


# DescribeTrainingJob's SecondaryStatus of a job SageMaker stopped at StoppingCondition.MaxRuntimeInSeconds
# (API reference, DescribeTrainingJob: SecondaryStatus "Stopped - MaxRuntimeExceeded").
MAX_RUNTIME_EXCEEDED = "MaxRuntimeExceeded"


@dataclass(frozen=True)
class FinishedJob:
    """A training job that ended with a usable model artifact."""

    name: str
    status: str                  # Completed, or Stopped at its time limit
    model_data: str              # ModelArtifacts.S3ModelArtifacts
    note: str | None = None      # one line to show when the artifact comes from a job that did not complete


def finished_job(answer: Mapping[str, Any], time_limit_usable: bool = True) -> FinishedJob:
    """The usable outcome of a final ``DescribeTrainingJob`` answer, or :class:`LaunchError` with the reason.

    A job that reached ``MaxRuntimeInSeconds`` ends ``Stopped`` with ``SecondaryStatus`` ``MaxRuntimeExceeded``.
    SageMaker stops it as it stops any job: SIGTERM, 120 s to save, then it uploads ``/opt/ml/model``
    ("StoppingCondition": "Algorithms can use this 120-second window to save the model artifacts ...
    this intermediate data is a valid model artifact. You can use it to create a model"). Our trainer
    saves its best model on SIGTERM (container_train), so that artifact is used, with a note saying so.
    A job stopped for any other reason (StopTrainingJob, MaxWaitTimeExceeded) or failed is not, nor one
    whose output is only whole when it completes (``time_limit_usable=False``: a feature extraction)."""
    name = answer.get("TrainingJobName", "?")
    status = answer.get("TrainingJobStatus")
    secondary = answer.get("SecondaryStatus")
    artifacts = answer.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    if status == "Completed" and artifacts:
        return FinishedJob(name, status, artifacts)
    limit_reached = status == "Stopped" and secondary == MAX_RUNTIME_EXCEEDED
    if limit_reached and artifacts and time_limit_usable:
        limit = answer.get("StoppingCondition", {}).get("MaxRuntimeInSeconds")
        return FinishedJob(name, status, artifacts, note=(
            f"training job {name} reached its time limit ({limit} s, MaxRuntimeExceeded) and was stopped; "
            f"the model it saved on SIGTERM is used: {artifacts}"))
    reason = answer.get("FailureReason") or (f"SecondaryStatus {secondary}" if secondary else "no reason given")
    if status in ("Completed", "Stopped") and not artifacts:
        reason = f"{reason}; no model artifact was uploaded"
    if limit_reached:
        reason = f"{reason}: it needs a higher time limit (MaxRuntimeInSeconds)"
    raise LaunchError(f"training job {name} ended {status}: {reason}")
