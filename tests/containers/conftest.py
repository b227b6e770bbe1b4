"""Fixtures for the container tests: a reachable Docker engine and the two images, built once.

Without an engine the container tests skip with the reason -- unless BYOC_REQUIRE_DOCKER=1 (CI),
where they fail instead. The images are built from this checkout with the same commands as
``make images TRAIN_TORCH_INDEX_URL= SERVE_TORCH_INDEX_URL=`` (tags byoc-train:latest and
byoc-serve:latest; torch from PyPI, see TEST_BUILD_ARGS); Docker's layer cache makes a rebuild after a
code change take seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_IMAGE = "byoc-train:latest"
SERVE_IMAGE = "byoc-serve:latest"
BUILD_TIMEOUT_S = 3600
START_ENGINE_HINT = "start one with `bash ../shared/tools/docker-offline.sh` (or `make docker-engine`)"


def run_docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """Run a docker CLI command, capturing text output; raise with the output when it fails."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"`docker {' '.join(args)}` exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def docker(docker_engine):
    """``docker("ps", "-a")``: run the docker CLI (see :func:`run_docker`)."""
    return run_docker


def _engine_problem() -> str | None:
    """Why no Docker engine can be used, or None when one answers."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if proc.returncode != 0 or not proc.stdout.strip():
        return f"no Docker engine reachable (`docker info`: {proc.stderr.strip()[-300:]})"
    return None


@pytest.fixture(scope="session")
def docker_engine() -> None:
    problem = _engine_problem()
    if problem is None:
        return
    message = f"{problem}; {START_ENGINE_HINT}"
    if os.environ.get("BYOC_REQUIRE_DOCKER") == "1":
        pytest.fail(f"BYOC_REQUIRE_DOCKER=1 but {message}", pytrace=False)
    pytest.skip(message)


# torch from pip's default index (PyPI), the one index this offline machine and CI reach; the
# Dockerfiles' own defaults (PyTorch's CUDA 12.6 and CPU indexes) are for real builds (buildspec.yml).
TEST_BUILD_ARGS = ("--build-arg", "TORCH_INDEX_URL=")


def build_image(dockerfile: str, tag: str) -> float:
    """``docker build`` one image from the checkout; returns the build time in seconds."""
    start = time.monotonic()
    proc = subprocess.run(
        ["docker", "build", "--network", "host", *TEST_BUILD_ARGS, "-f", str(REPO_ROOT / dockerfile), "-t", tag,
         str(REPO_ROOT)],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )
    if proc.returncode != 0:
        pytest.fail(f"building {tag} from {dockerfile} failed (exit {proc.returncode}):\n"
                    f"{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}", pytrace=False)
    return time.monotonic() - start


@pytest.fixture(scope="session")
def train_image(docker_engine) -> str:
    build_image("docker/train.Dockerfile", TRAIN_IMAGE)
    return TRAIN_IMAGE


@pytest.fixture(scope="session")
def serve_image(docker_engine) -> str:
    build_image("docker/serve.Dockerfile", SERVE_IMAGE)
    return SERVE_IMAGE


@pytest.fixture
def give_back_to_user():
    """Containers run as root: hand what they wrote under the given folders back to this user.

    Usage: ``give_back_to_user(image, folder)``; runs at teardown, so pytest can delete tmp_path.
    Nothing to do when the tests themselves run as root.
    """
    pending: list[tuple[str, Path]] = []
    yield lambda image, folder: pending.append((image, Path(folder)))
    if os.getuid() == 0:
        return
    for image, folder in pending:
        run_docker("run", "--rm", "--network", "host", "--entrypoint", "chown", "-v", f"{folder}:/owned",
               image, "-R", f"{os.getuid()}:{os.getgid()}", "/owned", check=False)
