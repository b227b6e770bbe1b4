"""Hyperparameter tuning and the final Debugger-instrumented training job on SageMaker (boto3 only).

The flow the seed project ran with the SageMaker Python SDK (``HyperparameterTuner`` over an
estimator, then one more ``fit`` with Debugger rules and the profiler report), on the plain API:

1. :func:`build_tuning_job_request` -> ``CreateHyperParameterTuningJob``: the ranges, objective,
   strategy and limits of a :class:`~scripts.tuning.spec.TuningSpec`, a training job definition on
   the ECR training image with the trainer's ``MetricDefinitions``.
2. :func:`wait_for_tuning_job` polls ``DescribeHyperParameterTuningJob``;
   :func:`best_training_job` reads ``BestTrainingJob`` from the answer.
3. :func:`build_training_job_request` -> ``CreateTrainingJob`` with the best hyperparameters, the
   Debugger hook (losses, weights, gradients, biases), the built-in rules the seed used
   (:data:`BUILTIN_RULES`), system profiling and the ``ProfilerReport`` rule.

Building a request never talks to AWS, so ``--dry-run`` prints exactly what would be sent. The
``send_*``/``wait_*`` functions take a boto3 SageMaker client (tests use botocore's Stubber or a
moto server).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from container_train import contract
from container_train.hyperparameters import to_sagemaker_strings
from scripts.tuning.spec import SpecError, TuningSpec, load_spec

# ---- the built-in rule evaluator image ----------------------------------------------------------
# ECR account per region of the "sagemaker-debugger-rules" image that runs Debugger's built-in
# rules (AWS docs "Amazon SageMaker Debugger Registry URLs for Built-in Rule Evaluators"; the same
# table ships with the SageMaker Python SDK as image_uri_config/debugger.json).
DEBUGGER_RULES_REPOSITORY = "sagemaker-debugger-rules"
DEBUGGER_RULES_REGISTRIES: dict[str, str] = {
    "af-south-1": "314341159256",
    "ap-east-1": "199566480951",
    "ap-northeast-1": "430734990657",
    "ap-northeast-2": "578805364391",
    "ap-northeast-3": "364406365360",
    "ap-south-1": "904829902805",
    "ap-southeast-1": "972752614525",
    "ap-southeast-2": "184798709955",
    "ca-central-1": "519511493484",
    "cn-north-1": "618459771430",
    "cn-northwest-1": "658757709296",
    "eu-central-1": "482524230118",
    "eu-north-1": "314864569078",
    "eu-south-1": "563282790590",
    "eu-west-1": "929884845733",
    "eu-west-2": "250201462417",
    "eu-west-3": "447278800020",
    "me-south-1": "986000313247",
    "sa-east-1": "818342061345",
    "us-east-1": "503895931360",
    "us-east-2": "915447279597",
    "us-gov-west-1": "515509971035",
    "us-west-1": "685455198987",
    "us-west-2": "895741380848",
}


class LaunchError(RuntimeError):
    """A SageMaker job cannot be built or did not finish as needed; the message says why."""


def debugger_rules_image(region: str) -> str:
    """``<account>.dkr.ecr.<region>.amazonaws.com/sagemaker-debugger-rules:latest`` for ``region``."""
    account = DEBUGGER_RULES_REGISTRIES.get(region)
    if account is None:
        raise LaunchError(f"SageMaker Debugger's built-in rules are not published for region {region!r}; "
                          f"regions: {', '.join(sorted(DEBUGGER_RULES_REGISTRIES))}")
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{domain}/{DEBUGGER_RULES_REPOSITORY}:latest"


# The built-in rules the seed project attached, by their SageMaker names. Their parameters are
# SageMaker's documented defaults unless overridden through DebuggerSettings.rule_parameters.
BUILTIN_RULES: tuple[str, ...] = (
    "VanishingGradient",
    "Overfit",
    "Overtraining",
    "PoorWeightInitialization",
    "LossNotDecreasing",
)
# Rules that may be chosen (also available locally in scripts.rules).
SUPPORTED_RULES: tuple[str, ...] = BUILTIN_RULES + ("ExplodingTensor",)
PROFILER_REPORT_RULE = "ProfilerReport"
# Tensor collections the hook saves (what the rules above read).
DEBUG_COLLECTIONS: tuple[str, ...] = ("losses", "weights", "gradients", "biases")
# Where the training container writes files that SageMaker uploads.
CONTAINER_CHECKPOINT_DIR = "/opt/ml/checkpoints"
CONTAINER_TENSOR_DIR = "/opt/ml/output/tensors"      # Debugger's default LocalPath
# The trainer's channels (container_train.job_env.CHANNELS) and the S3 sub-folder each reads.
DEFAULT_CHANNEL_FOLDERS = {"training": "train", "validation": "valid", "test": "test"}


# ---- settings shared by every training job ------------------------------------------------------

@dataclass(frozen=True)
class TrainingResources:
    """Where and on what a training job runs (the SDK's estimator arguments)."""

    image_uri: str                          # the ECR training image
    role_arn: str
    channels: Mapping[str, str]             # channel name -> s3:// prefix
    output_s3_uri: str                      # s3://bucket/prefix: model.tar.gz, output.tar.gz
    instance_type: str = "ml.g4dn.xlarge"
    instance_count: int = 1
    volume_size_gb: int = 30
    max_runtime_s: int = 40 * 60            # the seed's 40 minutes per trial
    spot: bool = False                      # EnableManagedSpotTraining
    max_wait_s: int | None = None           # spot only: runtime + waiting for capacity
    checkpoint_s3_uri: str | None = None    # synced with /opt/ml/checkpoints (needed for spot resume)
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
        if self.checkpoint_s3_uri and not self.checkpoint_s3_uri.startswith("s3://"):
            problems.append(f"checkpoint_s3_uri {self.checkpoint_s3_uri!r} is not an s3:// URI")
        if self.spot and self.max_wait_s is not None and self.max_wait_s < self.max_runtime_s:
            problems.append(f"max_wait_s ({self.max_wait_s}) must be >= max_runtime_s ({self.max_runtime_s})")
        if problems:
            raise LaunchError("invalid training settings: " + "; ".join(problems))


@dataclass(frozen=True)
class DebuggerSettings:
    """The Debugger hook, its rules and the profiler of the final training job."""

    region: str
    save_interval: int = 100                # steps between tensor saves
    rules: tuple[str, ...] = BUILTIN_RULES
    rule_parameters: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # rule -> overrides
    profiler: bool = True
    profiling_interval_ms: int = 500        # system metrics sampling (SageMaker: 100, 200, 500, 1000, ...)

    def __post_init__(self) -> None:
        unknown = set(self.rules) - set(SUPPORTED_RULES)
        unknown |= set(self.rule_parameters) - set(self.rules)
        if unknown:
            raise LaunchError(f"unknown or unused Debugger rule(s): {', '.join(sorted(unknown))}; "
                              f"supported: {', '.join(SUPPORTED_RULES)}")
        if self.rule_parameters:
            # The local rules (scripts.rules) implement SageMaker's parameters: a name or value
            # SageMaker would reject fails here, before any job starts.
            from scripts.rules.base import RuleParameterError
            from scripts.rules.catalog import BUILTIN_RULES as LOCAL_RULES

            for rule, params in self.rule_parameters.items():
                try:
                    LOCAL_RULES[rule]._parse(dict(params))
                except RuleParameterError as e:
                    raise LaunchError(f"Debugger rule parameters: {e}") from None


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


def _common_job_fields(resources: TrainingResources) -> dict[str, Any]:
    """Fields a tuning job's training job definition and a plain training job have in common."""
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
    if resources.checkpoint_s3_uri:
        fields["CheckpointConfig"] = {"S3Uri": resources.checkpoint_s3_uri,
                                      "LocalPath": CONTAINER_CHECKPOINT_DIR}
    return fields


def _tags(resources: TrainingResources) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in resources.tags.items()]


def _number(value: float | int) -> str:
    return repr(value) if isinstance(value, float) else str(value)


# ---- CreateHyperParameterTuningJob --------------------------------------------------------------

def parameter_ranges(spec: TuningSpec) -> dict[str, list[dict[str, Any]]]:
    """The spec's ranges as SageMaker ``ParameterRanges`` (all values strings)."""
    ranges: dict[str, list[dict[str, Any]]] = {
        "ContinuousParameterRanges": [],
        "IntegerParameterRanges": [],
        "CategoricalParameterRanges": [],
    }
    for p in spec.parameters:
        if p.kind == "categorical":
            strings = to_sagemaker_strings({str(i): v for i, v in enumerate(p.values)})
            ranges["CategoricalParameterRanges"].append({"Name": p.name, "Values": list(strings.values())})
        else:
            key = "ContinuousParameterRanges" if p.kind == "continuous" else "IntegerParameterRanges"
            ranges[key].append({"Name": p.name, "MinValue": _number(p.min_value),
                                "MaxValue": _number(p.max_value), "ScalingType": p.scaling})
    return ranges


def build_tuning_job_request(spec: TuningSpec, job_name: str, resources: TrainingResources) -> dict[str, Any]:
    """The ``CreateHyperParameterTuningJob`` request for ``spec`` (nothing is sent)."""
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
    if spec.hyperband is not None:
        config["StrategyConfig"] = {"HyperbandStrategyConfig": {
            "MinResource": spec.hyperband.min_resource, "MaxResource": spec.hyperband.max_resource}}
    definition: dict[str, Any] = {
        "StaticHyperParameters": spec.static_strings(),
        "AlgorithmSpecification": {
            "TrainingImage": resources.image_uri,
            "TrainingInputMode": "File",
            "MetricDefinitions": [dict(d) for d in contract.METRIC_DEFINITIONS],
        },
        **_common_job_fields(resources),
    }
    request: dict[str, Any] = {
        "HyperParameterTuningJobName": job_name,
        "HyperParameterTuningJobConfig": config,
        "TrainingJobDefinition": definition,
    }
    if resources.tags:
        request["Tags"] = _tags(resources)
    return request


# ---- CreateTrainingJob (the final, instrumented run) --------------------------------------------

def debug_hook_config(output_s3_uri: str, save_interval: int) -> dict[str, Any]:
    interval = str(save_interval)
    return {
        "S3OutputPath": f"{output_s3_uri.rstrip('/')}/debug-output",
        "LocalPath": CONTAINER_TENSOR_DIR,
        "CollectionConfigurations": [
            {"CollectionName": name, "CollectionParameters": {"save_interval": interval}}
            for name in DEBUG_COLLECTIONS
        ],
    }


def debug_rule_configurations(settings: DebuggerSettings) -> list[dict[str, Any]]:
    image = debugger_rules_image(settings.region)
    return [
        {
            "RuleConfigurationName": rule,
            "RuleEvaluatorImage": image,
            "RuleParameters": {"rule_to_invoke": rule,
                               **to_sagemaker_strings(dict(settings.rule_parameters.get(rule, {})))},
        }
        for rule in settings.rules
    ]


def profiler_config(output_s3_uri: str, interval_ms: int) -> dict[str, Any]:
    return {"S3OutputPath": f"{output_s3_uri.rstrip('/')}/profiler-output",
            "ProfilingIntervalInMilliseconds": interval_ms}


def profiler_rule_configurations(region: str) -> list[dict[str, Any]]:
    return [{
        "RuleConfigurationName": PROFILER_REPORT_RULE,
        "RuleEvaluatorImage": debugger_rules_image(region),
        "RuleParameters": {"rule_to_invoke": PROFILER_REPORT_RULE},
    }]


def build_training_job_request(job_name: str, hyperparameters: Mapping[str, Any],
                               resources: TrainingResources,
                               debugger: DebuggerSettings | None = None) -> dict[str, Any]:
    """The ``CreateTrainingJob`` request (nothing is sent); with ``debugger`` it carries the hook,
    the built-in rules, system profiling and the profiler report rule."""
    resources.validate()
    check_training_job_name(job_name)
    request: dict[str, Any] = {
        "TrainingJobName": job_name,
        "HyperParameters": to_sagemaker_strings(dict(hyperparameters)),
        "AlgorithmSpecification": {
            "TrainingImage": resources.image_uri,
            "TrainingInputMode": "File",
            "MetricDefinitions": [dict(d) for d in contract.METRIC_DEFINITIONS],
        },
        **_common_job_fields(resources),
    }
    if debugger is not None:
        request["DebugHookConfig"] = debug_hook_config(resources.output_s3_uri, debugger.save_interval)
        request["DebugRuleConfigurations"] = debug_rule_configurations(debugger)
        if debugger.profiler:
            request["ProfilerConfig"] = profiler_config(resources.output_s3_uri,
                                                        debugger.profiling_interval_ms)
            request["ProfilerRuleConfigurations"] = profiler_rule_configurations(debugger.region)
    if resources.tags:
        request["Tags"] = _tags(resources)
    return request


# ---- names ----------------------------------------------------------------------------------------

_TUNING_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}")
_TRAINING_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")


def check_tuning_job_name(name: str) -> None:
    if not _TUNING_NAME.fullmatch(name):
        raise LaunchError(f"tuning job name {name!r} must be 1-32 letters, digits or hyphens "
                          "(starting with a letter or digit)")


def check_training_job_name(name: str) -> None:
    if not _TRAINING_NAME.fullmatch(name):
        raise LaunchError(f"training job name {name!r} must be 1-63 letters, digits or hyphens "
                          "(starting with a letter or digit)")


def unique_job_name(base: str, max_len: int, now: datetime | None = None) -> str:
    """``base-YYMMDD-HHMMSS`` cut to ``max_len`` (32 for tuning jobs, 63 for training jobs)."""
    stamp = (now or datetime.now(UTC)).strftime("%y%m%d-%H%M%S")
    base = re.sub(r"[^a-zA-Z0-9-]+", "-", base).strip("-") or "byoc"
    return f"{base[: max_len - len(stamp) - 1].rstrip('-')}-{stamp}"


# ---- sending and waiting ------------------------------------------------------------------------

TUNING_DONE = ("Completed", "Failed", "Stopped")
TRAINING_DONE = ("Completed", "Failed", "Stopped")


def send_tuning_job(client, request: Mapping[str, Any]) -> str:
    return client.create_hyper_parameter_tuning_job(**request)["HyperParameterTuningJobArn"]


def send_training_job(client, request: Mapping[str, Any]) -> str:
    return client.create_training_job(**request)["TrainingJobArn"]


def _wait(describe: Callable[[], dict], status_key: str, done: tuple[str, ...], what: str,
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


def wait_for_tuning_job(client, name: str, poll_s: float = 60, timeout_s: float | None = None,
                        on_status: Callable[[dict], None] | None = None,
                        sleep: Callable[[float], None] = time.sleep) -> dict:
    """Poll ``DescribeHyperParameterTuningJob`` until the job ends; returns the last answer."""
    return _wait(lambda: client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name),
                 "HyperParameterTuningJobStatus", TUNING_DONE, f"tuning job {name}",
                 poll_s, timeout_s, on_status, sleep)


def wait_for_training_job(client, name: str, poll_s: float = 60, timeout_s: float | None = None,
                          on_status: Callable[[dict], None] | None = None,
                          sleep: Callable[[float], None] = time.sleep) -> dict:
    """Poll ``DescribeTrainingJob`` until the job ends; returns the last answer."""
    return _wait(lambda: client.describe_training_job(TrainingJobName=name),
                 "TrainingJobStatus", TRAINING_DONE, f"training job {name}",
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


def final_hyperparameters(spec: TuningSpec, best: BestJob) -> dict[str, str]:
    """Static hyperparameters plus the best job's tuned ones (SageMaker-internal names dropped)."""
    tuned = {k: v for k, v in best.tuned_hyperparameters.items() if not k.startswith("_")}
    return {**spec.static_strings(), **tuned}


# ---- the whole flow -------------------------------------------------------------------------------

@dataclass
class LaunchResult:
    tuning_request: dict[str, Any]
    tuning_job_arn: str | None = None
    best: BestJob | None = None
    training_request: dict[str, Any] | None = None
    training_job_arn: str | None = None
    training_status: str | None = None


def tune_then_train(client, spec: TuningSpec, resources: TrainingResources, debugger: DebuggerSettings,
                    *, tuning_job_name: str, training_job_name: str, wait_for_training: bool = True,
                    poll_s: float = 60, log: Callable[[str], None] = print,
                    sleep: Callable[[float], None] = time.sleep) -> LaunchResult:
    """Run the tuning job, then the instrumented training job with the best hyperparameters."""
    result = LaunchResult(tuning_request=build_tuning_job_request(spec, tuning_job_name, resources))
    result.tuning_job_arn = send_tuning_job(client, result.tuning_request)
    log(f"tuning job {tuning_job_name} started: {result.tuning_job_arn}")

    def report(answer: dict) -> None:
        counts = answer.get("TrainingJobStatusCounters", {})
        log(f"tuning job {tuning_job_name}: {answer['HyperParameterTuningJobStatus']} "
            f"({counts.get('Completed', 0)} completed, {counts.get('InProgress', 0)} running, "
            f"{counts.get('NonRetryableError', 0)} failed, {counts.get('Stopped', 0)} stopped)")

    answer = wait_for_tuning_job(client, tuning_job_name, poll_s=poll_s, on_status=report, sleep=sleep)
    if answer["HyperParameterTuningJobStatus"] != "Completed":
        log(f"tuning job ended {answer['HyperParameterTuningJobStatus']}: "
            f"{answer.get('FailureReason', 'no reason given')}; using its best job so far")
    result.best = best_training_job(answer)
    log(f"best training job {result.best.training_job_name}: {result.best.objective_metric}="
        f"{result.best.objective_value} with {result.best.tuned_hyperparameters}")

    result.training_request = build_training_job_request(
        training_job_name, final_hyperparameters(spec, result.best), resources, debugger)
    result.training_job_arn = send_training_job(client, result.training_request)
    log(f"training job {training_job_name} started: {result.training_job_arn}")
    if wait_for_training:
        final = wait_for_training_job(client, training_job_name, poll_s=poll_s, sleep=sleep)
        result.training_status = final["TrainingJobStatus"]
        log(f"training job {training_job_name}: {result.training_status}")
        for rule in final.get("DebugRuleEvaluationStatuses", []) + final.get(
                "ProfilerRuleEvaluationStatuses", []):
            log(f"  rule {rule.get('RuleConfigurationName')}: {rule.get('RuleEvaluationStatus')}")
    return result


# ---- command line -----------------------------------------------------------------------------------

def _channels_from_args(data_s3_uri: str, extra: list[str]) -> dict[str, str]:
    root = data_s3_uri.rstrip("/")
    channels = {name: f"{root}/{folder}/" for name, folder in DEFAULT_CHANNEL_FOLDERS.items()}
    for item in extra:
        name, sep, uri = item.partition("=")
        if not sep:
            raise LaunchError(f"--channel {item!r}: expected NAME=s3://...")
        channels[name] = uri
    return channels


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m scripts.aws.sagemaker_training",
        description="Tune on SageMaker from a tuning spec, then train once more with the best "
                    "hyperparameters, Debugger rules and the profiler report.")
    p.add_argument("--spec", default="tuning/tuning.yaml", help="tuning spec YAML (default: %(default)s)")
    p.add_argument("--image", required=True, help="ECR training image URI")
    p.add_argument("--role", required=True, help="SageMaker execution role ARN")
    p.add_argument("--region", required=True)
    p.add_argument("--data", required=True,
                   help="s3:// prefix holding train/ valid/ test/ (channels training, validation, test)")
    p.add_argument("--channel", action="append", default=[], metavar="NAME=S3URI",
                   help="extra or replacement channel, e.g. pretrained=s3://bucket/weights/")
    p.add_argument("--output", required=True, help="s3:// prefix for job outputs")
    p.add_argument("--instance-type", default="ml.g4dn.xlarge")
    p.add_argument("--max-runtime", type=int, default=40 * 60, help="seconds per training job")
    p.add_argument("--spot", action="store_true", help="managed spot training (checkpoints under --output)")
    p.add_argument("--max-jobs", type=int, help="override the spec's max_jobs")
    p.add_argument("--max-parallel-jobs", type=int, help="override the spec's max_parallel_jobs")
    p.add_argument("--name", default="byoc", help="job name prefix")
    p.add_argument("--endpoint-url", help="SageMaker endpoint (moto / LocalStack)")
    p.add_argument("--dry-run", action="store_true", help="print the requests, send nothing")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the final training job")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spec = load_spec(args.spec).with_overrides(max_jobs=args.max_jobs,
                                               max_parallel_jobs=args.max_parallel_jobs)
    output = args.output.rstrip("/")
    resources = TrainingResources(
        image_uri=args.image, role_arn=args.role,
        channels=_channels_from_args(args.data, args.channel), output_s3_uri=output,
        instance_type=args.instance_type, max_runtime_s=args.max_runtime, spot=args.spot,
        checkpoint_s3_uri=f"{output}/checkpoints" if args.spot else None)
    debugger = DebuggerSettings(region=args.region)
    tuning_name = unique_job_name(f"{args.name}-hpo", 32)
    training_name = unique_job_name(f"{args.name}-final", 63)
    if args.dry_run:
        example_best = {p.name: "<best>" for p in spec.parameters}
        print(json.dumps({
            "CreateHyperParameterTuningJob": build_tuning_job_request(spec, tuning_name, resources),
            "CreateTrainingJob": build_training_job_request(
                training_name, {**spec.static, **example_best}, resources, debugger),
        }, indent=2))
        return 0
    import boto3

    client = boto3.client("sagemaker", region_name=args.region, endpoint_url=args.endpoint_url)
    result = tune_then_train(client, spec, resources, debugger, tuning_job_name=tuning_name,
                             training_job_name=training_name, wait_for_training=not args.no_wait)
    return 0 if result.training_status in (None, "Completed") else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (LaunchError, SpecError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
