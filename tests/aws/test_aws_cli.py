"""The byoc CLI with --backend sagemaker: against moto, and --dry-run with nothing listening."""

from __future__ import annotations

import json
import socket

from byoc.cli import main
from tests.helpers.moto_server import BUCKET, REGION, ROLE


def _flags(tmp_path, endpoint_url):
    return ["--backend", "sagemaker", "--region", REGION, "--role-arn", ROLE, "--bucket", BUCKET,
            "--train-image", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/byoc-train:1",
            "--serve-image", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/byoc-serve:1",
            "--run-dir", str(tmp_path / "run"), "--aws-endpoint-url", endpoint_url]


def test_serve_deploy_cleanup_against_moto(tmp_path, aws_env, raw_s3, capsys):
    raw_s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    flags = _flags(tmp_path, aws_env)
    archive = tmp_path / "m.tar.gz"
    archive.write_bytes(b"artifact")
    assert main(["serve", *flags]) == 0
    assert main(["deploy", str(archive), "--name", "fashion", *flags]) == 0
    assert "fashion.tar.gz" in capsys.readouterr().out
    keys = [o["Key"] for o in raw_s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert keys == ["byoc/run/models/fashion.tar.gz"]
    manifest = json.loads((tmp_path / "run" / "aws-resources.json").read_text())
    assert {r["kind"] for r in manifest["resources"]} == {"model", "endpoint_config", "endpoint", "s3_prefix"}

    assert main(["cleanup", *flags]) == 0
    assert "Contents" not in raw_s3.list_objects_v2(Bucket=BUCKET)
    import boto3

    sm = boto3.client("sagemaker", region_name=REGION, endpoint_url=aws_env)
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []


def test_pipeline_dry_run_prints_every_request_and_sends_none(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    rc = main(["pipeline", "--tiny", "--dry-run", *_flags(tmp_path, closed)])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    ops = [line.split()[1] for line in out.splitlines() if line.startswith("DRY-RUN ")]
    for op in ("s3.upload_file", "sagemaker.CreateHyperParameterTuningJob", "sagemaker.CreateTrainingJob",
               "sagemaker.CreateModel", "sagemaker.CreateEndpointConfig", "sagemaker.CreateEndpoint",
               "sagemaker-runtime.InvokeEndpoint", "sagemaker.CreateTransformJob"):
        assert op in ops, (op, sorted(set(ops)))
    jobs = [json.loads(line.split(" ", 2)[2]) for line in out.splitlines()
            if line.startswith("DRY-RUN sagemaker.CreateTrainingJob ")]
    # The demo's head-only search tunes on a features channel: the extraction job comes first, then
    # the two models' training jobs (the pipeline's own train steps, on the images).
    assert [j["HyperParameters"].get("task", "train") for j in jobs] == ["extract-features", "train", "train"]
    tuning = next(json.loads(line.split(" ", 2)[2]) for line in out.splitlines()
                  if line.startswith("DRY-RUN sagemaker.CreateHyperParameterTuningJob "))
    assert [c["ChannelName"] for c in tuning["TrainingJobDefinition"]["InputDataConfig"]] == ["features"]
    train = jobs[1]
    assert {r["RuleConfigurationName"] for r in train["DebugRuleConfigurations"]} >= {"VanishingGradient", "Overfit"}
    assert train["ProfilerRuleConfigurations"][0]["RuleConfigurationName"] == "ProfilerReport"
    # Nothing was created, so nothing is recorded for clean-up.
    assert not (tmp_path / "run" / "aws-resources.json").exists()
    # Issue 24 item 10: what it would do, once per channel (two datasets x train/valid/test, the batch
    # folder), never a claim that it was done, and no summary of artifacts that do not exist.
    uploads = [json.loads(line.split(" ", 2)[2]) for line in out.splitlines()
               if line.startswith("DRY-RUN s3.upload_file ")]
    assert [u["to"].rstrip("/").rsplit("/", 1)[1] for u in uploads[:6]] == ["test", "train", "valid"] * 2
    assert len(uploads) == 7 and "s3.PutObject" not in ops
    prose = "\n".join(line for line in out.splitlines() if not line.startswith("DRY-RUN "))
    assert "dry run: nothing uploaded" in prose and "uploaded " not in prose.replace("nothing uploaded", "")
    assert "None" not in prose and "would serve (dry run)" in prose
    assert "none was sent, nothing was created or uploaded" in prose
    assert not (tmp_path / "run" / "index.html").exists() and not (tmp_path / "run" / "state.json").exists()


def test_a_failed_dry_run_suggests_resuming_it_as_a_dry_run(tmp_path, monkeypatch, capsys):
    """Issue 24 item 10: the resume command of a failed dry run keeps --dry-run (without it, it would
    send every request for real)."""
    monkeypatch.chdir(tmp_path)
    flags = _flags(tmp_path, "http://127.0.0.1:9")
    i = flags.index("--train-image")
    del flags[i:i + 2]                                    # the tune step needs it: the run fails there
    assert main(["pipeline", "--tiny", "--dry-run", *flags]) == 1
    out = capsys.readouterr().out
    assert "step tune failed" in out
    resume = next(line for line in out.splitlines() if "resume with:" in line)
    assert resume.split("resume with:", 1)[1].split()[:2] == ["byoc", "pipeline"] and "--dry-run" in resume
    assert "results so far" not in out
