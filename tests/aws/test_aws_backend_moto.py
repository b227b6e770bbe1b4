"""The SageMaker backend against moto in server mode (127.0.0.1): S3 data, multi-model endpoint,
TargetModel invocations, batch transform, clean-up. Stubber where moto lacks an operation."""

from __future__ import annotations

import json

import pytest
import requests
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from byoc.aws import batch_transform, cleanup, endpoints, s3_data
from byoc.aws.errors import LaunchError
from byoc.aws.manifest import MANIFEST_FILE, Manifest
from tests.helpers.moto_server import BUCKET, REGION, ROLE


def _record_params(client) -> list[tuple[str, dict]]:
    """Capture (operation, params) of every call a client makes."""
    seen: list[tuple[str, dict]] = []
    client.meta.events.register("before-parameter-build.*.*",
                                lambda params, model, **_: seen.append((model.name, dict(params))))
    return seen


def _folder(tmp_path, n=3):
    d = tmp_path / "images"
    (d / "sub").mkdir(parents=True)
    for i in range(n):
        (d / f"img{i}.jpg").write_bytes(b"\xff\xd8jpeg" + bytes([i]) * 100)
    (d / "sub" / "deep.png").write_bytes(b"\x89PNG" + b"x" * 50)
    (d / ".complete").write_text("ok")  # bookkeeping, never uploaded
    return d


def test_upload_folder_progress_and_resume(ctx, tmp_path, raw_s3):
    folder = _folder(tmp_path)
    progress = []
    dest = f"s3://{BUCKET}/byoc/demo/data/"
    uploaded, skipped = s3_data.upload_folder(ctx, folder, dest, on_progress=lambda d, t: progress.append((d, t)))
    assert (uploaded, skipped) == (4, 0)
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name != ".complete")
    assert progress[-1] == (total, total)
    keys = sorted(o["Key"] for o in raw_s3.list_objects_v2(Bucket=BUCKET)["Contents"])
    assert keys == ["byoc/demo/data/img0.jpg", "byoc/demo/data/img1.jpg", "byoc/demo/data/img2.jpg",
                    "byoc/demo/data/sub/deep.png"]
    # Re-running uploads nothing new; a changed file goes again.
    assert s3_data.upload_folder(ctx, folder, dest) == (0, 4)
    (folder / "img1.jpg").write_bytes(b"changed, longer content" * 10)
    assert s3_data.upload_folder(ctx, folder, dest) == (1, 3)


def test_parse_s3_uri_errors():
    assert s3_data.parse_s3_uri("s3://b/k/x") == ("b", "k/x")
    with pytest.raises(s3_data.S3UriError):
        s3_data.parse_s3_uri("https://b/k")
    with pytest.raises(s3_data.S3UriError):
        s3_data.parse_s3_uri("s3:///k")


def test_multi_model_endpoint_requests_and_state(ctx):
    ep = endpoints.MultiModelEndpoint.for_run(ctx)
    calls = _record_params(ctx.sagemaker)
    desc = endpoints.create_multi_model_endpoint(ctx, ep)
    assert desc["EndpointStatus"] == "InService"
    ops = [op for op, _ in calls]
    # Each name is looked up before it is created (a re-run reuses it: test_aws_rerun.py).
    assert ops[:6] == ["DescribeModel", "CreateModel", "DescribeEndpointConfig", "CreateEndpointConfig",
                       "DescribeEndpoint", "CreateEndpoint"]
    create_model = calls[1][1]
    assert create_model.pop("Tags") == [{"Key": "byoc-run-id", "Value": ctx.manifest.run_id}]
    assert create_model == {
        "ModelName": "byoc-demo-mme",
        "ExecutionRoleArn": ROLE,
        "PrimaryContainer": {
            "Image": ctx.settings.serve_image,
            "ModelDataUrl": f"s3://{BUCKET}/byoc/demo/models/",
            "Mode": "MultiModel",
            "Environment": {"SAGEMAKER_CONTAINER_LOG_LEVEL": "20"},
        },
    }
    # What moto stored is what SageMaker would have received.
    model = ctx.sagemaker.describe_model(ModelName="byoc-demo-mme")
    assert model["PrimaryContainer"]["Mode"] == "MultiModel"
    assert model["PrimaryContainer"]["ModelDataUrl"].endswith("/models/")
    cfg = ctx.sagemaker.describe_endpoint_config(EndpointConfigName="byoc-demo-config")
    variant = cfg["ProductionVariants"][0]
    assert (variant["ModelName"], variant["InstanceType"], variant["InitialInstanceCount"]) == \
        ("byoc-demo-mme", "ml.m5.large", 1)
    manifest = Manifest.load_or_new(ctx.settings.run_dir)
    assert [(r["kind"], r["name"]) for r in manifest.resources] == [
        ("model", "byoc-demo-mme"), ("endpoint_config", "byoc-demo-config"), ("endpoint", "byoc-demo")]


def test_create_endpoint_requires_role_and_image(settings_for):
    from byoc.aws.session import AwsContext
    from byoc.settings import ConfigError

    c = AwsContext.from_settings(settings_for(serve_image=None))
    with pytest.raises(ConfigError, match="serve_image"):
        endpoints.create_multi_model_endpoint(c, endpoints.MultiModelEndpoint.for_run(c))


def test_add_models_and_invoke_with_target_model(ctx, tmp_path, aws_env):
    ep = endpoints.MultiModelEndpoint.for_run(ctx)
    endpoints.create_multi_model_endpoint(ctx, ep)
    tar = tmp_path / "model.tar.gz"
    tar.write_bytes(b"fake tar bytes for S3 only")
    assert endpoints.add_model(ctx, ep, tar, "dogs-v1") == "dogs-v1.tar.gz"
    # A second artifact added by server-side copy from an S3 URI.
    endpoints.add_model(ctx, ep, ep.model_data_prefix + "dogs-v1.tar.gz", "dogs-v2.tar.gz")
    assert sorted(endpoints.list_models(ctx, ep)) == ["dogs-v1.tar.gz", "dogs-v2.tar.gz"]
    body = ctx.s3.get_object(Bucket=BUCKET, Key="byoc/demo/models/dogs-v2.tar.gz")["Body"].read()
    assert body == b"fake tar bytes for S3 only"

    answer = json.dumps({"predictions": [{"label": "Akita", "probability": 0.9}]})
    requests.post(aws_env + "/moto-api/static/sagemaker/endpoint-results", timeout=5, json={
        "region": REGION, "results": [{"Body": answer, "ContentType": "application/json",
                                       "InvokedProductionVariant": "AllTraffic", "CustomAttributes": ""}]})
    calls = _record_params(ctx.runtime)
    # moto's server decodes request bodies as UTF-8, so this test sends a JSON body (the real
    # endpoint also takes application/json); binary image bodies are covered by the local tests.
    body = b'{"instances": [[0, 1], [2, 3]]}'
    ctype, payload = endpoints.invoke(ctx, ep.endpoint_name, body, "application/json",
                                      target_model="dogs-v2", custom_attributes="topk=3")
    assert json.loads(payload) == json.loads(answer)
    assert ctype == "application/json"
    assert calls == [("InvokeEndpoint", {"EndpointName": "byoc-demo", "Body": body,
                                         "ContentType": "application/json", "Accept": "application/json",
                                         "TargetModel": "dogs-v2.tar.gz", "CustomAttributes": "topk=3"})]


def test_a_deployed_model_is_never_overwritten(ctx, tmp_path, raw_s3):
    """AWS, "Add or Remove Models": "To update a model ... Use a new and unique name. Don't overwrite
    model artifacts in Amazon S3" (a loaded model may go on serving the old bytes)."""
    ep = endpoints.MultiModelEndpoint.for_run(ctx)
    first, second = tmp_path / "first.tar.gz", tmp_path / "second.tar.gz"
    first.write_bytes(b"first model bytes")
    second.write_bytes(b"second, different model bytes")
    key = "byoc/demo/models/fashion.tar.gz"
    assert endpoints.add_model(ctx, ep, first, "fashion") == "fashion.tar.gz"
    assert endpoints.add_model(ctx, ep, first, "fashion") == "fashion.tar.gz"    # same bytes: a no-op
    with pytest.raises(LaunchError, match="already exists .* never replaced in place.*--name fashion-v2"):
        endpoints.add_model(ctx, ep, second, "fashion")
    assert raw_s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"first model bytes"
    assert endpoints.add_model(ctx, ep, second, "fashion-v2") == "fashion-v2.tar.gz"
    with pytest.raises(LaunchError, match="--name fashion-v3"):
        endpoints.add_model(ctx, ep, second, "fashion")
    # From S3 (server-side copy): the same source again is a no-op, other bytes are refused.
    src = ep.model_data_prefix + "fashion-v2.tar.gz"
    assert endpoints.add_model(ctx, ep, src, "dogs") == "dogs.tar.gz"
    assert endpoints.add_model(ctx, ep, src, "dogs") == "dogs.tar.gz"
    with pytest.raises(LaunchError, match="already exists"):
        endpoints.add_model(ctx, ep, ep.model_data_prefix + "fashion.tar.gz", "dogs")
    # An artifact someone else put there (no byoc metadata) is not ours to replace either.
    raw_s3.put_object(Bucket=BUCKET, Key="byoc/demo/models/theirs.tar.gz", Body=b"first model bytes")
    with pytest.raises(LaunchError, match="already exists"):
        endpoints.add_model(ctx, ep, first, "theirs")


def test_write_once_puts_are_conditional(ctx, tmp_path):
    """The upload itself is a conditional write (If-None-Match: *), so a concurrent deploy that
    slipped in after the existence check still cannot be overwritten."""
    f = tmp_path / "a.tar.gz"
    f.write_bytes(b"a")
    dest = f"s3://{BUCKET}/byoc/demo/models/a.tar.gz"
    s3_data.put_new_file(ctx, f, dest)
    with pytest.raises(s3_data.ObjectExistsError, match="already exists"):
        s3_data.put_new_file(ctx, f, dest)


def test_add_model_missing_file_is_clear(ctx, tmp_path):
    ep = endpoints.MultiModelEndpoint.for_run(ctx)
    with pytest.raises(FileNotFoundError, match="byoc package"):
        endpoints.add_model(ctx, ep, tmp_path / "nope.tar.gz", "x")


def test_batch_transform_job_request(ctx, tmp_path):
    folder = _folder(tmp_path)
    calls = _record_params(ctx.sagemaker)
    model_data = f"s3://{BUCKET}/byoc/demo/models/dogs-v1.tar.gz"
    result = batch_transform.run_transform_job(ctx, "dogs", model_data, folder, "application/x-image",
                                               max_payload_mb=2)
    assert result["TransformJobStatus"] == "Completed"
    ops = dict(calls)
    assert ops["CreateModel"]["PrimaryContainer"] == {"Image": ctx.settings.serve_image,
                                                      "ModelDataUrl": model_data, "Mode": "SingleModel"}
    req = ops["CreateTransformJob"]
    assert req["ModelName"] == "byoc-demo-batch-dogs"
    assert req["TransformInput"] == {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": result["InputUri"]}},
        "ContentType": "application/x-image", "SplitType": "None", "CompressionType": "None"}
    assert req["TransformOutput"] == {"S3OutputPath": result["OutputUri"], "Accept": "application/json",
                                      "AssembleWith": "None"}
    assert (req["BatchStrategy"], req["MaxPayloadInMB"]) == ("SingleRecord", 2)
    desc = ctx.sagemaker.describe_transform_job(TransformJobName=result["TransformJobName"])
    assert desc["TransformInput"]["SplitType"] == "None"
    assert desc["TransformOutput"]["AssembleWith"] == "None"
    # The inputs went to S3 under the run prefix.
    keys = [o["Key"] for o in s3_data.iter_objects(ctx, result["InputUri"])]
    assert len(keys) == 4


def test_transform_request_validation():
    with pytest.raises(LaunchError, match="batch_strategy"):
        batch_transform.transform_request("j", "m", "s3://b/i/", "s3://b/o/", "image/png", batch_strategy="Whole")
    with pytest.raises(LaunchError, match="max_payload_mb"):
        batch_transform.transform_request("j", "m", "s3://b/i/", "s3://b/o/", "image/png", max_payload_mb=0)
    with pytest.raises(LaunchError, match="invalid SageMaker"):
        batch_transform.transform_request("bad_name!", "m", "s3://b/i/", "s3://b/o/", "image/png")


def test_download_prefix_keeps_out_names(ctx, tmp_path, raw_s3):
    for name in ("a.jpg.out", "sub/b.png.out"):
        raw_s3.put_object(Bucket=BUCKET, Key=f"byoc/demo/batch/out/{name}", Body=b'{"label": "x"}')
    got = s3_data.download_prefix(ctx, f"s3://{BUCKET}/byoc/demo/batch/out/", tmp_path / "dl")
    assert sorted(p.relative_to(tmp_path / "dl").as_posix() for p in got) == ["a.jpg.out", "sub/b.png.out"]


def test_cleanup_deletes_everything_created(ctx, tmp_path, raw_s3):
    ep = endpoints.MultiModelEndpoint.for_run(ctx)
    endpoints.create_multi_model_endpoint(ctx, ep)
    tar = tmp_path / "model.tar.gz"
    tar.write_bytes(b"x")
    endpoints.add_model(ctx, ep, tar, "m1")
    batch_transform.run_transform_job(ctx, "b1", ep.model_data_prefix + "m1.tar.gz", _folder(tmp_path),
                                      "image/jpeg")
    # An object of someone else, outside the run prefix, must survive.
    raw_s3.put_object(Bucket=BUCKET, Key="other/keep.txt", Body=b"keep")
    assert (tmp_path / "runs" / "demo" / MANIFEST_FILE).is_file()

    done = cleanup.cleanup(ctx, log=lambda *_: None)
    assert done["endpoint"] == ["byoc-demo"]
    assert sorted(done["model"]) == ["byoc-demo-batch-b1", "byoc-demo-mme"]
    sm = ctx.sagemaker
    for call, kw in ((sm.describe_endpoint, {"EndpointName": "byoc-demo"}),
                     (sm.describe_endpoint_config, {"EndpointConfigName": "byoc-demo-config"}),
                     (sm.describe_model, {"ModelName": "byoc-demo-mme"})):
        with pytest.raises(ClientError):
            call(**kw)
    keys = [o["Key"] for o in raw_s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert keys == ["other/keep.txt"]
    assert Manifest.load_or_new(ctx.settings.run_dir).resources == []
    # Idempotent: a second clean-up finds nothing to do and does not fail.
    assert cleanup.cleanup(ctx, log=lambda *_: None) == {}


def test_cleanup_tolerates_resources_already_gone(ctx):
    ctx.manifest.add("endpoint", "byoc-gone")
    ctx.manifest.add("model", "byoc-gone-model")
    done = cleanup.cleanup(ctx, log=lambda *_: None)
    assert done == {"endpoint": ["byoc-gone"], "model": ["byoc-gone-model"]}


def test_cleanup_stops_running_transform_job_stubbed(ctx):
    """moto has no StopTransformJob; the Stubber asserts the exact request instead."""
    ctx.manifest.add("transform_job", "byoc-demo-b1")
    with Stubber(ctx.sagemaker) as stub:
        stub.add_response("describe_transform_job", {
            "TransformJobName": "byoc-demo-b1", "TransformJobArn": "arn:aws:sagemaker:eu-west-1:1:transform-job/x",
            "TransformJobStatus": "InProgress", "ModelName": "m", "CreationTime": "2026-01-01T00:00:00Z",
            "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/i"}}},
            "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1}},
            {"TransformJobName": "byoc-demo-b1"})
        stub.add_response("stop_transform_job", {}, {"TransformJobName": "byoc-demo-b1"})
        cleanup.cleanup(ctx, log=lambda *_: None)
        stub.assert_no_pending_responses()
