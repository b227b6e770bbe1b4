"""The SageMaker backend of ``byoc`` (boto3; ``--dry-run`` prints the requests instead of sending
them). Same function names as :mod:`scripts.local_backend`.

S3 layout of a run (``s3://BUCKET/PREFIX/<run>/``)::

    data/{train,valid,test}/...      the dataset (byoc data)
    jobs/<job>/output/model.tar.gz   training job outputs (SageMaker's layout)
    models/<name>.tar.gz             the multi-model endpoint's artifacts (TargetModel=<name>.tar.gz)
    batch/<name>/input|output-*/     batch transform inputs and <input>.out answers
"""

from __future__ import annotations

import json
from pathlib import Path

from scripts import datasets
from scripts.aws import batch_transform, endpoints, s3_data
from scripts.aws.session import AwsContext
from scripts.config import Settings
from scripts.progress import console, progress_bar


def context(settings: Settings) -> AwsContext:
    return AwsContext.from_settings(settings)


def data_uri(settings: Settings) -> str:
    return s3_data.join_s3(settings.s3_run_prefix, "data") + "/"


def data(settings: Settings, source: str, dest: str | None = None, **kwargs) -> datasets.DatasetSummary:
    """Prepare the dataset locally (as the local backend does), then upload it under the run prefix."""
    from scripts import local_backend

    summary = local_backend.data(settings, source, dest, **kwargs)
    ctx = context(settings)
    dest_uri = data_uri(settings)
    with progress_bar(f"upload to {dest_uri}", unit="bytes") as update:
        uploaded, skipped = s3_data.upload_folder(ctx, summary.root, dest_uri, on_progress=update)
    ctx.record("s3_prefix", settings.s3_run_prefix)
    summary.note = (summary.note + "; " if summary.note else "") + \
        f"uploaded {uploaded} files ({skipped} already there) to {dest_uri}"
    return summary


# ---- tuning and training -----------------------------------------------------------------------

def _resources(settings: Settings, data: str):
    from scripts.aws.sagemaker_training import DEFAULT_CHANNEL_FOLDERS, TrainingResources

    settings.require("role_arn", "bucket", "train_image")
    root = (data or data_uri(settings)).rstrip("/")
    if not root.startswith("s3://"):
        raise s3_data.S3UriError(f"on SageMaker --data must be an s3:// prefix (upload with `byoc data "
                                 f"--backend sagemaker`), got {data!r}")
    channels = {name: f"{root}/{folder}/" for name, folder in DEFAULT_CHANNEL_FOLDERS.items()}
    return TrainingResources(image_uri=settings.train_image, role_arn=settings.role_arn, channels=channels,
                             output_s3_uri=s3_data.join_s3(settings.s3_run_prefix, "jobs"),
                             instance_type=settings.train_instance_type)


def tune(settings: Settings, data: str, spec_path: str, max_jobs: int | None = None,
         max_parallel_jobs: int | None = None, static: dict | None = None, out_dir: str | None = None) -> dict:
    from scripts.aws import sagemaker_training as st
    from scripts.tuning.spec import load_spec

    ctx = context(settings)
    spec = load_spec(spec_path).with_overrides(max_jobs=max_jobs, max_parallel_jobs=max_parallel_jobs,
                                               static=static or None)
    name = st.unique_job_name(f"byoc-{settings.run_name}", 32)
    request = st.build_tuning_job_request(spec, name, _resources(settings, data))
    st.send_tuning_job(ctx.sagemaker, request)
    ctx.record("tuning_job", name)
    ctx.record("s3_prefix", settings.s3_run_prefix)
    result = {"tuning_job": name}
    if ctx.is_dry_run or not settings.wait:
        return result
    answer = st.wait_for_tuning_job(ctx.sagemaker, name, poll_s=60,
                                    on_status=lambda a: console.print(f"{name}: {a['HyperParameterTuningJobStatus']}"))
    best = st.best_training_job(answer)
    hps = st.final_hyperparameters(spec, best)
    out = Path(out_dir) if out_dir else Path(settings.run_dir) / "tune"
    out.mkdir(parents=True, exist_ok=True)
    # Same layout as the local tuner's file (scripts.tuning.leaderboard), so `byoc train
    # --from-tuning` reads either.
    (out / "best_hyperparameters.json").write_text(json.dumps({
        "objective": {"metric": spec.objective.metric, "direction": spec.objective.direction,
                      "value": best.objective_value},
        "training_job": best.training_job_name, "tuned": best.tuned_hyperparameters, "hyperparameters": hps,
    }, indent=1))
    result.update(best_training_job=best.training_job_name, best_value=best.objective_value,
                  best_hyperparameters=hps, out_dir=str(out))
    return result


def train(settings: Settings, data: str, hyperparameters: dict, job_dir: str | None = None, **_) -> dict:
    """CreateTrainingJob with the Debugger hook, built-in rules and the profiler report."""
    from scripts.aws import sagemaker_training as st

    ctx = context(settings)
    name = st.unique_job_name(f"byoc-{settings.run_name}-train", 63)
    request = st.build_training_job_request(name, hyperparameters, _resources(settings, data),
                                            st.DebuggerSettings(region=ctx.region))
    st.send_training_job(ctx.sagemaker, request)
    ctx.record("training_job", name)
    ctx.record("s3_prefix", settings.s3_run_prefix)
    result = {"training_job": name}
    if ctx.is_dry_run or not settings.wait:
        return result
    final = st.wait_for_training_job(ctx.sagemaker, name, poll_s=60,
                                     on_status=lambda a: console.print(f"{name}: {a['TrainingJobStatus']}"))
    result.update(status=final["TrainingJobStatus"],
                  model_data=final.get("ModelArtifacts", {}).get("S3ModelArtifacts"),
                  failure_reason=final.get("FailureReason"))
    if final["TrainingJobStatus"] != "Completed":
        raise st.LaunchError(f"training job {name} ended {final['TrainingJobStatus']}: "
                             f"{final.get('FailureReason', 'no reason given')}")
    return result


def report(settings: Settings, job_dir: str) -> dict:
    """Rule statuses of a SageMaker training job (``--job-dir`` is its name) and its profiler
    report downloaded next to the run dir when the ProfilerReport rule has written it."""
    ctx = context(settings)
    desc = ctx.sagemaker.describe_training_job(TrainingJobName=job_dir)
    rules = {r["RuleConfigurationName"]: r.get("RuleEvaluationStatus")
             for r in desc.get("DebugRuleEvaluationStatuses", []) + desc.get("ProfilerRuleEvaluationStatuses", [])}
    result: dict = {"training_job": job_dir, "rules": rules}
    output = desc.get("OutputDataConfig", {}).get("S3OutputPath")
    if output:
        prefix = s3_data.join_s3(output, job_dir, "rule-output") + "/"
        for obj in s3_data.iter_objects(ctx, prefix):
            if obj["Key"].endswith("profiler-output/profiler-report.html"):
                dest = Path(settings.run_dir) / f"{job_dir}-profiler-report.html"
                bucket, _ = s3_data.parse_s3_uri(prefix)
                dest.parent.mkdir(parents=True, exist_ok=True)
                ctx.s3.download_file(bucket, obj["Key"], str(dest))
                result["profiler_report"] = str(dest)
    return result


# ---- multi-model endpoint -----------------------------------------------------------------------

def serve(settings: Settings, **_) -> int:
    ctx = context(settings)
    ep = endpoints.MultiModelEndpoint.for_run(ctx)
    desc = endpoints.create_multi_model_endpoint(ctx, ep)
    console.print(f"endpoint {ep.endpoint_name}: {desc.get('EndpointStatus')}; models go under "
                  f"{ep.model_data_prefix}")
    return 0


def deploy(settings: Settings, artifact: str, name: str, **_) -> str:
    ctx = context(settings)
    return endpoints.add_model(ctx, endpoints.MultiModelEndpoint.for_run(ctx), artifact, name)


def _attrs(topk: int | None = None, explain: bool = False) -> str | None:
    from container_serve.content_types import format_custom_attributes

    return format_custom_attributes(topk=topk, explain="gradcam" if explain else None) or None


def invoke(settings: Settings, image: str, target_model: str | None, content_type: str | None, accept: str,
           topk: int | None, explain: bool, **_) -> tuple[str, bytes]:
    from scripts.endpoint_client import content_type_for

    ctx = context(settings)
    ep = endpoints.MultiModelEndpoint.for_run(ctx)
    return endpoints.invoke(ctx, ep.endpoint_name, Path(image).read_bytes(), content_type or content_type_for(image),
                            accept, target_model, _attrs(topk, explain))


def explain(settings: Settings, image: str, target_model: str | None, content_type: str | None, output: str,
            **_) -> dict:
    from scripts.endpoint_client import write_gradcam_png

    _, body = invoke(settings, image, target_model, content_type, "application/json", None, True)
    if not body:  # dry run
        return {"label": None}
    return write_gradcam_png(json.loads(body), output)


def batch(settings: Settings, input_dir: str, output_dir: str, target_model: str | None, model_data: str | None,
          content_type: str | None, accept: str, max_payload_mb: int, **_) -> dict:
    ctx = context(settings)
    if not model_data:
        if not target_model:
            raise s3_data.S3UriError("batch on SageMaker needs --model-data s3://.../model.tar.gz or "
                                     "--target-model NAME of a deployed model")
        model_data = endpoints.MultiModelEndpoint.for_run(ctx).model_data_prefix + \
            endpoints.target_model_name(target_model)
    name = (target_model or "model").removesuffix(".tar.gz")
    ctype = content_type or "application/x-image"
    result = batch_transform.run_transform_job(ctx, name, model_data, input_dir, ctype, accept,
                                               download_to=output_dir, max_payload_mb=max_payload_mb)
    return {"outputs": result["Outputs"], "failures": {}, "transform_job": result["TransformJobName"]}


def cleanup(settings: Settings, keep_data: bool = False) -> int:
    from scripts.aws.cleanup import cleanup as run_cleanup

    ctx = context(settings)
    done = run_cleanup(ctx, keep_data=keep_data, log=console.print)
    console.print(f"cleaned up: {json.dumps(done)}" if done else "nothing recorded to clean up")
    return 0
