"""The training image run as a new user runs it, `docker run -v <dir>:/opt/ml IMAGE train`, where the
machine is less kind than SageMaker: docker's default 64 MB /dev/shm, host names that do not resolve.

Every container here gets a resolv.conf naming only 127.0.0.1, so a host lookup never leaves the
machine. Each `docker run` has a generous subprocess timeout as a guard against a hang; the tests
assert outcomes, never durations.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import pytest

from byoc.datasets.synthetic import make_dataset
from byoc_common.artifact import load_model_artifact
from container_train import contract
from container_train.hyperparameters import to_sagemaker_strings

pytestmark = [pytest.mark.container, pytest.mark.slow]

GUARD_TIMEOUT_S = 900


@pytest.fixture
def opt_ml(tmp_path, train_image, give_back_to_user):
    """A hand-made /opt/ml: a training channel holding train/ valid/ test/ and input/config/."""
    root = tmp_path / "ml"
    give_back_to_user(train_image, root)
    (root / "input" / "config").mkdir(parents=True)
    return root


@pytest.fixture
def loopback_resolv_conf(tmp_path):
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 127.0.0.1\n")
    return path


def docker_run(image, opt_ml, resolv_conf, *extra: str) -> subprocess.CompletedProcess:
    """``docker run IMAGE train`` on ``opt_ml``; a hang past the guard kills the container and fails."""
    name = f"byoc-train-faults-{uuid.uuid4().hex[:8]}"
    cmd = ["docker", "run", "--rm", "--name", name, "--network", "host", "-v", f"{resolv_conf}:/etc/resolv.conf:ro",
           "-v", f"{opt_ml}:/opt/ml", *extra, image, "train"]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=GUARD_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the container was still running after {GUARD_TIMEOUT_S} s:\n{(e.stdout or '')[-3000:]}")
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def test_default_shm_and_default_hyperparameters_finish_a_job(train_image, opt_ml, loopback_resolv_conf):
    """resnet50 at 224 px, batch 32, 2 workers: 18 MiB batches that 64 MB of /dev/shm cannot hold
    for three loaders. Only what an offline, short job needs is set: random weights, one epoch of
    two steps. No --shm-size and no --add-host: the job adapts and maps its own host to loopback."""
    make_dataset(opt_ml / "input" / "data" / "training", num_classes=2,
                 per_class={"train": 128, "valid": 64, "test": 32}, size=48)
    hp = {"pretrained": False, "epochs": 1, "max-steps-per-epoch": 2}
    (opt_ml / "input" / "config" / "hyperparameters.json").write_text(json.dumps(to_sagemaker_strings(hp)))

    proc = docker_run(train_image, opt_ml, loopback_resolv_conf)

    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    shm_warnings = [line for line in log.splitlines() if "/dev/shm has" in line]
    assert len(shm_warnings) == 1, shm_warnings
    assert "loading in the main process (workers=0)" in shm_warnings[0]
    assert "algo-1 is this one-host job's own host: mapped it to 127.0.0.1" in log
    metrics = json.loads((opt_ml / "output" / "data" / contract.METRICS_FILE).read_text())
    assert metrics["status"] == "completed" and metrics["epochs_completed"] == 1
    assert metrics["hyperparameters"]["arch"] == "resnet50" and metrics["hyperparameters"]["workers"] == 2
    assert metrics["data_loading"]["workers"] == 0
    assert metrics["test"]["images"] == 2 * 32
    _, classes, config = load_model_artifact(opt_ml / "model")
    assert len(classes) == 2 and config.image_size == 224
    assert not (opt_ml / "output" / "failure").exists()


def test_a_host_that_does_not_resolve_fails_with_its_reason_within_the_bound(train_image, opt_ml, tmp_path,
                                                                           loopback_resolv_conf):
    """A two-host resourceconfig.json whose second host nobody maps: the toolkit alone would retry
    the lookup for 15 minutes; the entry point gives up after BYOC_HOST_RESOLUTION_TIMEOUT_S."""
    data = make_dataset(tmp_path / "data", num_classes=2, per_class=4, size=32)
    shutil.copytree(data, opt_ml / "input" / "data" / "training")
    config = opt_ml / "input" / "config"
    (config / "hyperparameters.json").write_text(json.dumps(to_sagemaker_strings({"pretrained": False})))
    (config / "resourceconfig.json").write_text(json.dumps(
        {"current_host": "algo-1", "hosts": ["algo-1", "algo-2"], "network_interface_name": "eth0"}))

    proc = docker_run(train_image, opt_ml, loopback_resolv_conf, "--add-host", "algo-1:127.0.0.1",
                      "-e", "BYOC_HOST_RESOLUTION_TIMEOUT_S=5")

    assert proc.returncode != 0, (proc.stdout + proc.stderr)[-3000:]
    failure = (opt_ml / "output" / "failure").read_text()
    assert failure.startswith("host name(s) algo-2 from /opt/ml/input/config/resourceconfig.json did not "
                              "resolve within 5 s"), failure
    assert "--add-host algo-2:127.0.0.1" in failure
    assert "not starting the job" in proc.stderr
    assert not (opt_ml / "model" / "model.pth").exists()
