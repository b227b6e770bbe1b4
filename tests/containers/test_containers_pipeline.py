"""`byoc pipeline --tiny --containers`: the main job with every training job (tuning trials included)
run by the training image and the endpoint run by the serving image, checked like the process-mode run
in tests/cli/test_pipeline_tiny.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.pipeline_checks import check_pipeline_artifacts

pytestmark = [pytest.mark.container, pytest.mark.slow]

BYOC = Path(sys.executable).with_name("byoc")


# No pytest timeout: the image fixtures may build both images cold first (minutes); the pipeline run
# itself is bounded by subprocess.run's timeout.
def test_pipeline_runs_on_the_images(train_image, serve_image, tmp_path, give_back_to_user):
    run = tmp_path / "run"
    give_back_to_user(train_image, run)
    cmd = [str(BYOC), "pipeline", "--tiny", "--containers", "--run-dir", str(run)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1400)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]

    check_pipeline_artifacts(run)
    # The jobs really ran in the images: the toolkit in the training image staged its train.py into
    # the job's /opt/ml/code, and the server saw its models at the container's /opt/ml/models.
    steps = json.loads((run / "state.json").read_text())["steps"]
    assert (Path(steps["train"]["outputs"]["job_dir"]) / "code" / "train.py").is_file()
    assert "/opt/ml/models" in (run / "endpoint" / "server.log").read_text()
