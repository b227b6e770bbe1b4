"""Application Auto Scaling on the multi-model endpoint's variant: a scalable target between a
minimum and a maximum instance count, and a target tracking policy on invocations per instance.

The requests follow the SageMaker Developer Guide, "Automatic scaling of Amazon SageMaker AI
models": "Register a model" (RegisterScalableTarget with ServiceNamespace ``sagemaker``, ResourceId
``endpoint/<endpoint>/variant/<variant>``, ScalableDimension ``sagemaker:variant:DesiredInstanceCount``,
MinCapacity, MaxCapacity), "Define a scaling policy" (TargetTrackingScalingPolicyConfiguration with
TargetValue and PredefinedMetricSpecification ``SageMakerVariantInvocationsPerInstance``) and "Apply
a scaling policy" (PutScalingPolicy with PolicyType ``TargetTrackingScaling``); botocore's
``application-autoscaling`` service model checks every field before a request is sent (and in a dry
run). The metric is CloudWatch's ``InvocationsPerInstance``: invocations per instance per minute.

Both calls are upserts, so deploying again with other numbers updates them. Nothing to clean up:
"If you delete an endpoint, Application Auto Scaling ... deregisters those models as scalable
targets" (SageMaker Developer Guide, "Delete endpoints configured for auto scaling"), and the policy
goes with its target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from byoc.aws.endpoints import VARIANT_NAME
from byoc.aws.errors import LaunchError
from byoc.aws.session import AwsContext

SERVICE_NAMESPACE = "sagemaker"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
POLICY_TYPE = "TargetTrackingScaling"
PREDEFINED_METRIC = "SageMakerVariantInvocationsPerInstance"
IN_SERVICE = "InService"


@dataclass(frozen=True)
class EndpointScaling:
    """How the endpoint's variant scales: ``byoc deploy --min-instances/--max-instances/--target-invocations``."""

    min_instances: int
    max_instances: int
    target_invocations: float          # per instance per minute (the policy's TargetValue)

    def validate(self) -> None:
        problems = []
        # A variant of instances keeps at least one (scaling to zero needs inference components).
        if self.min_instances < 1:
            problems.append(f"--min-instances must be at least 1, got {self.min_instances}")
        if self.max_instances < self.min_instances:
            problems.append(f"--max-instances ({self.max_instances}) must be >= --min-instances "
                            f"({self.min_instances})")
        if not (math.isfinite(self.target_invocations) and self.target_invocations > 0):
            problems.append(f"--target-invocations must be a positive number, got {self.target_invocations}")
        if problems:
            raise LaunchError("invalid endpoint autoscaling: " + "; ".join(problems))


def resource_id(endpoint_name: str, variant: str = VARIANT_NAME) -> str:
    return f"endpoint/{endpoint_name}/variant/{variant}"


def policy_name(endpoint_name: str) -> str:
    return f"{endpoint_name}-invocations-per-instance"


def scalable_target_request(endpoint_name: str, scaling: EndpointScaling) -> dict[str, Any]:
    """The ``RegisterScalableTarget`` request (nothing is sent)."""
    scaling.validate()
    return {"ServiceNamespace": SERVICE_NAMESPACE, "ResourceId": resource_id(endpoint_name),
            "ScalableDimension": SCALABLE_DIMENSION,
            "MinCapacity": scaling.min_instances, "MaxCapacity": scaling.max_instances}


def scaling_policy_request(endpoint_name: str, scaling: EndpointScaling) -> dict[str, Any]:
    """The ``PutScalingPolicy`` request (nothing is sent); cooldowns stay AWS's defaults."""
    scaling.validate()
    return {"PolicyName": policy_name(endpoint_name), "ServiceNamespace": SERVICE_NAMESPACE,
            "ResourceId": resource_id(endpoint_name), "ScalableDimension": SCALABLE_DIMENSION,
            "PolicyType": POLICY_TYPE,
            "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": float(scaling.target_invocations),
                "PredefinedMetricSpecification": {"PredefinedMetricType": PREDEFINED_METRIC}}}


def attach_autoscaling(ctx: AwsContext, endpoint_name: str, scaling: EndpointScaling) -> dict[str, Any]:
    """Register the endpoint's variant as a scalable target and put the target tracking policy on it.

    The endpoint must be InService: its variant is what gets registered, and one still being
    created or updated has no instance count to scale yet."""
    scalable_target = scalable_target_request(endpoint_name, scaling)
    policy = scaling_policy_request(endpoint_name, scaling)
    if not ctx.is_dry_run:
        status = ctx.sagemaker.describe_endpoint(EndpointName=endpoint_name)["EndpointStatus"]
        if status != IN_SERVICE:
            raise LaunchError(f"endpoint {endpoint_name} is {status}: autoscaling can be attached once it is "
                              f"{IN_SERVICE}; deploy again with the same flags then")
    client = ctx.client("application-autoscaling")
    client.register_scalable_target(**scalable_target)
    answer = client.put_scaling_policy(**policy)
    return {"resource_id": scalable_target["ResourceId"], "min_instances": scaling.min_instances,
            "max_instances": scaling.max_instances, "target_invocations": scaling.target_invocations,
            "policy": policy["PolicyName"], "policy_arn": answer.get("PolicyARN")}
