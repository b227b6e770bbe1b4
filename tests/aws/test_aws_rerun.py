"""Issue 24 item 2: `byoc serve` and `byoc batch` run again for the same run reuse what they made when it is
the same, make new names when it is not, and never touch another run's resources (moto server on
127.0.0.1; resources tagged with the manifest's run id)."""

from __future__ import annotations

import pytest

from byoc.aws import batch_transform, cleanup, endpoints, ownership
from byoc.aws.errors import LaunchError
from byoc.aws.session import AwsContext
from tests.aws.test_aws_backend_moto import _folder, _record_params
from tests.helpers.moto_server import BUCKET

MODEL_DATA = f"s3://{BUCKET}/byoc/demo/models/dogs-v1.tar.gz"


def _creates(calls) -> list[str]:
    return [op for op, _ in calls if op.startswith(("Create", "Update", "Delete"))]


def _answer_update_endpoint(client) -> None:
    """moto 5.2 has no UpdateEndpoint: answer it the way SageMaker does (the endpoint's ARN), through
    botocore's ``before-call`` hook (the dry run uses the same hook); the request itself is recorded by
    :func:`_record_params` after botocore validated it against the service model."""
    class Ok:
        status_code, headers, content = 200, {}, b""

    def answer(**_):
        return Ok(), {"EndpointArn": "arn:aws:sagemaker:eu-west-1:123456789012:endpoint/byoc-demo"}

    client.meta.events.register_first("before-call.sagemaker.UpdateEndpoint", answer)


def test_serving_twice_reuses_the_model_config_and_endpoint(ctx):
    ep = endpoints.MultiModelEndpoint.for_run(ctx)
    first = endpoints.create_multi_model_endpoint(ctx, ep)
    again = AwsContext.from_settings(ctx.settings)          # a new `byoc serve`, same run dir
    calls = _record_params(again.sagemaker)
    second = endpoints.create_multi_model_endpoint(again, ep)
    assert _creates(calls) == []                              # before: "Cannot create already existing model"
    assert second["EndpointConfigName"] == first["EndpointConfigName"] == "byoc-demo-config"
    assert [r["name"] for r in again.manifest.resources] == ["byoc-demo-mme", "byoc-demo-config", "byoc-demo"]


def test_other_settings_get_new_names_and_the_endpoint_moves_to_them(ctx, settings_for):
    ep = endpoints.MultiModelEndpoint.for_run(ctx)
    endpoints.create_multi_model_endpoint(ctx, ep)
    bigger = AwsContext.from_settings(settings_for(endpoint_instance_type="ml.c5.xlarge"))
    _answer_update_endpoint(bigger.sagemaker)
    calls = _record_params(bigger.sagemaker)
    endpoints.create_multi_model_endpoint(bigger, ep, wait=False)
    assert _creates(calls) == ["CreateEndpointConfig", "UpdateEndpoint"]    # same model, a new config
    config = dict(calls)["CreateEndpointConfig"]
    new_name = config["EndpointConfigName"]
    assert new_name.startswith("byoc-demo-config-") and len(new_name) == len("byoc-demo-config-") + 8
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.c5.xlarge"
    assert dict(calls)["UpdateEndpoint"] == {"EndpointName": "byoc-demo", "EndpointConfigName": new_name}
    # The first config is untouched and both stay recorded for `byoc cleanup`.
    assert bigger.sagemaker.describe_endpoint_config(EndpointConfigName="byoc-demo-config")
    assert bigger.manifest.names("endpoint_config") == ["byoc-demo-config", new_name]

    image = AwsContext.from_settings(settings_for(serve_image=ctx.settings.serve_image + "-new"))
    _answer_update_endpoint(image.sagemaker)
    calls = _record_params(image.sagemaker)
    endpoints.create_multi_model_endpoint(image, ep, wait=False)
    model = dict(calls)["CreateModel"]
    assert model["ModelName"].startswith("byoc-demo-mme-") and model["PrimaryContainer"]["Image"].endswith("-new")


def test_another_runs_resources_are_never_touched(ctx, settings_for, tmp_path):
    shared = dict(endpoint_name="team-endpoint")
    ours = AwsContext.from_settings(settings_for(**shared))
    ep = endpoints.MultiModelEndpoint.for_run(ours)
    endpoints.create_multi_model_endpoint(ours, ep)
    other = AwsContext.from_settings(settings_for(run_dir=str(tmp_path / "runs" / "other"), **shared))
    assert other.manifest.run_id != ours.manifest.run_id
    calls = _record_params(other.sagemaker)
    with pytest.raises(LaunchError, match="endpoint team-endpoint already exists and this run did not make it"):
        endpoints.create_multi_model_endpoint(other, endpoints.MultiModelEndpoint.for_run(other))
    # The other run made its own model and config under new names, and nothing of ours changed.
    made = [params.get("ModelName") or params["EndpointConfigName"] for op, params in calls if op.startswith("Create")]
    assert len(made) == 2 and made[0].startswith("team-endpoint-mme-") and made[1].startswith("team-endpoint-config-")
    endpoint = ours.sagemaker.describe_endpoint(EndpointName="team-endpoint")
    assert endpoint["EndpointConfigName"] == "team-endpoint-config"


def test_cleanup_leaves_a_name_another_run_took_over(ctx, settings_for, tmp_path):
    ep = endpoints.MultiModelEndpoint.for_run(ctx)
    endpoints.create_multi_model_endpoint(ctx, ep)
    # Our stack is deleted behind byoc's back, then another run takes the same names.
    ctx.sagemaker.delete_endpoint(EndpointName="byoc-demo")
    ctx.sagemaker.delete_endpoint_config(EndpointConfigName="byoc-demo-config")
    ctx.sagemaker.delete_model(ModelName="byoc-demo-mme")
    other = AwsContext.from_settings(settings_for(run_dir=str(tmp_path / "elsewhere" / "demo")))
    endpoints.create_multi_model_endpoint(other, endpoints.MultiModelEndpoint.for_run(other))
    assert other.settings.run_name == ctx.settings.run_name            # same names, another run

    logged: list[str] = []
    done = cleanup.cleanup(ctx, log=logged.append)
    assert not {"endpoint", "endpoint_config", "model"} & set(done)
    assert sum("belongs to run " + other.manifest.run_id in line for line in logged) == 3
    assert other.sagemaker.describe_endpoint(EndpointName="byoc-demo")["EndpointConfigName"] == "byoc-demo-config"
    assert other.sagemaker.describe_model(ModelName="byoc-demo-mme")


def test_batch_twice_reuses_its_model_and_the_uploaded_inputs(ctx, tmp_path):
    folder = _folder(tmp_path)
    first = batch_transform.run_transform_job(ctx, "dogs", MODEL_DATA, folder, "application/x-image")
    calls = _record_params(ctx.sagemaker)
    s3_calls = _record_params(ctx.s3)
    second = batch_transform.run_transform_job(ctx, "dogs", MODEL_DATA, folder, "application/x-image")
    assert _creates(calls) == ["CreateTransformJob"]
    assert dict(calls)["CreateTransformJob"]["ModelName"] == "byoc-demo-batch-dogs"
    assert second["InputUri"] == first["InputUri"] and "PutObject" not in dict(s3_calls)
    assert second["TransformJobName"] != first["TransformJobName"]
    assert second["OutputUri"] != first["OutputUri"]
    tags = ctx.sagemaker.list_tags(ResourceArn=ctx.sagemaker.describe_model(
        ModelName="byoc-demo-batch-dogs")["ModelArn"])["Tags"]
    assert tags == [{"Key": ownership.RUN_ID_TAG, "Value": ctx.manifest.run_id}]

    # Another artifact: a model of its own; another folder: a prefix of its own (no stale inputs).
    (folder / "img0.jpg").unlink()
    calls = _record_params(ctx.sagemaker)
    third = batch_transform.run_transform_job(ctx, "dogs", MODEL_DATA.replace("v1", "v2"), folder,
                                              "application/x-image")
    model = dict(calls)["CreateModel"]
    assert model["ModelName"].startswith("byoc-demo-batch-dogs-") and model["PrimaryContainer"]["ModelDataUrl"] \
        == MODEL_DATA.replace("v1", "v2")
    assert third["InputUri"] != first["InputUri"]
    keys = [o["Key"].rsplit("/", 1)[1] for o in ctx.s3.list_objects_v2(
        Bucket=BUCKET, Prefix=third["InputUri"].split(BUCKET + "/", 1)[1])["Contents"]]
    assert "img0.jpg" not in keys and len(keys) == 3


def test_an_untagged_endpoint_this_run_recorded_is_still_its_own(ctx):
    """Made before resources carried the run id: the manifest says it is this run's."""
    ctx.sagemaker.create_model(ModelName="byoc-demo-mme", ExecutionRoleArn=ctx.settings.role_arn,
                               PrimaryContainer={"Image": ctx.settings.serve_image, "Mode": "MultiModel",
                                                 "ModelDataUrl": f"s3://{BUCKET}/byoc/demo/models/",
                                                 "Environment": {"SAGEMAKER_CONTAINER_LOG_LEVEL": "20"}})
    ctx.record("model", "byoc-demo-mme")
    calls = _record_params(ctx.sagemaker)
    endpoints.create_multi_model_endpoint(ctx, endpoints.MultiModelEndpoint.for_run(ctx))
    assert _creates(calls) == ["CreateEndpointConfig", "CreateEndpoint"]     # the model reused


def test_this_runs_failed_endpoint_is_not_moved_but_explained(ctx):
    """UpdateEndpoint needs an InService endpoint; a Failed one gets the reason and what removes it."""
    from datetime import UTC, datetime

    from botocore.stub import Stubber

    arn = "arn:aws:sagemaker:eu-west-1:123456789012:endpoint/byoc-demo"
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with Stubber(ctx.sagemaker) as stub:
        stub.add_response("describe_endpoint", {"EndpointName": "byoc-demo", "EndpointArn": arn,
                                                "EndpointConfigName": "byoc-demo-config", "EndpointStatus": "Failed",
                                                "CreationTime": now, "LastModifiedTime": now},
                          {"EndpointName": "byoc-demo"})
        stub.add_response("list_tags", {"Tags": [{"Key": ownership.RUN_ID_TAG, "Value": ctx.manifest.run_id}]},
                          {"ResourceArn": arn})
        with pytest.raises(LaunchError, match="byoc-demo is Failed on byoc-demo-config; it can move to "
                                              "byoc-demo-config-x only when InService"):
            ownership.ensure_endpoint(ctx, "byoc-demo", "byoc-demo-config-x", log=lambda _: None)
        stub.assert_no_pending_responses()
