"""SageMaker batch transform over a folder of images: one ``<input name>.out`` per input.

A transform job needs a single-model SageMaker model (multi-model mode is an endpoint feature), so
this creates ``<run>-batch-<name>`` with ``ModelDataUrl`` pointing at one ``model.tar.gz``, then
``CreateTransformJob``:

* ``TransformInput``: every object under an S3 prefix (``S3DataType=S3Prefix``), sent whole
  (``SplitType=None``: an image is one record), with its ``ContentType``;
* ``BatchStrategy=SingleRecord`` and ``MaxPayloadInMB``: one image a request, bounded in size;
* ``TransformOutput``: ``Accept`` for the answers, ``AssembleWith=None``; SageMaker writes
  ``<output path>/<input key>.out`` for each input object.
"""

from __future__ import annotations

import time
from pathlib import Path

from byoc.aws import s3_data
from byoc.aws.endpoints import check_name
from byoc.aws.errors import LaunchError
from byoc.aws.instance_types import check_amd64_instance_type
from byoc.aws.session import AwsContext

BATCH_STRATEGIES = ("SingleRecord", "MultiRecord")


def create_batch_model(ctx: AwsContext, name: str, model_data: str, image_uri: str | None = None) -> str:
    """CreateModel (single model) for a transform job; returns the model name."""
    s = ctx.settings
    s.require("role_arn")
    image_uri = image_uri or s.serve_image
    if not image_uri:
        s.require("serve_image")
    model_name = check_name(f"byoc-{s.run_name}-batch-{name}", "model")
    ctx.sagemaker.create_model(
        ModelName=model_name,
        ExecutionRoleArn=s.role_arn,
        PrimaryContainer={"Image": image_uri, "ModelDataUrl": model_data, "Mode": "SingleModel"},
    )
    ctx.record("model", model_name)
    return model_name


def transform_request(job_name: str, model_name: str, input_uri: str, output_uri: str, content_type: str,
                      accept: str = "application/json", instance_type: str = "ml.m5.large",
                      instance_count: int = 1, batch_strategy: str = "SingleRecord",
                      max_payload_mb: int = 6, max_concurrent: int = 0) -> dict:
    """The exact CreateTransformJob parameters (kept separate so tests and --dry-run can show them)."""
    if batch_strategy not in BATCH_STRATEGIES:
        raise LaunchError(f"batch_strategy must be one of {BATCH_STRATEGIES}, got {batch_strategy!r}")
    if not 0 < max_payload_mb <= 100:
        raise LaunchError("max_payload_mb must be in 1..100 (SageMaker's limit)")
    req = {
        "TransformJobName": check_name(job_name, "transform job"),
        "ModelName": model_name,
        "BatchStrategy": batch_strategy,
        "MaxPayloadInMB": max_payload_mb,
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_uri}},
            "ContentType": content_type,
            "SplitType": "None",
            "CompressionType": "None",
        },
        "TransformOutput": {"S3OutputPath": output_uri, "Accept": accept, "AssembleWith": "None"},
        "TransformResources": {"InstanceType": instance_type, "InstanceCount": instance_count},
    }
    if max_concurrent:
        req["MaxConcurrentTransforms"] = max_concurrent
    return req


def run_transform_job(ctx: AwsContext, name: str, model_data: str, input_folder: str | Path,
                      content_type: str, accept: str = "application/json", download_to: str | Path | None = None,
                      batch_strategy: str = "SingleRecord", max_payload_mb: int = 6,
                      wait: bool | None = None) -> dict:
    """Upload ``input_folder``, create the model and the transform job, wait, download the ``.out``s."""
    s = ctx.settings
    check_amd64_instance_type(s.transform_instance_type, "transform_instance_type")   # before any request
    stamp = time.strftime("%Y%m%d-%H%M%S")
    input_uri = s3_data.join_s3(s.s3_run_prefix, "batch", name, "input") + "/"
    output_uri = s3_data.join_s3(s.s3_run_prefix, "batch", name, f"output-{stamp}") + "/"
    s3_data.upload_folder(ctx, input_folder, input_uri)
    ctx.record("s3_prefix", s.s3_run_prefix)
    model_name = create_batch_model(ctx, name, model_data)
    job_name = f"byoc-{s.run_name}-{name}-{stamp}"[:63].rstrip("-")
    req = transform_request(job_name, model_name, input_uri, output_uri, content_type, accept,
                            instance_type=s.transform_instance_type, batch_strategy=batch_strategy,
                            max_payload_mb=max_payload_mb)
    ctx.sagemaker.create_transform_job(**req)
    ctx.record("transform_job", job_name)
    result = {"TransformJobName": job_name, "InputUri": input_uri, "OutputUri": output_uri, "Outputs": []}
    if ctx.is_dry_run or not (s.wait if wait is None else wait):
        return result
    ctx.sagemaker.get_waiter("transform_job_completed_or_stopped").wait(
        TransformJobName=job_name, WaiterConfig={"Delay": 30, "MaxAttempts": 240})
    desc = ctx.sagemaker.describe_transform_job(TransformJobName=job_name)
    result["TransformJobStatus"] = desc["TransformJobStatus"]
    if desc["TransformJobStatus"] != "Completed":
        raise LaunchError(f"transform job {job_name} ended {desc['TransformJobStatus']}: "
                           f"{desc.get('FailureReason', 'no reason given')}")
    if download_to is not None:
        result["Outputs"] = [str(p) for p in s3_data.download_prefix(ctx, output_uri, download_to)]
    return result
