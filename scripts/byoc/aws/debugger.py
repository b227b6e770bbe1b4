"""Amazon SageMaker Debugger in a ``CreateTrainingJob`` request: the hook, the built-in rules and the
profiler (the fields the SageMaker Python SDK's ``Estimator(debugger_hook_config=..., rules=...,
profiler_config=...)`` writes; see "Configure Debugger" in the SageMaker developer guide).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from byoc.aws.errors import LaunchError
from byoc.rules.base import RuleParameterError
from byoc.rules.catalog import RULE_NAMES, check_rule_parameters
from byoc_common.sagemaker_paths import TENSOR_DIR
from container_train.hyperparameters import to_sagemaker_strings

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

@dataclass(frozen=True)
class DebuggerSettings:
    """The Debugger hook, its rules and the profiler of the final training job."""

    region: str
    save_interval: int = 100                # steps between tensor saves
    rules: tuple[str, ...] = DEFAULT_RULES
    rule_parameters: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # rule -> overrides
    profiler: bool = True
    profiling_interval_ms: int = 500        # system metrics sampling (SageMaker: 100, 200, 500, 1000, ...)

    def __post_init__(self) -> None:
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


def debug_hook_config(output_s3_uri: str, save_interval: int) -> dict[str, Any]:
    interval = str(save_interval)
    return {
        "S3OutputPath": f"{output_s3_uri.rstrip('/')}/debug-output",
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
    return {"S3OutputPath": f"{output_s3_uri.rstrip('/')}/profiler-output",
            "ProfilingIntervalInMilliseconds": interval_ms}


def profiler_rule_configurations(region: str) -> list[dict[str, Any]]:
    return [{
        "RuleConfigurationName": PROFILER_REPORT_RULE,
        "RuleEvaluatorImage": debugger_rules_image(region),
        "RuleParameters": {"rule_to_invoke": PROFILER_REPORT_RULE},
    }]


