"""docker/train_entrypoint.py outside a container: staging train.py and finding the trainer process."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_entrypoint():
    spec = importlib.util.spec_from_file_location("train_entrypoint", REPO_ROOT / "docker" / "train_entrypoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_user_script_fills_an_empty_code_dir_and_keeps_an_existing_one(tmp_path):
    entry = load_entrypoint()
    spare = tmp_path / "spare_train.py"
    spare.write_text("print('image copy')\n")
    env = {"SAGEMAKER_BASE_DIR": str(tmp_path / "opt_ml"), "SAGEMAKER_PROGRAM": "train.py",
           "BYOC_TRAIN_SCRIPT": str(spare)}

    staged = entry.stage_user_script(env)
    assert staged == tmp_path / "opt_ml" / "code" / "train.py"
    assert staged.read_text() == "print('image copy')\n"

    staged.write_text("print('mounted copy')\n")
    assert entry.stage_user_script(env) is None
    assert staged.read_text() == "print('mounted copy')\n"


def test_trainer_processes_looks_through_a_shell_wrapper():
    """The toolkit starts the script through `/bin/sh -c`; the signal must reach the script, not sh."""
    entry = load_entrypoint()
    toolkit = subprocess.Popen([sys.executable, "-c",
                                "import subprocess; subprocess.run(['sh', '-c', 'sleep 30; true'])"],
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        names: list[str] = []
        # Until sh has started sleep (a child caught between fork and exec still has its parent's name).
        while time.monotonic() < deadline and names != ["sleep"]:
            names = [p.name() for p in entry.user_script_processes(toolkit.pid)]
            time.sleep(0.1)
        assert names == ["sleep"]
    finally:
        os.killpg(toolkit.pid, signal.SIGKILL)      # the whole little tree: python, sh, sleep
        toolkit.wait()


def test_a_distributed_job_is_stopped_through_its_ranks_not_torchrun(tmp_path):
    """Signalled, torchrun stops its ranks and exits failed; the ranks themselves stop cleanly."""
    entry = load_entrypoint()
    torchrun = tmp_path / "torchrun"
    torchrun.write_text("import subprocess, sys\nsubprocess.run(['sleep', '30'])\n")
    toolkit = subprocess.Popen([sys.executable, "-c", f"import subprocess; subprocess.run(['sh', '-c', "
                                f"'{sys.executable} {torchrun}; true'])"], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        names: list[str] = []
        while time.monotonic() < deadline and names != ["sleep"]:   # torchrun itself until its rank starts
            names = [p.name() for p in entry.user_script_processes(toolkit.pid)]
            time.sleep(0.1)
        assert names == ["sleep"]
    finally:
        os.killpg(toolkit.pid, signal.SIGKILL)
        toolkit.wait()


def test_missing_job_config_is_filled_in_and_existing_files_are_kept(tmp_path):
    """A hand-made /opt/ml (no resourceconfig.json) would make the toolkit exit 0 doing nothing."""
    import json

    entry = load_entrypoint()
    base = tmp_path / "opt_ml"
    (base / "input" / "data" / "training").mkdir(parents=True)
    (base / "input" / "data" / "pretrained").mkdir()
    (base / "input" / "config").mkdir()
    (base / "input" / "config" / "hyperparameters.json").write_text('{"epochs": "3"}')

    entry.fill_missing_config({"SAGEMAKER_BASE_DIR": str(base)})

    config = base / "input" / "config"
    assert json.loads((config / "resourceconfig.json").read_text())["hosts"] == ["algo-1"]
    assert sorted(json.loads((config / "inputdataconfig.json").read_text())) == ["pretrained", "training"]
    assert json.loads((config / "hyperparameters.json").read_text()) == {"epochs": "3"}


# ---- host names in resourceconfig.json ------------------------------------------------------------

class FakeClock:
    """Time that passes only when the code under test sleeps: the bounded wait ends without waiting."""

    def __init__(self):
        self.now = 0.0
        self.slept = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _job(tmp_path, hosts, current="algo-1"):
    import json

    base = tmp_path / "opt_ml"
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": current, "hosts": hosts, "network_interface_name": "eth0"}))
    return base


def test_a_host_that_never_resolves_fails_after_the_bound_with_what_to_do(tmp_path):
    entry = load_entrypoint()
    base = _job(tmp_path, ["algo-1", "algo-2"])
    clock = FakeClock()
    looked_up = []

    def resolve(host):
        looked_up.append(host)
        return host == "algo-1"

    reason = entry.check_hosts({"SAGEMAKER_BASE_DIR": str(base), "BYOC_HOST_RESOLUTION_TIMEOUT_S": "20"},
                               hosts_file=tmp_path / "hosts", resolve=resolve, clock=clock, sleep=clock.sleep)

    assert reason.startswith("host name(s) algo-2 from ")
    assert "did not resolve within 20 s" in reason and "--add-host algo-2:127.0.0.1" in reason
    assert 20 <= clock.now < 31 and looked_up.count("algo-1") == 1       # bounded; resolved hosts not retried
    assert not (tmp_path / "hosts").exists()                            # a multi-host job is never remapped


def test_a_local_one_host_job_maps_its_host_to_loopback_without_a_lookup(tmp_path):
    entry = load_entrypoint()
    base = _job(tmp_path, ["algo-1"])
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text("127.0.0.1 localhost")

    def resolve(host):
        raise AssertionError(f"looked up {host}")

    env = {"SAGEMAKER_BASE_DIR": str(base)}
    assert entry.check_hosts(env, hosts_file=hosts_file, resolve=resolve) is None
    assert hosts_file.read_text() == "127.0.0.1 localhost\n127.0.0.1 algo-1\n"
    assert entry.check_hosts(env, hosts_file=hosts_file, resolve=resolve) is None
    assert hosts_file.read_text().count("algo-1") == 1                  # mapped once


def test_on_sagemaker_a_one_host_job_waits_for_its_name_and_never_edits_etc_hosts(tmp_path):
    entry = load_entrypoint()
    base = _job(tmp_path, ["algo-1"])
    clock = FakeClock()
    answers = iter([False, False, True])
    env = {"SAGEMAKER_BASE_DIR": str(base), "TRAINING_JOB_ARN": "arn:aws:sagemaker:eu-west-1:1:training-job/j"}

    assert entry.check_hosts(env, hosts_file=tmp_path / "hosts", resolve=lambda h: next(answers), clock=clock,
                             sleep=clock.sleep) is None
    assert clock.slept == [0.5, 1.0] and not (tmp_path / "hosts").exists()


def test_studio_local_mode_and_a_missing_config_skip_the_check(tmp_path):
    entry = load_entrypoint()
    base = _job(tmp_path, ["algo-1", "algo-2"])

    def resolve(host):
        raise AssertionError(f"looked up {host}")

    assert entry.check_hosts({"SAGEMAKER_BASE_DIR": str(base), "SM_STUDIO_LOCAL_MODE": "true"}, resolve=resolve) is None
    assert entry.check_hosts({"SAGEMAKER_BASE_DIR": str(tmp_path / "none")}, resolve=resolve) is None


# ---- `serve`: what the SageMaker SDK runs when deploy() gets no image_uri -------------------------

def _run_entrypoint(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run([sys.executable, str(REPO_ROOT / "docker" / "train_entrypoint.py"), *args],
                          env=full_env, capture_output=True, text=True, timeout=60)


def test_serve_is_refused_at_once_with_one_line_naming_the_serving_image(tmp_path):
    # A job tree that `train` would start on: `serve` must not touch it.
    env = {"SAGEMAKER_BASE_DIR": str(tmp_path / "opt_ml"), "SAGEMAKER_PROGRAM": "train.py",
           "BYOC_TRAIN_SCRIPT": str(REPO_ROOT / "container_train" / "train.py")}
    done = _run_entrypoint("serve", env=env)
    assert done.returncode == 2
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) == 1, lines
    assert "this is the byoc training image" in lines[0] and 'image_uri="<serving image URI' in lines[0]
    assert "Traceback" not in lines[0] and not (tmp_path / "opt_ml").exists()

    named = _run_entrypoint("serve", env={"BYOC_SERVE_IMAGE": "123.dkr.ecr.eu-west-1.amazonaws.com/byoc-serve:abc"})
    assert named.returncode == 2
    assert 'estimator.deploy(..., image_uri="123.dkr.ecr.eu-west-1.amazonaws.com/byoc-serve:abc")' in named.stderr
