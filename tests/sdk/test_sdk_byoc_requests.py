"""The requests `byoc --backend sagemaker` builds, executed and not only accepted: the SageMaker Python
SDK's local-mode client (sagemaker.local.LocalSagemakerClient) takes the same request shapes as
SageMaker and runs them on the real images, with S3 on moto.

Executed here: CreateTrainingJob (byoc.aws.training_jobs.build_training_job_request), CreateModel
(byoc.aws.batch_transform.create_batch_model), CreateEndpointConfig and CreateEndpoint (as `byoc serve`
builds them), InvokeEndpoint (byoc.aws.endpoints.invoke) and CreateTransformJob
(byoc.aws.batch_transform.transform_request).

Not executable this way, and why (their requests stay checked against moto in tests/aws and
tests/sdk/test_sdk_moto.py):

* CreateHyperParameterTuningJob: local mode has no tuning (LocalSagemakerClient has no such method).
* A multi-model endpoint (CreateModel with Mode=MultiModel, InvokeEndpoint with TargetModel): local mode
  ignores Mode, mounts ModelDataUrl at /opt/ml/model, sets no SAGEMAKER_MULTI_MODEL and never loads a
  TargetModel, so `byoc serve`'s endpoint config and endpoint run here in front of byoc's single model.
* Debugger and profiler rules, spot and checkpoint fields: accepted and ignored by local mode.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from byoc.aws import batch_transform, endpoints
from byoc.aws import training_jobs as tj
from byoc.aws.session import AwsContext
from byoc.cli import main
from byoc.settings import load_settings
from tests.helpers.moto_server import BUCKET, REGION, ROLE
from tests.sdk.conftest import CLASSES, HYPERPARAMETERS, LABELS

pytestmark = [pytest.mark.slow, pytest.mark.container]


def _local_client(session):
    """LocalSagemakerClient, with the one field local mode needs and SageMaker does not: local mode reads
    PrimaryContainer["Environment"] unconditionally (sagemaker/local/entities.py, _LocalEndpoint.serve
    and _LocalTransformJob), while CreateModel makes it optional and byoc's batch model sends none."""
    from sagemaker.local.local_session import LocalSagemakerClient

    class Client(LocalSagemakerClient):
        def create_model(self, ModelName, PrimaryContainer, *args, **kwargs):  # noqa: N803 (boto names)
            return super().create_model(ModelName, {"Environment": {}, **PrimaryContainer}, *args, **kwargs)

    return Client(session)


@pytest.fixture(scope="module")
def ctx(session, serve_image, train_image, tmp_path_factory):
    """byoc's AwsContext whose SageMaker and runtime clients are the SDK's local-mode ones; S3 on moto."""
    run_dir = tmp_path_factory.mktemp("byoc-run")
    settings = load_settings(overrides=dict(backend="sagemaker", region=REGION, role_arn=ROLE, bucket=BUCKET,
                                            prefix="byoc", serve_image=serve_image, train_image=train_image,
                                            run_dir=str(run_dir), endpoint_url=session.s3_endpoint_url),
                             environ={})
    context = AwsContext.from_settings(settings)
    session.sagemaker_client = _local_client(session)
    context.__dict__["sagemaker"] = session.sagemaker_client         # cached_property slots
    context.__dict__["runtime"] = session.sagemaker_runtime_client
    return context


def _serve_requests(ctx, capsys) -> dict[str, dict]:
    s = ctx.settings
    assert main(["serve", "--backend", "sagemaker", "--region", REGION, "--role-arn", ROLE, "--bucket", BUCKET,
                 "--serve-image", s.serve_image, "--run-dir", str(Path(s.run_dir) / "dry"),
                 "--aws-endpoint-url", s.endpoint_url, "--dry-run"]) == 0
    lines = [line.split(" ", 2) for line in capsys.readouterr().out.splitlines() if line.startswith("DRY-RUN ")]
    return {op: json.loads(params) for _, op, params in lines}


def _keys(s3, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


def test_byoc_requests_run_on_the_images(ctx, data_uris, dataset, s3, capsys):
    # CreateTrainingJob: the artifact lands where OutputDataConfig says, as SageMaker lays it out.
    resources = tj.TrainingResources(
        image_uri=ctx.settings.train_image, role_arn=ROLE, output_s3_uri=f"s3://{BUCKET}/byoc/jobs",
        channels={"training": data_uris["train"], "validation": data_uris["valid"], "test": data_uris["test"]},
        instance_type="ml.m5.large")
    request = tj.build_training_job_request("byoc-proof-train", HYPERPARAMETERS, resources)
    ctx.sagemaker.create_training_job(**request)
    job = ctx.sagemaker.describe_training_job("byoc-proof-train")
    model_data = f"{request['OutputDataConfig']['S3OutputPath']}/byoc-proof-train/output/model.tar.gz"
    assert (job["TrainingJobStatus"], job["ModelArtifacts"]["S3ModelArtifacts"]) == ("Completed", model_data)
    assert "byoc/jobs/byoc-proof-train/output/model.tar.gz" in _keys(s3, "byoc/jobs/")

    # CreateModel as `byoc batch` sends it; CreateEndpointConfig and CreateEndpoint as `byoc serve` builds
    # them, in front of that single model (see the module docstring for multi-model).
    model_name = batch_transform.create_batch_model(ctx, "proof", model_data)
    served = _serve_requests(ctx, capsys)
    config = served["sagemaker.CreateEndpointConfig"]
    config["ProductionVariants"][0]["ModelName"] = model_name
    ctx.sagemaker.create_endpoint_config(**config)
    ctx.sagemaker.create_endpoint(**served["sagemaker.CreateEndpoint"])
    name = served["sagemaker.CreateEndpoint"]["EndpointName"]
    try:
        assert ctx.sagemaker.describe_endpoint(name)["EndpointStatus"] == "InService"
        jpeg = sorted((dataset / "test").rglob("*.jpg"))[0].read_bytes()
        content_type, body = endpoints.invoke(ctx, name, jpeg, "image/jpeg", custom_attributes="topk=2")
        assert json.loads(body)["predictions"][0]["label"] in LABELS
        assert len(json.loads(body)["predictions"][0]["top_k"]) == 2
    finally:
        ctx.sagemaker.delete_endpoint(name)

    # CreateTransformJob: one .out per input object under the output path (local mode adds the job name
    # as a folder, sagemaker/local/utils.py move_to_destination; SageMaker writes <output>/<key>.out).
    output_uri = f"s3://{BUCKET}/byoc/batch/proof/output/"
    ctx.sagemaker.create_transform_job(**batch_transform.transform_request(
        "byoc-proof-batch", model_name, data_uris["batch"], output_uri, "image/jpeg"))
    assert ctx.sagemaker.describe_transform_job("byoc-proof-batch")["TransformJobStatus"] == "Completed"
    outputs = _keys(s3, "byoc/batch/proof/output/")
    assert len(outputs) == len(CLASSES) * 2 and all(k.endswith(".jpg.out") for k in outputs), outputs
