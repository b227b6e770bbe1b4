"""Amazon SageMaker Debugger in a ``CreateTrainingJob`` request: the hook, the built-in rules and the
profiler (the fields the SageMaker Python SDK's ``Estimator(debugger_hook_config=..., rules=...,
profiler_config=...)`` writes; see "Configure Debugger" in the SageMaker developer guide).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from byoc.aws.errors import LaunchError
from byoc_common.sagemaker_paths import TENSOR_DIR
from container_train.hyperparameters import HYPERPARAMETERS, parse_bool, to_sagemaker_strings

# ---- the built-in rule evaluator image ----------------------------------------------------------
# ECR account per region of the "sagemaker-debugger-rules" image that runs Debugger's built-in
# rules (AWS docs "Amazon SageMaker Debugger Registry URLs for Built-in Rule Evaluators"). The
# table is the SageMaker Python SDK's src/sagemaker/image_uri_config/debugger.json ("latest"
# registries, SDK v2.257.6 and the 2.257.7 wheel); tests/aws/test_aws_debugger_regions.py compares
# the two entry by entry, so a changed account (ap-northeast-3 was once wrong here) fails a test.
DEBUGGER_RULES_REPOSITORY = "sagemaker-debugger-rules"
DEBUGGER_RULES_REGISTRIES: dict[str, str] = {
    "af-south-1": "314341159256",
    "ap-east-1": "199566480951",
    "ap-northeast-1": "430734990657",
    "ap-northeast-2": "578805364391",
    "ap-northeast-3": "479947661362",
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


def debugger_available(region: str) -> bool:
    """Whether SageMaker publishes the rule evaluator image in ``region`` (the table above)."""
    return region in DEBUGGER_RULES_REGISTRIES


def debugger_rules_image(region: str) -> str:
    """``<account>.dkr.ecr.<region>.amazonaws.com/sagemaker-debugger-rules:latest`` for ``region``."""
    account = DEBUGGER_RULES_REGISTRIES.get(region)
    if account is None:
        raise LaunchError(f"SageMaker Debugger's built-in rules are not published for region {region!r}; "
                          f"regions: {', '.join(sorted(DEBUGGER_RULES_REGISTRIES))}")
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{domain}/{DEBUGGER_RULES_REPOSITORY}:latest"


# The rules the final training job runs unless told otherwise, by their SageMaker names; any rule
# of byoc.rules.catalog.RULE_NAMES (the local implementations) may be chosen. Parameters are
# SageMaker's documented defaults unless overridden through DebuggerSettings.rule_parameters.
DEFAULT_RULES: tuple[str, ...] = (
    "VanishingGradient",
    "Overfit",
    "Overtraining",
    "PoorWeightInitialization",
    "LossNotDecreasing",
)
PROFILER_REPORT_RULE = "ProfilerReport"
# Tensor collections the hook saves (what the rules above read).
DEBUG_COLLECTIONS: tuple[str, ...] = ("losses", "weights", "gradients", "biases")
# The trainer's switch for the smdebug hook (container_train.hyperparameters).
HOOK_HYPERPARAMETER = HYPERPARAMETERS["debugger"].name

# API reference, ProfilerConfig.ProfilingIntervalInMilliseconds: "Available values are 100, 200, 500,
# 1000 (1 second), 5000 (5 seconds), and 60000 (1 minute) milliseconds."
PROFILING_INTERVALS_MS = (100, 200, 500, 1000, 5000, 60000)


@dataclass(frozen=True)
class DebuggerSettings:
    """The Debugger hook, its rules and the profiler of the final training job."""

    region: str
    save_interval: int = 100                # steps between tensor saves
    rules: tuple[str, ...] = DEFAULT_RULES
    rule_parameters: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # rule -> overrides
    profiler: bool = True
    profiling_interval_ms: int = 500        # system metrics sampling: one of PROFILING_INTERVALS_MS

    def __post_init__(self) -> None:
        # The rules import smdebug (seconds, and a log line): only a job that sends rules pays for it.
        from byoc.rules.base import RuleParameterError
        from byoc.rules.catalog import RULE_NAMES, check_rule_parameters

        if self.profiling_interval_ms not in PROFILING_INTERVALS_MS:
            raise LaunchError(f"profiling_interval_ms must be one of SageMaker's "
                              f"{', '.join(map(str, PROFILING_INTERVALS_MS))}, got {self.profiling_interval_ms}")
        unknown = set(self.rules) - set(RULE_NAMES)
        unknown |= set(self.rule_parameters) - set(self.rules)
        if unknown:
            raise LaunchError(f"unknown or unused Debugger rule(s): {', '.join(sorted(unknown))}; "
                              f"supported: {', '.join(RULE_NAMES)}")
        # The local rules (byoc.rules) implement SageMaker's parameters: a name or value SageMaker
        # would reject fails here, before any job starts.
        for rule, params in self.rule_parameters.items():
            try:
                check_rule_parameters(rule, params)
            except RuleParameterError as e:
                raise LaunchError(f"Debugger rule parameters: {e}") from None


def settings_for_region(region: str, enabled: bool = True) -> tuple[DebuggerSettings | None, str | None]:
    """The final job's Debugger settings in ``region``, or ``(None, why)`` when it runs without.

    What the SageMaker Python SDK does (v2.257.6, ``estimator.py``): in a region without Debugger
    (``fw_utils._region_supports_debugger``/``_region_supports_profiler``) it turns the hook and the
    profiler off and trains on (``_validate_and_set_debugger_configs``, ``disable_profiler = True``).
    Here the hook and the profiler only feed the built-in rules and the ProfilerReport rule, which
    need the rule evaluator image; a region without that image runs the job with neither, and the
    caller prints ``why``."""
    if not enabled:
        return None, "Debugger turned off (--no-debugger): no hook, built-in rules or profiler"
    if not debugger_available(region):
        return None, (f"SageMaker Debugger's rule evaluator is not published in {region}: the job runs "
                      "without the Debugger hook, built-in rules and profiler (as the SageMaker Python "
                      "SDK does there); `byoc report` will find no rule results")
    return DebuggerSettings(region=region), None


def with_hook(hyperparameters: Mapping[str, Any], on: bool) -> tuple[dict[str, Any], bool]:
    """``hyperparameters`` with the trainer's hook switch set to ``on``, and whether that changed
    a value the caller gave (e.g. a tuning spec's static ``debugger: false`` riding on the best
    hyperparameters into the instrumented final job, whose rules would then check nothing)."""
    out = dict(hyperparameters)
    given = out.get(HOOK_HYPERPARAMETER)
    out[HOOK_HYPERPARAMETER] = on
    try:
        changed = given is not None and parse_bool(given) != on
    except ValueError:      # not a boolean at all: replaced, so say so
        changed = True
    return out, changed


def debug_hook_config(output_s3_uri: str, save_interval: int) -> dict[str, Any]:
    """The hook's ``DebugHookConfig``. ``S3OutputPath`` is the job's bare output prefix: SageMaker
    writes the tensors to ``<S3OutputPath>/<job name>/debug-output/`` itself. The SageMaker Python
    SDK passes the estimator's ``output_path`` unchanged (``estimator.py``:
    ``DebuggerHookConfig(s3_output_path=self.output_path)``) and reads the tensors back from
    ``os.path.join(s3_output_path, job_name, "debug-output")`` (``latest_job_debugger_artifacts_path``)."""
    interval = str(save_interval)
    return {
        "S3OutputPath": output_s3_uri,
        "LocalPath": TENSOR_DIR,
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
    """``ProfilerConfig``: the bare output prefix again; SageMaker appends ``<job name>/profiler-output``
    (SDK ``estimator.py``: ``ProfilerConfig(s3_output_path=self.output_path)``, read back by
    ``latest_job_profiler_artifacts_path`` as ``<s3_output_path>/<job>/profiler-output``)."""
    return {"S3OutputPath": output_s3_uri, "ProfilingIntervalInMilliseconds": interval_ms}


def profiler_rule_configurations(region: str) -> list[dict[str, Any]]:
    return [{
        "RuleConfigurationName": PROFILER_REPORT_RULE,
        "RuleEvaluatorImage": debugger_rules_image(region),
        "RuleParameters": {"rule_to_invoke": PROFILER_REPORT_RULE},
    }]


