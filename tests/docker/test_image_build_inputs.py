"""What the image builds are made of: the requirement lists, the push script, buildspec. No Docker
engine needed (the build context, sent to a real engine, is checked in
tests/containers/test_containers_buildspec.py).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import yaml

from tests.helpers import required

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "build_and_push.sh"


def load_requirements_module():
    spec = importlib.util.spec_from_file_location("pyproject_requirements",
                                                  REPO_ROOT / "docker" / "pyproject_requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- docker/pyproject_requirements.py ------------------------------------------------------------
def test_image_requirements_come_from_pyproject_groups():
    reqs = load_requirements_module()
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    groups = pyproject["project"]["optional-dependencies"]

    model = reqs.group_requirements(pyproject, "model")
    assert model == groups["model"]
    assert any(r.startswith("torch==") for r in model) and any(r.startswith("torchvision==") for r in model)

    for image in ("train", "serve"):
        extra = reqs.without(reqs.group_requirements(pyproject, image), model)
        # Everything the group lists except the shared model layer, and no self-reference.
        expected = [r for r in groups[image] if not r.startswith(pyproject["project"]["name"])]
        assert extra == [r for r in expected if r not in model]
        assert not any(r.startswith(("torch", "sagemaker-byoc-resnet")) for r in extra)


def test_requirements_script_names_unknown_groups(tmp_path):
    proc = subprocess.run(["python3", str(REPO_ROOT / "docker" / "pyproject_requirements.py"),
                           str(REPO_ROOT / "pyproject.toml"), "no-such-group"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "no optional-dependencies group 'no-such-group'" in proc.stderr and "train" in proc.stderr


# ---- scripts/build_and_push.sh ---------------------------------------------------------------------
def sandbox_path(tmp_path: Path, tools: list[str]) -> str:
    """A PATH holding only ``tools`` (symlinks to the real ones)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        real = required.tool(tool, "make setup")
        (bin_dir / tool).symlink_to(real)
    return str(bin_dir)


BASIC_TOOLS = ["bash", "env", "dirname", "sed", "printf", "git", "cat"]


def run_script(path: str, *args: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), **(extra_env or {})}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120,
                          executable=shutil.which("bash"))


def test_build_and_push_says_when_docker_is_missing(tmp_path):
    proc = run_script(sandbox_path(tmp_path, BASIC_TOOLS), "--region", "us-east-1")
    assert proc.returncode == 1
    assert "docker is not installed or not on PATH" in proc.stderr


def test_build_and_push_says_when_the_aws_cli_is_missing(tmp_path):
    proc = run_script(sandbox_path(tmp_path, [*BASIC_TOOLS, "docker"]), "--region", "us-east-1")
    assert proc.returncode == 1
    assert "the AWS CLI ('aws') is not installed" in proc.stderr


def test_build_and_push_says_when_credentials_are_missing(tmp_path):
    """The real AWS CLI with no credentials anywhere: the script stops before touching Docker."""
    aws = required.tool("aws", "pip install awscli")
    nowhere = str(tmp_path / "none")
    env = {"AWS_CONFIG_FILE": nowhere, "AWS_SHARED_CREDENTIALS_FILE": nowhere, "AWS_EC2_METADATA_DISABLED": "true"}
    path = os.pathsep.join([sandbox_path(tmp_path, ["docker"]), str(Path(aws).parent), os.environ["PATH"]])
    proc = subprocess.run(["bash", str(SCRIPT), "--region", "us-east-1"], capture_output=True, text=True,
                          timeout=120, env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
                          | env | {"PATH": path})
    assert proc.returncode == 1
    assert "no usable AWS credentials" in proc.stderr and "get-caller-identity" in proc.stderr


def test_build_and_push_rejects_unknown_options(tmp_path):
    proc = run_script(sandbox_path(tmp_path, BASIC_TOOLS), "--regoin", "us-east-1")
    assert proc.returncode == 1 and "unknown option: --regoin" in proc.stderr


def test_build_and_push_is_shellcheck_clean():
    shellcheck = required.tool("shellcheck", "apt-get install shellcheck")
    proc = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


# ---- buildspec.yml ------------------------------------------------------------------------------------
def test_buildspec_logs_in_creates_repos_builds_tags_pushes_and_hands_on_uris():
    spec = yaml.safe_load((REPO_ROOT / "buildspec.yml").read_text())
    assert str(spec["version"]) == "0.2"
    pre_build = "\n".join(spec["phases"]["pre_build"]["commands"])
    build = "\n".join(spec["phases"]["build"]["commands"])
    post_build = "\n".join(spec["phases"]["post_build"]["commands"])

    assert "aws ecr get-login-password" in pre_build and "docker login" in pre_build
    assert "describe-repositories" in pre_build and "create-repository" in pre_build
    assert "CODEBUILD_RESOLVED_SOURCE_VERSION" in pre_build
    for dockerfile in ("docker/train.Dockerfile", "docker/serve.Dockerfile"):
        assert f"-f {dockerfile}" in build
    for image in ("TRAIN_IMAGE", "SERVE_IMAGE"):
        assert f'docker push "${{{image}}}:${{TAG}}"' in build
        assert f'docker push "${{{image}}}:latest"' in build
    assert "image-uris.json" in post_build and "imagedefinitions.json" in post_build
    assert set(spec["artifacts"]["files"]) == {"image-uris.json", "imagedefinitions.json"}


def test_buildspec_commands_are_valid_bash():
    spec = yaml.safe_load((REPO_ROOT / "buildspec.yml").read_text())
    script = "\n".join(cmd for phase in spec["phases"].values() for cmd in phase["commands"])
    proc = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ---- where each image's torch comes from ----------------------------------------------------------
def _arg_default(dockerfile: str, name: str) -> str:
    lines = (REPO_ROOT / "docker" / dockerfile).read_text().splitlines()
    return next(line.split("=", 1)[1] for line in lines if line.startswith(f"ARG {name}="))


def test_training_gets_a_cuda_12_torch_and_serving_a_cpu_only_one_by_default():
    """GPU training instances run CUDA 12 drivers (PyPI's torch 2.13.0 is the CUDA 13.0 build, driver >= 580);
    the serving image only runs on CPU instances. buildspec.yml's variables are the Dockerfiles' defaults."""
    train, serve = _arg_default("train.Dockerfile", "TORCH_INDEX_URL"), _arg_default("serve.Dockerfile",
                                                                                    "TORCH_INDEX_URL")
    assert train == "https://download.pytorch.org/whl/cu126"
    assert serve == "https://download.pytorch.org/whl/cpu"
    variables = yaml.safe_load((REPO_ROOT / "buildspec.yml").read_text())["env"]["variables"]
    assert variables["TRAIN_TORCH_INDEX_URL"] == train and variables["SERVE_TORCH_INDEX_URL"] == serve
    assert "TORCH_INDEX_URL" not in variables


def test_make_images_keeps_the_dockerfile_defaults_unless_an_index_is_given():
    def dry_run(*overrides: str) -> list[str]:
        env = {k: v for k, v in os.environ.items() if not k.endswith("TORCH_INDEX_URL")}
        proc = subprocess.run(["make", "-s", "-n", "images", *overrides], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return [line for line in proc.stdout.splitlines() if line.startswith("docker build")]

    assert all("TORCH_INDEX_URL" not in line for line in dry_run())
    train, serve = dry_run("TRAIN_TORCH_INDEX_URL=", "SERVE_TORCH_INDEX_URL=https://example.invalid/cpu")
    assert "--build-arg TORCH_INDEX_URL= " in train and "docker/train.Dockerfile" in train
    assert "--build-arg TORCH_INDEX_URL=https://example.invalid/cpu " in serve
