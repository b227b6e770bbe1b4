"""The CodeBuild path run, not only parsed: buildspec.yml's phases, end to end, with the real AWS
CLI against moto's ECR and STS (repositories, authorization token) and the real Docker engine
pushing both images to a real OCI registry on 127.0.0.1 (Debian's ``docker-registry``) that only
lets in ECR's token. scripts/build_and_push.sh then pushes the same way.

The registry is the one thing overridden (``REGISTRY_OVERRIDE``, which only tests set): it stands
in for ``<account>.dkr.ecr.<region>.amazonaws.com``. ``BASE_IMAGE`` is set as a CodeBuild project
would set it, to the Docker Hub name the session's images were built from (no registry is
reachable here), and ``TRAIN_TORCH_INDEX_URL``/``SERVE_TORCH_INDEX_URL`` to PyPI, the one index reachable
here. The buildspec's ``docker build`` commands run as written; they find the session's
images (tests/containers/conftest.py) in Docker's layer cache instead of building them again.

Last, the build context itself (what .dockerignore lets through to the engine).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import bcrypt
import pytest
import requests

from byoc.local.endpoint import free_port
from tests.helpers import required
from tests.helpers.buildspec_runner import copy_source, run_buildspec
from tests.helpers.moto_server import reset

pytestmark = [pytest.mark.container, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
REGISTRY_BIN = "/usr/bin/docker-registry"
ACCOUNT = "123456789012"
ECR_PASSWORD = f"{ACCOUNT}-auth-token"      # what moto's GetAuthorizationToken hands out
BASE_IMAGE = "python:3.11-slim-bookworm"
BUILD_TIMEOUT_S = 3600                       # a cold cache builds both images; a push is GBs
# As a CodeBuild project overrides the buildspec's variables: torch from PyPI, the index reachable here
# (the session's images were built so, tests/containers/conftest.py).
PYPI_TORCH = {"TRAIN_TORCH_INDEX_URL": "", "SERVE_TORCH_INDEX_URL": ""}


@pytest.fixture(scope="module")
def registry(tmp_path_factory, docker_engine):
    """``docker-registry serve`` on 127.0.0.1 with basic auth for user AWS and ECR's token."""
    if not os.access(REGISTRY_BIN, os.X_OK):
        required.missing(f"{REGISTRY_BIN} is missing: apt-get install docker-registry")
    root = tmp_path_factory.mktemp("registry")
    (root / "htpasswd").write_text(f"AWS:{bcrypt.hashpw(ECR_PASSWORD.encode(), bcrypt.gensalt()).decode()}\n")
    address = f"127.0.0.1:{free_port()}"
    (root / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: {address}\nauth:\n  htpasswd:\n    realm: byoc-test\n    path: {root / 'htpasswd'}\n")
    with open(root / "registry.log", "wb") as log:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(root / "config.yml")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert requests.get(f"http://{address}/v2/", timeout=2).status_code == 401   # auth on
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"docker-registry did not start: {(root / 'registry.log').read_text()[-2000:]}")
                time.sleep(0.2)
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        listed = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
                                capture_output=True, text=True, timeout=60).stdout.split()
        ours = [tag for tag in listed if tag.startswith(address + "/")]
        if ours:    # the tags only; the session images stay
            subprocess.run(["docker", "rmi", *ours], capture_output=True, timeout=300)
        shutil.rmtree(root / "data", ignore_errors=True)    # GBs of pushed layers: not kept for later tests


@pytest.fixture
def build_env(moto_url, tmp_path, registry):
    aws = required.tool("aws", "pip install awscli")
    reset(moto_url)
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DOCKER_CONFIG"))}
    (tmp_path / "docker-config").mkdir()
    return {**keep, "PATH": f"{Path(aws).parent}{os.pathsep}{os.environ['PATH']}",
            "AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "eu-west-1", "AWS_REGION": "eu-west-1",
            "REGISTRY_OVERRIDE": registry, "DOCKER_CONFIG": str(tmp_path / "docker-config")}


def _tags(registry: str, repository: str) -> set[str]:
    answer = requests.get(f"http://{registry}/v2/{repository}/tags/list", auth=("AWS", ECR_PASSWORD), timeout=30)
    answer.raise_for_status()
    return set(answer.json()["tags"])


def _repositories(moto_url: str) -> set[str]:
    import boto3

    ecr = boto3.client("ecr", region_name="eu-west-1", endpoint_url=moto_url,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    return {r["repositoryName"] for r in ecr.describe_repositories()["repositories"]}


def _pull_and_check(env: dict, uri: str, module: str) -> None:
    """The pushed image comes back from the registry (logged in as the build was) and holds its package."""
    for args, timeout in ((["rmi", uri], 300), (["pull", uri], BUILD_TIMEOUT_S),
                          (["run", "--rm", "--network", "host", "--entrypoint", "python", uri, "-c",
                            f"import {module}"], 300)):
        proc = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr[-3000:]}"


def test_buildspec_phases_push_both_images_and_write_the_uris(train_image, serve_image, registry, build_env,
                                                             moto_url, tmp_path):
    src = copy_source(REPO_ROOT, tmp_path / "src")
    env = {**build_env, "BASE_IMAGE": BASE_IMAGE, "CODEBUILD_RESOLVED_SOURCE_VERSION": "feedc0ffee1234",
           **PYPI_TORCH}
    result = run_buildspec(REPO_ROOT / "buildspec.yml", src, env, timeout=BUILD_TIMEOUT_S)
    assert result.succeeded, result.log[-6000:]
    assert "Login Succeeded" in result.log                 # the registry let ECR's token in
    assert _repositories(moto_url) == {"byoc-train", "byoc-serve"}
    for repository in ("byoc-train", "byoc-serve"):
        assert _tags(registry, repository) == {"feedc0f", "latest"}
    uris = json.loads(result.artifacts["image-uris.json"].read_text())
    assert uris == {"train": f"{registry}/byoc-train:feedc0f", "serve": f"{registry}/byoc-serve:feedc0f"}
    definitions = json.loads(result.artifacts["imagedefinitions.json"].read_text())
    assert definitions == [{"name": "train", "imageUri": uris["train"]}, {"name": "serve", "imageUri": uris["serve"]}]
    _pull_and_check(env, uris["train"], "container_train.train")
    _pull_and_check(env, uris["serve"], "container_serve.content_types")
    # The training image knows the serving image built with it: `serve` (the SDK's deploy() without
    # image_uri) names it.
    serve = subprocess.run(["docker", "run", "--rm", "--network", "host", uris["train"], "serve"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert serve.returncode == 2 and f'image_uri="{uris["serve"]}"' in serve.stderr, serve.stderr


def test_a_wrong_token_is_refused_by_the_registry(registry, tmp_path):
    """The registry really checks the password: only ECR's token logs in (so the test above proves
    the buildspec logged in with what GetAuthorizationToken returned)."""
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path)}
    proc = subprocess.run(["docker", "login", "--username", "AWS", "--password-stdin", registry], input="not-the-token",
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "401" in proc.stderr


def test_build_and_push_script_pushes_the_same_way(train_image, serve_image, registry, build_env, moto_url,
                                                   tmp_path):
    src = copy_source(REPO_ROOT, tmp_path / "src")
    out = tmp_path / "image-uris.json"
    proc = subprocess.run(["bash", str(src / "scripts" / "build_and_push.sh"), "--region", "eu-west-1",
                           "--tag", "script1", "--base-image", BASE_IMAGE, "--output", str(out),
                           "--train-torch-index-url", "", "--serve-torch-index-url", ""],
                          env=build_env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert _repositories(moto_url) == {"byoc-train", "byoc-serve"}
    uris = json.loads(out.read_text())
    assert uris == {"train": f"{registry}/byoc-train:script1", "serve": f"{registry}/byoc-serve:script1"}
    for repository in ("byoc-train", "byoc-serve"):
        assert {"script1", "latest"} <= _tags(registry, repository)
    _pull_and_check(build_env, uris["serve"], "container_serve.content_types")


# ---- the build context -----------------------------------------------------------------------------
def test_build_context_holds_only_what_the_images_need(docker_engine):
    """Send the real context (with .dockerignore) to the engine and list what arrives."""
    dockerfile = "FROM python:3.11-slim-bookworm\nCOPY . /context\nRUN cd /context && find . -type f | sort " \
                 "&& du -sk . | cut -f1\n"
    proc = subprocess.run(["docker", "build", "--network", "host", "--no-cache", "-f", "-", str(REPO_ROOT)],
                          input=dockerfile, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("./")]
    assert "./pyproject.toml" in files and "./container_train/train.py" in files
    assert "./container_serve/serve.py" in files and "./byoc_common/artifact.py" in files
    tops = {f.split("/")[1] for f in files}
    assert tops <= {"pyproject.toml", "docker", "byoc_common", "container_train", "container_serve"}, tops
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files)
    size_kb = int([line for line in proc.stdout.splitlines() if line.strip().isdigit()][-1])
    assert size_kb < 5 * 1024, f"build context is {size_kb} KiB"
