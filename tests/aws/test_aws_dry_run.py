"""--dry-run prints every AWS request and sends none."""

from __future__ import annotations

import io
import json
import socket

import pytest
from botocore.exceptions import ParamValidationError

from byoc.aws import batch_transform, cleanup, endpoints, s3_data
from byoc.aws.dry_run import DryRun
from byoc.aws.session import AwsContext
from tests.helpers.moto_server import BUCKET


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def _dry_ctx(settings_for, **over) -> tuple[AwsContext, io.StringIO]:
    out = io.StringIO()
    ctx = AwsContext.from_settings(settings_for(dry_run=True, **over))
    ctx.dry_run.stream = out
    return ctx, out


def _everything(ctx, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"\xff\xd8" + b"a" * 10)
    tar = tmp_path / "model.tar.gz"
    tar.write_bytes(b"t")
    ep = endpoints.MultiModelEndpoint.for_run(ctx)
    s3_data.upload_folder(ctx, folder, f"s3://{BUCKET}/byoc/demo/data/")
    endpoints.create_multi_model_endpoint(ctx, ep)
    endpoints.add_model(ctx, ep, tar, "m1")
    endpoints.invoke(ctx, ep.endpoint_name, b"\xff\xd8", "image/jpeg", target_model="m1")
    batch_transform.run_transform_job(ctx, "b1", ep.model_data_prefix + "m1.tar.gz", folder, "image/jpeg")
    ctx.manifest.add("endpoint", ep.endpoint_name)
    ctx.manifest.add("s3_prefix", ctx.settings.s3_run_prefix)
    cleanup.cleanup(ctx, log=lambda *_: None)


def test_dry_run_sends_nothing_even_with_unreachable_endpoint(settings_for, tmp_path, monkeypatch):
    # No credentials at all and nothing listening: a real send would fail loudly.
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    ctx, out = _dry_ctx(settings_for, endpoint_url=f"http://127.0.0.1:{_closed_port()}")
    sent = []
    for client in (ctx.s3, ctx.sagemaker, ctx.runtime):
        client.meta.events.register("before-send.*.*", lambda request, **_: sent.append(request.url))
    _everything(ctx, tmp_path)
    assert sent == []
    ops = ctx.dry_run.operations()
    for op in ("s3.PutObject", "sagemaker.CreateModel", "sagemaker.CreateEndpointConfig",
               "sagemaker.CreateEndpoint", "sagemaker-runtime.InvokeEndpoint", "sagemaker.CreateTransformJob",
               "sagemaker.DeleteEndpoint", "s3.ListObjectsV2"):
        assert op in ops, (op, ops)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(ops)
    create_model = next(json.loads(line.split(" ", 2)[2]) for line in lines
                        if line.startswith("DRY-RUN sagemaker.CreateModel "))
    assert create_model["PrimaryContainer"]["Mode"] == "MultiModel"
    put = next(line for line in lines if line.startswith("DRY-RUN s3.PutObject "))
    assert "<file " in put and "Body" in put
    # Nothing was created, so nothing is recorded for clean-up.
    assert ctx.manifest.names("model") == []


def test_dry_run_against_moto_leaves_it_untouched(settings_for, tmp_path, raw_s3):
    raw_s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    ctx, _ = _dry_ctx(settings_for)
    _everything(ctx, tmp_path)
    live = AwsContext.from_settings(settings_for())
    assert live.sagemaker.list_models()["Models"] == []
    assert live.sagemaker.list_endpoints()["Endpoints"] == []
    assert "Contents" not in raw_s3.list_objects_v2(Bucket=BUCKET)


def test_dry_run_still_validates_parameters(settings_for):
    ctx, out = _dry_ctx(settings_for)
    with pytest.raises(ParamValidationError):
        ctx.sagemaker.create_endpoint(EndpointName="x")  # EndpointConfigName missing
    assert out.getvalue() == ""


def test_dry_run_object_records_without_context():
    dr = DryRun(stream=io.StringIO())
    import boto3

    c = boto3.session.Session().client("sagemaker", region_name="eu-west-1",
                                       aws_access_key_id="x", aws_secret_access_key="y")
    dr.attach(c)
    assert c.delete_model(ModelName="m")["ResponseMetadata"]["DryRun"] is True
    assert dr.operations() == ["sagemaker.DeleteModel"]


def test_a_dry_run_upload_is_one_line_per_channel_and_uploads_nothing(settings_for, tmp_path):
    """Issue 24 item 10: the demo's 16,820 PutObject lines become one line per channel, with the count."""
    root = tmp_path / "data"
    for split, n in (("train", 40), ("valid", 10), ("test", 10)):
        for i in range(n):
            (root / split / "001.a").mkdir(parents=True, exist_ok=True)
            (root / split / "001.a" / f"{i}.jpg").write_bytes(b"\xff\xd8" + bytes(i))
    (root / ".complete").write_text("")                       # bookkeeping: never uploaded
    ctx, out = _dry_ctx(settings_for)
    assert s3_data.upload_folder(ctx, root, f"s3://{BUCKET}/byoc/demo/data/") == (0, 0)
    lines = [line for line in out.getvalue().splitlines() if "s3.upload_file" in line]
    assert [json.loads(line.split(" ", 2)[2]) for line in lines] == [
        {"files": n, "bytes": sum(2 + i for i in range(n)), "from": str(root / split),
         "to": f"s3://{BUCKET}/byoc/demo/data/{split}/"} for split, n in (("test", 10), ("train", 40), ("valid", 10))]
    assert "s3.PutObject" not in ctx.dry_run.operations()
