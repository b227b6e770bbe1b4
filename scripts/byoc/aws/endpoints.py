"""SageMaker multi-model endpoint: create it, add model artifacts under its S3 prefix, invoke a
target model, delete it.

How a SageMaker multi-model endpoint works (what these functions drive):

* ``CreateModel`` with ``PrimaryContainer = {Image, ModelDataUrl: <S3 prefix ending in "/">,
  Mode: "MultiModel"}``: the serving image (label ``com.amazonaws.sagemaker.capabilities.
  multi-models=true``) is told to load models on demand from under that prefix.
* ``CreateEndpointConfig`` (one production variant on that model) then ``CreateEndpoint``; the
  ``endpoint_in_service`` waiter polls ``DescribeEndpoint`` until ``InService``.
* Adding a model is only an S3 write: put ``<name>.tar.gz`` under the prefix. There is no API call
  to the endpoint; the first ``InvokeEndpoint`` with ``TargetModel="<name>.tar.gz"`` makes
  SageMaker download it and ``POST /models`` it to the container.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from byoc.aws import s3_data
from byoc.aws.errors import LaunchError
from byoc.aws.session import AwsContext

_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
ARTIFACT_SUFFIX = ".tar.gz"


def check_name(name: str, what: str = "resource") -> str:
    """SageMaker names: letters, digits and hyphens, 1-63 characters, no leading hyphen."""
    if not _NAME_RE.match(name):
        raise LaunchError(f"invalid SageMaker {what} name {name!r}: use letters, digits and '-', "
                         f"at most 63 characters")
    return name


def target_model_name(name: str) -> str:
    """The ``TargetModel`` value for an artifact: its key relative to the model prefix."""
    return name if name.endswith(ARTIFACT_SUFFIX) else name + ARTIFACT_SUFFIX


@dataclass(frozen=True)
class MultiModelEndpoint:
    endpoint_name: str
    config_name: str
    model_name: str
    model_data_prefix: str  # s3://bucket/.../models/

    @classmethod
    def for_run(cls, ctx: AwsContext) -> MultiModelEndpoint:
        base = ctx.settings.endpoint_name or f"byoc-{ctx.settings.run_name}"
        return cls(endpoint_name=check_name(base, "endpoint"), config_name=check_name(f"{base}-config"),
                   model_name=check_name(f"{base}-mme"),
                   model_data_prefix=s3_data.join_s3(ctx.settings.s3_run_prefix, "models") + "/")


def create_multi_model_endpoint(ctx: AwsContext, ep: MultiModelEndpoint, image_uri: str | None = None,
                                instance_type: str | None = None, instance_count: int = 1,
                                environment: dict[str, str] | None = None, wait: bool | None = None) -> dict:
    """CreateModel (Mode=MultiModel) -> CreateEndpointConfig -> CreateEndpoint [-> wait InService]."""
    s = ctx.settings
    s.require("role_arn", "bucket")
    image_uri = image_uri or s.serve_image
    if not image_uri:
        s.require("serve_image")
    sm = ctx.sagemaker
    sm.create_model(
        ModelName=ep.model_name,
        ExecutionRoleArn=s.role_arn,
        PrimaryContainer={
            "Image": image_uri,
            "ModelDataUrl": ep.model_data_prefix,
            "Mode": "MultiModel",
            "Environment": {"SAGEMAKER_CONTAINER_LOG_LEVEL": "20", **(environment or {})},
        },
    )
    ctx.record("model", ep.model_name)
    sm.create_endpoint_config(
        EndpointConfigName=ep.config_name,
        ProductionVariants=[{
            "VariantName": "AllTraffic",
            "ModelName": ep.model_name,
            "InitialInstanceCount": instance_count,
            "InstanceType": instance_type or s.endpoint_instance_type,
            "InitialVariantWeight": 1.0,
        }],
    )
    ctx.record("endpoint_config", ep.config_name)
    sm.create_endpoint(EndpointName=ep.endpoint_name, EndpointConfigName=ep.config_name)
    ctx.record("endpoint", ep.endpoint_name)
    if (s.wait if wait is None else wait) and not ctx.is_dry_run:
        sm.get_waiter("endpoint_in_service").wait(
            EndpointName=ep.endpoint_name, WaiterConfig={"Delay": 30, "MaxAttempts": 60})
    if ctx.is_dry_run:
        return {"EndpointName": ep.endpoint_name, "EndpointStatus": "DryRun"}
    return sm.describe_endpoint(EndpointName=ep.endpoint_name)


def add_model(ctx: AwsContext, ep: MultiModelEndpoint, artifact: str | os.PathLike, name: str) -> str:
    """Make ``artifact`` (a local model.tar.gz or an s3:// URI) servable as ``TargetModel=name``.

    Returns the TargetModel value to invoke it with.
    """
    target = target_model_name(name)
    dest = ep.model_data_prefix + target
    src = str(artifact)
    if src.startswith("s3://"):
        s3_data.copy_object(ctx, src, dest)
    else:
        if not Path(src).is_file():
            raise FileNotFoundError(f"model artifact {src} does not exist (build it with `byoc package`)")
        s3_data.put_file(ctx, src, dest)
    # Objects under the run prefix are already covered by cleanup; record the prefix once.
    ctx.record("s3_prefix", ctx.settings.s3_run_prefix)
    return target


def list_models(ctx: AwsContext, ep: MultiModelEndpoint) -> list[str]:
    """TargetModel names available under the endpoint's prefix."""
    _, prefix = s3_data.parse_s3_uri(ep.model_data_prefix)
    return [o["Key"][len(prefix):] for o in s3_data.iter_objects(ctx, ep.model_data_prefix)
            if o["Key"].endswith(ARTIFACT_SUFFIX)]


def invoke(ctx: AwsContext, endpoint_name: str, body: bytes, content_type: str,
           accept: str = "application/json", target_model: str | None = None,
           custom_attributes: str | None = None) -> tuple[str, bytes]:
    """InvokeEndpoint; returns ``(content type, body bytes)`` of the answer."""
    params = {"EndpointName": endpoint_name, "Body": body, "ContentType": content_type, "Accept": accept}
    if target_model:
        params["TargetModel"] = target_model_name(target_model)
    if custom_attributes:
        params["CustomAttributes"] = custom_attributes
    resp = ctx.runtime.invoke_endpoint(**params)
    raw = resp.get("Body")
    payload = raw.read() if hasattr(raw, "read") else (raw or b"")
    return resp.get("ContentType", ""), payload


def delete_endpoint(ctx: AwsContext, ep: MultiModelEndpoint) -> None:
    from byoc.aws.cleanup import delete_endpoint_stack

    delete_endpoint_stack(ctx, endpoint=ep.endpoint_name, config=ep.config_name, model=ep.model_name)
