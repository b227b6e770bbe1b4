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

from pathlib import Path

from byoc.aws import ownership, s3_data
from byoc.aws.endpoints import check_name
from byoc.aws.errors import LaunchError
from byoc.aws.instance_types import check_amd64_instance_type
from byoc.aws.session import AwsContext
from byoc.aws.training_jobs import unique_job_name
from byoc.console import progress_console
from byoc.tuning.features_flow import folder_version
from container_serve import content_types as ct

BATCH_STRATEGIES = ("SingleRecord", "MultiRecord")


def create_batch_model(ctx: AwsContext, name: str, model_data: str, image_uri: str | None = None) -> str:
    """CreateModel (single model) for a transform job, or this run's same one again
    (:func:`byoc.aws.ownership.ensure`); returns the model name."""
    s = ctx.settings
    s.require("role_arn")
    image_uri = image_uri or s.serve_image
    if not image_uri:
        s.require("serve_image")
    return ownership.ensure(ctx, ownership.MODEL, check_name(f"byoc-{s.run_name}-batch-{name}", "model"), {
        "ExecutionRoleArn": s.role_arn,
        "PrimaryContainer": {"Image": image_uri, "ModelDataUrl": model_data, "Mode": "SingleModel"},
    }, lambda n: check_name(n, "model"), progress_console.print)


def transform_request(job_name: str, model_name: str, input_uri: str, output_uri: str, content_type: str,
                      accept: str = ct.JSON, instance_type: str = "ml.m5.large",
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
                      content_type: str, accept: str = ct.JSON, download_to: str | Path | None = None,
                      batch_strategy: str = "SingleRecord", max_payload_mb: int = 6,
                      wait: bool | None = None) -> dict:
    """Upload ``input_folder``, create the model and the transform job, wait, download the ``.out``s."""
    s = ctx.settings
    check_amd64_instance_type(s.transform_instance_type, "transform_instance_type")   # before any request
    # The input prefix is named after the folder's contents: a re-run with the same folder uploads
    # nothing and transforms the same objects; a changed folder gets a prefix of its own, so no file
    # of an earlier run is transformed again.
    version = folder_version(input_folder)[:12] if Path(input_folder).is_dir() else "missing"
    input_uri = s3_data.join_s3(s.s3_run_prefix, "batch", name, f"input-{version}") + "/"
    s3_data.upload_folder(ctx, input_folder, input_uri)
    ctx.record("s3_prefix", s.s3_run_prefix)
    model_name = create_batch_model(ctx, name, model_data)
    job_name = unique_job_name(f"byoc-{s.run_name}-{name}", 63)
    output_uri = s3_data.join_s3(s.s3_run_prefix, "batch", name, f"output-{job_name}") + "/"
    req = transform_request(job_name, model_name, input_uri, output_uri, content_type, accept,
                            instance_type=s.transform_instance_type, batch_strategy=batch_strategy,
                            max_payload_mb=max_payload_mb)
    ctx.sagemaker.create_transform_job(**req, Tags=ownership.run_tags(ctx))
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
