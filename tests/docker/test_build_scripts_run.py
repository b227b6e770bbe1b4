"""scripts/build_and_push.sh and buildspec.yml run end to end with no Docker engine: the real AWS
CLI against moto (ECR repositories, authorization token, STS) and a recording stand-in for the
docker CLI, so what each would send to Docker is checked here; tests/containers/
test_containers_buildspec.py runs the same with the real engine and a real registry."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import boto3
import pytest

from tests.helpers import required
from tests.helpers.buildspec_runner import copy_source, run_buildspec
from tests.helpers.moto_server import reset

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "build_and_push.sh"
ACCOUNT = "123456789012"            # moto's account; its ECR password is "<account>-auth-token"
RECORDING_DOCKER = """#!/usr/bin/env bash
# Stand-in for the docker CLI: one line per call; `login --password-stdin` keeps the password.
printf '%s\\n' "$*" >> "$DOCKER_CALLS"
case "$1" in
  login) cat > "$DOCKER_CALLS.password" ;;
  info) echo 20.10 ;;
  build) [ -z "${FAIL_DOCKER_BUILD:-}" ] ;;
esac
"""


@pytest.fixture
def aws_cli_env(moto_url, tmp_path):
    """The real AWS CLI, pointed at moto (AWS_ENDPOINT_URL), and the recording docker first on PATH."""
    aws = required.tool("aws", "pip install awscli")
    reset(moto_url)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(RECORDING_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DOCKER"))}
    return {**keep, "PATH": os.pathsep.join([str(bin_dir), str(Path(aws).parent), os.environ["PATH"]]),
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true", "DOCKER_CALLS": str(tmp_path / "docker-calls")}


def _calls(env) -> list[str]:
    return Path(env["DOCKER_CALLS"]).read_text().splitlines()


def _repositories(moto_url, region) -> set[str]:
    ecr = boto3.client("ecr", region_name=region, endpoint_url=moto_url,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    return {r["repositoryName"] for r in ecr.describe_repositories()["repositories"]}


def test_build_and_push_in_a_china_region(aws_cli_env, moto_url, tmp_path):
    """ECR's domain in cn-* is amazonaws.com.cn; images are linux/amd64 (what ml.* runs) whatever
    the workstation is; no optional build argument given = an empty array under set -u."""
    out = tmp_path / "uris.json"
    proc = subprocess.run(["bash", str(SCRIPT), "--region", "cn-north-1", "--tag", "abc1234", "--output", str(out)],
                          env=aws_cli_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    registry = f"{ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com.cn"
    calls = _calls(aws_cli_env)
    assert f"login --username AWS --password-stdin {registry}" in calls
    assert Path(aws_cli_env["DOCKER_CALLS"] + ".password").read_text().strip() == f"{ACCOUNT}-auth-token"
    builds = [c for c in calls if c.startswith("build ")]
    assert len(builds) == 2 and all(" --platform linux/amd64 " in b for b in builds)
    # torch: each Dockerfile's own default (no TORCH_INDEX_URL given); the training image names the serving one.
    assert not any("TORCH_INDEX_URL" in b for b in builds)
    train_build, serve_build = builds
    assert f"--build-arg SERVE_IMAGE_URI={registry}/byoc-serve:abc1234 " in train_build
    assert "SERVE_IMAGE_URI" not in serve_build
    assert f"push {registry}/byoc-serve:latest" in calls
    assert _repositories(moto_url, "cn-north-1") == {"byoc-train", "byoc-serve"}
    assert json.loads(out.read_text()) == {"train": f"{registry}/byoc-train:abc1234",
                                           "serve": f"{registry}/byoc-serve:abc1234"}


def test_build_and_push_takes_an_index_per_image_and_an_empty_one_means_pypi(aws_cli_env, tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), "--region", "eu-west-1", "--tag", "t1", "--output",
                           str(tmp_path / "uris.json"), "--train-torch-index-url", "",
                           "--serve-torch-index-url", "https://example.invalid/cpu"],
                          env=aws_cli_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    train_build, serve_build = [c for c in _calls(aws_cli_env) if c.startswith("build ")]
    assert "--build-arg TORCH_INDEX_URL= " in train_build and "train.Dockerfile" in train_build
    assert "--build-arg TORCH_INDEX_URL=https://example.invalid/cpu " in serve_build


def test_build_and_push_expands_no_empty_array_bash_3_2_would_call_unbound():
    """bash < 4.4 (macOS's /bin/bash is 3.2) fails `"${a[@]}"` on an empty array under set -u;
    every array expansion must be the guarded ${a[@]+"${a[@]}"}."""
    text = "\n".join(line for line in SCRIPT.read_text().splitlines() if not line.lstrip().startswith("#"))
    assert "build_args[@]" in text
    for name in set(re.findall(r'"\$\{(\w+)\[@\]\}"', text)):
        bare = text.count(f'"${{{name}[@]}}"')
        guarded = text.count(f'${{{name}[@]+"${{{name}[@]}}"}}')
        assert bare == guarded, f"unguarded \"${{{name}[@]}}\" in {SCRIPT.name}"


def test_buildspec_runs_against_ecr_in_a_china_region(aws_cli_env, moto_url, tmp_path):
    src = copy_source(REPO_ROOT, tmp_path / "src")
    env = {**aws_cli_env, "AWS_DEFAULT_REGION": "cn-north-1", "AWS_REGION": "cn-north-1",
           "CODEBUILD_RESOLVED_SOURCE_VERSION": "0123456789abcdef"}
    result = run_buildspec(REPO_ROOT / "buildspec.yml", src, env, timeout=300)
    assert result.succeeded, result.log
    registry = f"{ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com.cn"
    calls = _calls(aws_cli_env)
    assert f"login --username AWS --password-stdin {registry}" in calls
    builds = [c for c in calls if c.startswith("build ")]
    assert len(builds) == 2
    for b in builds:   # amd64, and the base image from ECR Public's Docker library mirror
        assert " --platform linux/amd64 " in b
        assert "--build-arg BASE_IMAGE=public.ecr.aws/docker/library/python:3.11-slim-bookworm" in b
    # CUDA 12.6 torch for training (and the serving image's URI for its `serve` answer), CPU-only for serving.
    train_build, serve_build = builds
    assert "--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 " in train_build
    assert f"--build-arg SERVE_IMAGE_URI={registry}/byoc-serve:0123456 " in train_build
    assert "--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu " in serve_build
    assert f"push {registry}/byoc-train:0123456" in calls and f"push {registry}/byoc-train:latest" in calls
    assert _repositories(moto_url, "cn-north-1") == {"byoc-train", "byoc-serve"}
    uris = json.loads(result.artifacts["image-uris.json"].read_text())
    assert uris == {"train": f"{registry}/byoc-train:0123456", "serve": f"{registry}/byoc-serve:0123456"}
    assert set(result.artifacts) == {"image-uris.json", "imagedefinitions.json"}


def test_buildspec_failed_build_hands_on_no_image_uris(aws_cli_env, tmp_path):
    """post_build runs after a failed build (CODEBUILD_BUILD_SUCCEEDING=0) and must not describe
    images that were never pushed."""
    src = copy_source(REPO_ROOT, tmp_path / "src")
    env = {**aws_cli_env, "AWS_DEFAULT_REGION": "eu-west-1", "FAIL_DOCKER_BUILD": "1"}
    result = run_buildspec(REPO_ROOT / "buildspec.yml", src, env, timeout=300)
    assert not result.succeeded and result.failed_phase == "build", result.log
    assert not any(c.startswith("push ") for c in _calls(aws_cli_env))
    assert result.artifacts == {}
