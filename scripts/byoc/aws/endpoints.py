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

import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from byoc.aws import ownership, s3_data
from byoc.aws.errors import LaunchError
from byoc.aws.instance_types import check_amd64_instance_type
from byoc.aws.session import AwsContext
from byoc.console import progress_console
from container_serve import content_types as ct

_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
ARTIFACT_SUFFIX = ".tar.gz"


def check_name(name: str, what: str = "resource") -> str:
    """SageMaker names: letters, digits and hyphens, 1-63 characters, no leading hyphen."""
    if not _NAME_RE.match(name):
        raise LaunchError(f"invalid SageMaker {what} name {name!r}: use letters, digits and '-', "
                         f"at most 63 characters")
    return name


# The multi-model endpoint's one production variant (what autoscaling registers: aws.autoscaling).
VARIANT_NAME = "AllTraffic"

# GPU instance families. SageMaker serves multi-model endpoints on GPU instances only with the NVIDIA
# Triton Inference Server container ("Multi-model endpoints" in the SageMaker developer guide:
# "Supported algorithms, frameworks, and instances": GPU-backed multi-model endpoints are supported
# through Triton); a BYOC multi-model server like this one needs a CPU instance.
GPU_INSTANCE_FAMILIES = ("ml.p", "ml.g", "ml.inf", "ml.trn")


def check_multi_model_instance_type(instance_type: str) -> str:
    check_amd64_instance_type(instance_type, "endpoint_instance_type")
    if instance_type.startswith(GPU_INSTANCE_FAMILIES):
        raise LaunchError(f"{instance_type} cannot host this multi-model endpoint: SageMaker runs GPU and "
                          "accelerator multi-model endpoints only with the Triton Inference Server container; "
                          "use a CPU instance type (e.g. ml.m5.large, ml.c7i.xlarge) for endpoint_instance_type")
    return instance_type


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
                                environment: dict[str, str] | None = None, wait: bool | None = None,
                                log: Callable[[str], None] = progress_console.print) -> dict:
    """CreateModel (Mode=MultiModel) -> CreateEndpointConfig -> CreateEndpoint [-> wait InService].

    Re-runnable (:mod:`byoc.aws.ownership`): this run's model and config with the same settings are
    reused, other settings get new names (``ep.model_name`` and ``ep.config_name`` are the base names),
    the endpoint moves to the new config, and another run's resources are never touched."""
    s = ctx.settings
    instance_type = check_multi_model_instance_type(instance_type or s.endpoint_instance_type)
    s.require("role_arn", "bucket")
    image_uri = image_uri or s.serve_image
    if not image_uri:
        s.require("serve_image")
    model_name = ownership.ensure(ctx, ownership.MODEL, ep.model_name, {
        "ExecutionRoleArn": s.role_arn,
        "PrimaryContainer": {
            "Image": image_uri,
            "ModelDataUrl": ep.model_data_prefix,
            "Mode": "MultiModel",
            "Environment": {"SAGEMAKER_CONTAINER_LOG_LEVEL": "20", **(environment or {})},
        }}, lambda n: check_name(n, "model"), log)
    config_name = ownership.ensure(ctx, ownership.ENDPOINT_CONFIG, ep.config_name, {
        "ProductionVariants": [{
            "VariantName": VARIANT_NAME,
            "ModelName": model_name,
            "InitialInstanceCount": instance_count,
            "InstanceType": instance_type,
            "InitialVariantWeight": 1.0,
        }]}, lambda n: check_name(n, "endpoint config"), log)
    ownership.ensure_endpoint(ctx, ep.endpoint_name, config_name, log)
    if (s.wait if wait is None else wait) and not ctx.is_dry_run:
        ctx.sagemaker.get_waiter("endpoint_in_service").wait(
            EndpointName=ep.endpoint_name, WaiterConfig={"Delay": 30, "MaxAttempts": 60})
    if ctx.is_dry_run:
        return {"EndpointName": ep.endpoint_name, "EndpointConfigName": config_name, "EndpointStatus": "DryRun"}
    return ctx.sagemaker.describe_endpoint(EndpointName=ep.endpoint_name)


# Object metadata that says which bytes a deployed artifact holds (x-amz-meta-byoc-artifact).
ARTIFACT_METADATA = "byoc-artifact"


def add_model(ctx: AwsContext, ep: MultiModelEndpoint, artifact: str | os.PathLike, name: str) -> str:
    """Make ``artifact`` (a local model.tar.gz or an s3:// URI) servable as ``TargetModel=name``.

    An artifact is never overwritten in place: SageMaker keeps a model it has loaded (in the
    container and on the instance's volume), so invocations could go on reaching the old bytes.
    AWS, "Add or Remove Models" (multi-model endpoints): "To update a model ... Use a new and
    unique name. Don't overwrite model artifacts in Amazon S3". The same artifact again is a no-op
    (a re-run pipeline step); different bytes under a taken name are refused with a free name to
    use. Returns the TargetModel value to invoke it with.
    """
    target = target_model_name(name)
    dest = ep.model_data_prefix + target
    src = str(artifact)
    if not src.startswith("s3://") and not Path(src).is_file():
        raise FileNotFoundError(f"model artifact {src} does not exist (build it with `byoc package`)")
    fingerprint = _fingerprint(ctx, src)
    existing = None if ctx.is_dry_run else s3_data.head_object(ctx, dest)
    if existing is None:
        try:
            write = s3_data.copy_new_object if src.startswith("s3://") else s3_data.put_new_file
            write(ctx, src, dest, metadata={ARTIFACT_METADATA: fingerprint})
        except s3_data.ObjectExistsError:     # another deploy took the name meanwhile
            existing = s3_data.head_object(ctx, dest) or {}
    if existing is not None and existing.get("Metadata", {}).get(ARTIFACT_METADATA) != fingerprint:
        raise LaunchError(f"model {target} already exists under {ep.model_data_prefix} with other contents; "
                          "SageMaker may go on serving the copy it loaded, so models are never replaced in "
                          f"place (AWS: 'Add or Remove Models'): deploy it under a new name, e.g. "
                          f"--name {_free_name(ctx, ep, target)}")
    # Objects under the run prefix are already covered by cleanup; record the prefix once.
    ctx.record("s3_prefix", ctx.settings.s3_run_prefix)
    return target


def _fingerprint(ctx: AwsContext, src: str) -> str:
    """Which bytes ``src`` holds: a local file's SHA-256, an S3 object's URI and ETag."""
    if src.startswith("s3://"):
        head = s3_data.head_object(ctx, src)
        if head is None:
            raise FileNotFoundError(f"model artifact {src} does not exist")
        etag = head.get("ETag", "").strip('"')
        return f"{src}@{etag}"
    digest = hashlib.sha256()
    with open(src, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _free_name(ctx: AwsContext, ep: MultiModelEndpoint, target: str) -> str:
    """``<name>-v2`` (or the next version not yet under the prefix) for a taken ``<name>.tar.gz``."""
    taken = set(list_models(ctx, ep))
    stem = re.sub(r"-v\d+$", "", target.removesuffix(ARTIFACT_SUFFIX))
    version = 2
    while f"{stem}-v{version}{ARTIFACT_SUFFIX}" in taken:
        version += 1
    return f"{stem}-v{version}"


def list_models(ctx: AwsContext, ep: MultiModelEndpoint) -> list[str]:
    """TargetModel names available under the endpoint's prefix."""
    _, prefix = s3_data.parse_s3_uri(ep.model_data_prefix)
    return [o["Key"][len(prefix):] for o in s3_data.iter_objects(ctx, ep.model_data_prefix)
            if o["Key"].endswith(ARTIFACT_SUFFIX)]


# "Invoke a Multi-Model Endpoint", Retry Requests on ModelNotReadyException Errors: SageMaker answers
# within 60 s; a target model still downloading or loading then gets ModelNotReadyException (HTTP 429)
# while it goes on loading "for up to 360 seconds", and the request is to be retried.
MODEL_NOT_READY = "ModelNotReadyException"
MODEL_LOAD_LIMIT_S = 360.0
_RETRY_DELAYS_S = (2.0, 4.0, 8.0, 15.0)     # then every 15 s until the limit


def invoke(ctx: AwsContext, endpoint_name: str, body: bytes, content_type: str,
           accept: str = ct.JSON, target_model: str | None = None,
           custom_attributes: str | None = None, clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> tuple[str, bytes]:
    """InvokeEndpoint; returns ``(content type, body bytes)`` of the answer. A cold multi-model target
    answering ``ModelNotReadyException`` is retried, with a progress line each time, until
    :data:`MODEL_LOAD_LIMIT_S` after the first answer; then the error says the model did not load."""
    params = {"EndpointName": endpoint_name, "Body": body, "ContentType": content_type, "Accept": accept}
    if target_model:
        params["TargetModel"] = target_model_name(target_model)
    if custom_attributes:
        params["CustomAttributes"] = custom_attributes
    started, attempt = clock(), 0
    while True:
        try:
            resp = ctx.runtime.invoke_endpoint(**params)
            break
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != MODEL_NOT_READY:
                raise
            waited = clock() - started
            if waited >= MODEL_LOAD_LIMIT_S:
                raise LaunchError(f"{params.get('TargetModel', 'the model')} on endpoint {endpoint_name} was still "
                                  f"not ready after {waited:.0f} s of retries ({MODEL_NOT_READY}; SageMaker gives a "
                                  f"model {MODEL_LOAD_LIMIT_S:.0f} s to load): check the endpoint's CloudWatch "
                                  "logs for the load error, or the instance's memory") from None
            delay = min(_RETRY_DELAYS_S[min(attempt, len(_RETRY_DELAYS_S) - 1)], MODEL_LOAD_LIMIT_S - waited)
            attempt += 1
            progress_console.print(f"{params.get('TargetModel', endpoint_name)}: still loading on {endpoint_name} "
                                   f"({MODEL_NOT_READY}); retry {attempt} in {delay:.0f} s "
                                   f"({waited:.0f} of {MODEL_LOAD_LIMIT_S:.0f} s)")
            sleep(delay)
    raw = resp.get("Body")
    payload = raw.read() if hasattr(raw, "read") else (raw or b"")
    return resp.get("ContentType", ""), payload
