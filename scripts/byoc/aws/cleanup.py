"""Delete what a run created on AWS, from its manifest (``<run dir>/aws-resources.json``).

Order matters: endpoint first (it holds the config), then endpoint configs, then models, then
the S3 objects under the run prefix. Jobs still running are stopped (their outputs go with the
prefix). Already-deleted resources are not an error, so cleanup can be re-run.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from byoc.aws import s3_data
from byoc.aws.ownership import owned_elsewhere
from byoc.aws.session import AwsContext


def _ignore_missing(fn, *args, **kwargs) -> bool:
    """Run a delete call; False (no error) when the resource is already gone.

    SageMaker answers a delete of a missing resource with ``ValidationException: Could not find ...``.
    """
    try:
        fn(*args, **kwargs)
        return True
    except ClientError as e:
        err = e.response.get("Error", {})
        if err.get("Code") == "ValidationException" and "could not find" in err.get("Message", "").lower():
            return False
        raise


def delete_endpoint_stack(ctx: AwsContext, endpoint: str | None = None, config: str | None = None,
                          model: str | None = None) -> None:
    sm = ctx.sagemaker
    if endpoint and _ignore_missing(sm.delete_endpoint, EndpointName=endpoint) and not ctx.is_dry_run:
        sm.get_waiter("endpoint_deleted").wait(EndpointName=endpoint, WaiterConfig={"Delay": 15, "MaxAttempts": 80})
    if config:
        _ignore_missing(sm.delete_endpoint_config, EndpointConfigName=config)
    if model:
        _ignore_missing(sm.delete_model, ModelName=model)


def _stop_if_running(ctx: AwsContext, kind: str, name: str) -> None:
    sm = ctx.sagemaker
    describe, stop, key, status = {
        "training_job": (sm.describe_training_job, sm.stop_training_job, "TrainingJobName", "TrainingJobStatus"),
        "tuning_job": (sm.describe_hyper_parameter_tuning_job, sm.stop_hyper_parameter_tuning_job,
                       "HyperParameterTuningJobName", "HyperParameterTuningJobStatus"),
        "transform_job": (sm.describe_transform_job, sm.stop_transform_job, "TransformJobName",
                          "TransformJobStatus"),
    }[kind]
    try:
        state = describe(**{key: name}).get(status)
    except ClientError:
        return
    if state == "InProgress":
        stop(**{key: name})


def cleanup(ctx: AwsContext, keep_data: bool = False, log=print) -> dict[str, list[str]]:
    """Delete everything in the manifest; returns what was deleted by kind. A model, endpoint config or
    endpoint tagged with another run's id (the name was taken over since) is left alone and said so."""
    m = ctx.manifest
    done: dict[str, list[str]] = {}
    for kind in ("endpoint", "endpoint_config", "model"):
        for name in m.names(kind):
            owner = owned_elsewhere(ctx, kind, name)
            if owner:
                log(f"leaving {kind.replace('_', ' ')} {name} alone: it belongs to run {owner}, not this one")
                m.remove(kind, name)
    for kind in ("tuning_job", "training_job", "transform_job"):
        for name in m.names(kind):
            _stop_if_running(ctx, kind, name)
            m.remove(kind, name)
            done.setdefault(kind, []).append(name)
    for name in m.names("endpoint"):
        log(f"deleting endpoint {name}")
        delete_endpoint_stack(ctx, endpoint=name)
        m.remove("endpoint", name)
        done.setdefault("endpoint", []).append(name)
    for name in m.names("endpoint_config"):
        log(f"deleting endpoint config {name}")
        delete_endpoint_stack(ctx, config=name)
        m.remove("endpoint_config", name)
        done.setdefault("endpoint_config", []).append(name)
    for name in m.names("model"):
        log(f"deleting model {name}")
        delete_endpoint_stack(ctx, model=name)
        m.remove("model", name)
        done.setdefault("model", []).append(name)
    if not keep_data:
        for uri in m.names("s3_prefix"):
            n = s3_data.delete_prefix(ctx, uri)
            log(f"deleted {n} objects under {uri}")
            m.remove("s3_prefix", uri)
            done.setdefault("s3_prefix", []).append(uri)
    if not ctx.is_dry_run:
        m.save()
    return done
