"""Container mode: every trial of the local tuner runs in the training image (docker run)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from scripts.synthetic_dataset import make_dataset
from scripts.tuning.local_tuner import channels_from_data_dir, run_local_tuning
from scripts.tuning.spec import parse_spec

REPO = Path(__file__).resolve().parents[2]
TRAIN_IMAGE = "byoc-train:latest"


@pytest.fixture(scope="module")
def train_image() -> str:
    """The training image built from this checkout (as ``make images``); skip without an engine."""
    problem = None
    if shutil.which("docker") is None:
        problem = "the docker CLI is not installed"
    else:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                              text=True, timeout=30)
        if info.returncode != 0 or not info.stdout.strip():
            problem = "no Docker engine reachable (start one with `make docker-engine`)"
    if problem:
        if os.environ.get("BYOC_REQUIRE_DOCKER") == "1":
            pytest.fail(f"BYOC_REQUIRE_DOCKER=1 but {problem}", pytrace=False)
        pytest.skip(problem)
    build = subprocess.run(["docker", "build", "--network", "host", "-f", "docker/train.Dockerfile",
                            "-t", TRAIN_IMAGE, "."], cwd=REPO, capture_output=True, text=True, timeout=3600)
    if build.returncode != 0:
        pytest.fail(f"building {TRAIN_IMAGE} failed:\n{build.stdout[-4000:]}\n{build.stderr[-2000:]}",
                    pytrace=False)
    return TRAIN_IMAGE


@pytest.mark.slow
@pytest.mark.container
@pytest.mark.timeout(1800)
def test_trials_run_in_the_training_image(train_image, tmp_path):
    data = tmp_path / "data"
    make_dataset(data, num_classes=3, per_class=6, size=32, seed=2)
    spec = parse_spec({
        "objective": {"metric": "validation:loss", "direction": "Minimize"},
        "strategy": "Grid", "max_parallel_jobs": 1, "early_stopping": "Off",
        "parameters": {"lr": {"type": "categorical", "values": [0.01, 0.02]}},
        "static": {"arch": "resnet18", "pretrained": False, "freeze": "none", "image-size": 32, "epochs": 1,
                   "batch-size": 8, "workers": 0, "debugger": False},
    })
    result = run_local_tuning(spec, channels_from_data_dir(data), tmp_path / "tune", image=train_image,
                              progress=False)
    try:
        assert result.counts["complete"] == 2, result.leaderboard
        for row in result.leaderboard:
            job_dir = Path(row["job_dir"])
            # The job ran inside the image (/opt/ml paths in its log) and left its model behind.
            assert "/opt/ml/input/data/training" in (job_dir / "training.log").read_text()
            assert (job_dir / "model" / "model.pth").is_file()
    finally:
        if os.getuid() != 0:   # containers write as root: give the files back so tmp_path can go
            subprocess.run(["docker", "run", "--rm", "--entrypoint", "chown", "-v", f"{tmp_path}:/owned",
                            train_image, "-R", f"{os.getuid()}:{os.getgid()}", "/owned"], check=False)
