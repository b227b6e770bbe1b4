"""The features channel on SageMaker: the extraction job, its reuse, and the jobs that read it.

The flow is :mod:`byoc.tuning.features_flow`'s. Here are its SageMaker parts:

* the extraction job is a plain ``CreateTrainingJob`` on the images with ``task=extract-features`` and
  no Debugger (it trains nothing); SageMaker uploads its ``/opt/ml/model`` as
  ``<output>/<job>/output/model.tar.gz``;
* a trial or final job's ``features`` channel is an ``S3Prefix`` data source on exactly that object:
  SageMaker downloads every object whose key starts with the prefix ("S3DataSource", API reference),
  so the container finds ``/opt/ml/input/data/features/model.tar.gz``, which the trainer unpacks;
* the extraction is recorded in the run's manifest (``aws-resources.json``) with its
  :func:`~byoc.tuning.features_flow.features_key`; a later ``byoc tune`` with the same key reuses the
  job's artifact after ``DescribeTrainingJob`` confirms it completed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace

from byoc.aws import s3_data
from byoc.aws.session import AwsContext
from byoc.aws.training_jobs import TrainingResources
from byoc.tuning.features_flow import CHANNEL

ROLE = "feature-extraction"              # the manifest entry's role
KEEP_CHANNELS = ("pretrained",)          # image-independent channels a features job still gets


def data_version(ctx: AwsContext, channels: Mapping[str, str]) -> str:
    """The dataset's channels and a hash of every object's key, ETag and size under them (a changed,
    added or removed image changes it). A dry run lists nothing, so its version is only the URIs."""
    h = hashlib.sha256()
    for name, uri in sorted(channels.items()):
        h.update(f"{name}={uri}\n".encode())
        if not ctx.is_dry_run:
            for obj in s3_data.iter_objects(ctx, uri):
                h.update(f"{obj['Key']}\0{obj.get('ETag', '')}\0{obj.get('Size', '')}\n".encode())
    return h.hexdigest()


def recorded_extraction(ctx: AwsContext, key: str) -> tuple[str, str] | None:
    """(job name, model.tar.gz URI) of a completed extraction this run recorded under ``key``."""
    if ctx.is_dry_run:
        return None
    for entry in reversed(ctx.manifest.resources):
        if entry.get("kind") != "training_job" or entry.get("features_key") != key:
            continue
        answer = ctx.sagemaker.describe_training_job(TrainingJobName=entry["name"])
        if answer.get("TrainingJobStatus") == "Completed":
            artifacts = answer.get("ModelArtifacts", {}).get("S3ModelArtifacts")
            if artifacts:
                return entry["name"], artifacts
    return None


def on_features(resources: TrainingResources, model_data: str) -> TrainingResources:
    """``resources`` with the features channel in place of the image channels."""
    kept = {name: uri for name, uri in resources.channels.items() if name in KEEP_CHANNELS}
    return replace(resources, channels={CHANNEL: model_data, **kept})


def model_data_uri(output_s3_uri: str, job_name: str) -> str:
    """Where SageMaker puts a training job's ``model.tar.gz`` (OutputDataConfig.S3OutputPath layout)."""
    return s3_data.join_s3(output_s3_uri, job_name, "output", "model.tar.gz")
