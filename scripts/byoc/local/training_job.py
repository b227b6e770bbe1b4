"""Run the training image's code as a SageMaker training job would, on this machine.

:func:`run_training_job` builds the ``/opt/ml`` tree SageMaker gives a training container under
``job_dir`` and starts the ``sagemaker-training`` toolkit's ``train`` command on it:

* **process mode** (``image=None``): the toolkit from this virtualenv (``<venv>/bin/train``) with
  ``SAGEMAKER_BASE_DIR=<job_dir>``, ``SAGEMAKER_PROGRAM=train.py`` and
  ``SAGEMAKER_SUBMIT_DIRECTORY=<job_dir>/code`` holding a copy of ``container_train/train.py``
  -- the same file in the same place the training image puts it (``/opt/ml/code/train.py``);
* **container mode** (``image="byoc-train:latest"``): ``docker run --network host`` with
  ``job_dir`` mounted at ``/opt/ml`` (channels and the checkpoint dir mounted inside it).

A ``feature_cache_dir`` shared by several jobs (the local tuner's trials) reaches the trainer as
``$BYOC_FEATURE_CACHE_DIR`` (``container_train.feature_cache``): the host path in process mode, a
mount at :data:`CONTAINER_FEATURE_CACHE_DIR` in container mode.

Layout written under ``job_dir``::

    input/config/hyperparameters.json   every value a string, as SageMaker writes it
    input/config/resourceconfig.json    one host, algo-1
    input/config/inputdataconfig.json   one entry per channel, File mode
    input/data/<channel>                symlink to the channel path (process mode) or a mount
    code/train.py                       the user script (process mode)
    model/  output/data/  checkpoints/  (checkpoints -> checkpoint_dir when one is given)

The toolkit's exit code and ``output/failure`` (the FailureReason) come back in
:class:`TrainingJobResult` together with the full log.

Stopping a job: :meth:`TrainingJob.stop` sends SIGTERM to the trainer process (what SageMaker's
StopTrainingJob and a spot interruption do; the trainer checkpoints, saves its best model and
exits 0). :meth:`TrainingJob.kill` sends SIGKILL to everything (a crash or a lost instance).

``byoc train`` is the command line for it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import container_train
from byoc_common.sagemaker_paths import (
    BASE_DIR,
    CHECKPOINT_DIR,
    FAILURE_FILE,
    JOB_LOG_FILE,
    OUTPUT_DATA_DIR,
    SUCCESS_FILE,
)
from container_train.contract import FEATURE_CACHE_DIR_ENV, METRICS_FILE
from container_train.hyperparameters import to_sagemaker_strings
from container_train.job_env import file_mode_input_data_config, single_host_resource_config
from container_train.toolkit_processes import user_script_processes

TRAIN_SCRIPT = Path(container_train.__file__).parent / "train.py"
# The folder holding the images' packages, for the trainer process's PYTHONPATH.
IMAGE_CODE_ROOT = Path(container_train.__file__).parent.parent
# The sagemaker-training toolkit waits (up to 15 min) until the host name "algo-1" resolves unless
# it believes it runs in SageMaker Studio local mode; this is its own switch for local runs.
LOCAL_JOB_ENV = {"SM_STUDIO_LOCAL_MODE": "true"}
TIMEOUT_RETURNCODE = 124
# Where a container sees the feature cache it shares with other jobs (outside /opt/ml: not the job's).
CONTAINER_FEATURE_CACHE_DIR = "/opt/feature-cache"


@dataclass
class TrainingJobResult:
    returncode: int
    job_dir: Path
    model_dir: Path
    output_data_dir: Path
    log_text: str
    failure_reason: str | None
    checkpoint_dir: Path = field(default=None)
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def metrics(self) -> dict | None:
        """``metrics.json`` written by the trainer, or None."""
        path = self.output_data_dir / METRICS_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    @property
    def stopped_early(self) -> bool:
        m = self.metrics
        return bool(m and m.get("status") == "stopped")

    def metric(self, name: str) -> list[float]:
        """Values of a MetricDefinitions metric (e.g. ``validation:accuracy``) in the log."""
        from container_train.contract import parse_metric

        return parse_metric(name, self.log_text)

    def __str__(self) -> str:
        state = "ok" if self.ok else f"exit {self.returncode}"
        reason = f": {self.failure_reason.splitlines()[0]}" if self.failure_reason else ""
        return f"training job {self.job_dir} {state}{reason}"


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def prepare_job_dir(job_dir: Path, hyperparameters: dict, channels: dict[str, str | os.PathLike],
                    checkpoint_dir: str | os.PathLike | None = None, link_inputs: bool = True) -> Path:
    """Write the /opt/ml tree under ``job_dir`` (see the module docstring). Returns the checkpoint dir.

    ``link_inputs=False`` (container mode) leaves channels and checkpoints to be mounted.
    """
    job_dir = Path(job_dir).resolve()
    config = job_dir / "input" / "config"
    _write_json(config / "hyperparameters.json", to_sagemaker_strings(hyperparameters))
    _write_json(config / "resourceconfig.json", single_host_resource_config())
    _write_json(config / "inputdataconfig.json", file_mode_input_data_config(channels))
    data = job_dir / "input" / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, path in channels.items():
        path = Path(path).resolve()    # a missing path becomes a dangling link: the trainer reports it
        link = data / name
        if link.is_symlink() or link.exists():
            if link.is_symlink() or link.is_file():
                link.unlink()
            else:
                shutil.rmtree(link)
        if link_inputs:
            link.symlink_to(path, target_is_directory=True)
    for sub in ("model", "output/data"):
        (job_dir / sub).mkdir(parents=True, exist_ok=True)
    # A job dir reused for a restart must not report the previous run's outcome.
    for stale in (job_dir / FAILURE_FILE, job_dir / SUCCESS_FILE, job_dir / OUTPUT_DATA_DIR / METRICS_FILE):
        stale.unlink(missing_ok=True)
    ckpt_link = job_dir / "checkpoints"
    if checkpoint_dir is None:
        ckpt = ckpt_link
        ckpt.mkdir(parents=True, exist_ok=True)
    else:
        ckpt = Path(checkpoint_dir).resolve()
        ckpt.mkdir(parents=True, exist_ok=True)
        if link_inputs and ckpt != ckpt_link:
            if ckpt_link.is_symlink():
                ckpt_link.unlink()
            elif ckpt_link.exists():
                shutil.rmtree(ckpt_link)
            ckpt_link.symlink_to(ckpt, target_is_directory=True)
    code = job_dir / "code"
    code.mkdir(parents=True, exist_ok=True)
    if link_inputs:
        shutil.copy2(TRAIN_SCRIPT, code / "train.py")
    return ckpt


def toolkit_train_executable() -> Path:
    exe = Path(sys.executable).parent / "train"
    if not exe.exists():
        raise FileNotFoundError(f"the sagemaker-training toolkit's 'train' command is not at {exe}; "
                                "install the project's train dependencies into this virtualenv")
    return exe


class TrainingJob:
    """A running local training job. Use :func:`run_training_job` unless you need to stop/kill it."""

    def __init__(self, job_dir, hyperparameters: dict, channels: dict, checkpoint_dir=None,
                 image: str | None = None, env: dict | None = None, log_file=None, echo: bool = False,
                 feature_cache_dir=None):
        self.job_dir = Path(job_dir).resolve()
        self.job_dir.mkdir(parents=True, exist_ok=True)
        self.image = image
        self.extra_env = {k: str(v) for k, v in (env or {}).items()}
        self.log_file = Path(log_file) if log_file else self.job_dir / JOB_LOG_FILE
        self.echo = echo
        self.channels = {name: Path(p).resolve() for name, p in channels.items()}
        self.feature_cache_dir = None if feature_cache_dir is None else Path(feature_cache_dir).resolve()
        if self.feature_cache_dir is not None:
            self.feature_cache_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_dir = prepare_job_dir(self.job_dir, hyperparameters, self.channels, checkpoint_dir,
                                              link_inputs=image is None)
        self.container_name = f"byoc-train-{uuid.uuid4().hex[:10]}"
        self._proc: subprocess.Popen | None = None
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None

    # --- commands ---------------------------------------------------------------------------------
    def _process_command(self) -> tuple[list[str], dict]:
        env = dict(os.environ)
        env.update({
            "SAGEMAKER_BASE_DIR": str(self.job_dir),
            "SAGEMAKER_PROGRAM": "train.py",
            "SAGEMAKER_SUBMIT_DIRECTORY": str(self.job_dir / "code"),
            "SAGEMAKER_TRAINING_MODULE": "",
            **LOCAL_JOB_ENV,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(IMAGE_CODE_ROOT), env.get("PYTHONPATH", "")])),
            "PYTHONUNBUFFERED": "1",
        })
        if self.feature_cache_dir is not None:
            env[FEATURE_CACHE_DIR_ENV] = str(self.feature_cache_dir)
        env.update(self.extra_env)
        return [str(toolkit_train_executable())], env

    def _container_command(self) -> tuple[list[str], dict]:
        cmd = ["docker", "run", "--rm", "--network", "host", "--name", self.container_name,
               "--add-host", "algo-1:127.0.0.1",     # the toolkit waits until the host name resolves
               "-v", f"{self.job_dir}:{BASE_DIR}",
               "-v", f"{self.checkpoint_dir}:{CHECKPOINT_DIR}"]
        for name, path in self.channels.items():
            cmd += ["-v", f"{path}:{BASE_DIR}/input/data/{name}:ro"]
        env = dict(LOCAL_JOB_ENV)
        if self.feature_cache_dir is not None:
            cmd += ["-v", f"{self.feature_cache_dir}:{CONTAINER_FEATURE_CACHE_DIR}"]
            env[FEATURE_CACHE_DIR_ENV] = CONTAINER_FEATURE_CACHE_DIR
        for k, v in {**env, **self.extra_env}.items():
            cmd += ["-e", f"{k}={v}"]
        cmd += [self.image, "train"]
        return cmd, dict(os.environ)

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> TrainingJob:
        cmd, env = self._container_command() if self.image else self._process_command()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(cmd, env=env, cwd=self.job_dir, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, errors="replace",
                                      start_new_session=True)   # own process group: kill() reaches all
        self._reader = threading.Thread(target=self._pump, name="training-log", daemon=True)
        self._reader.start()
        return self

    def _pump(self) -> None:
        with open(self.log_file, "a", buffering=1) as log:
            for line in self._proc.stdout:
                self._lines.append(line)
                log.write(line)
                if self.echo:
                    sys.stdout.write(line)
                    sys.stdout.flush()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        return "".join(self._lines)

    def trainer_pids(self) -> list[int]:
        """The user script's process(es) in process mode: the ranks of a distributed job, else the
        script (:func:`container_train.toolkit_processes.user_script_processes`)."""
        return [p.pid for p in user_script_processes(self._proc.pid)]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Ask the trainer to stop (checkpoint + save best model, exit 0).

        Process mode signals the trainer process itself: the toolkit does not forward signals to
        the user script. Container mode uses ``docker kill --signal``, which reaches the
        container's init process; the training image must forward it to the trainer.
        """
        if not self.running():
            return
        if self.image:
            subprocess.run(["docker", "kill", "--signal", signal.Signals(sig).name, self.container_name],
                           capture_output=True, check=False)
            return
        for pid in self.trainer_pids() or [self._proc.pid]:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL the toolkit, the trainer and its workers (or the container): no chance to save."""
        if self._proc is None:
            return
        if self.image:
            subprocess.run(["docker", "kill", self.container_name], capture_output=True, check=False)
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float | None = None) -> TrainingJobResult:
        timed_out = False
        try:
            returncode = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            self.kill()
            returncode = TIMEOUT_RETURNCODE
            self._proc.wait()
        # The log pipe closes when the last process holding it (trainer, workers) exits.
        self._reader.join(timeout=30)
        if timed_out:
            self._lines.append(f"[byoc.local.training_job] killed after the {timeout:.0f} s timeout\n")
        failure_file = self.job_dir / FAILURE_FILE
        failure = failure_file.read_text().strip() if failure_file.is_file() else None
        if timed_out and failure is None:
            failure = f"timed out after {timeout:.0f} s"
        return TrainingJobResult(
            returncode=returncode, job_dir=self.job_dir, model_dir=self.job_dir / "model",
            output_data_dir=self.job_dir / OUTPUT_DATA_DIR, log_text=self.log_text(),
            failure_reason=failure, checkpoint_dir=self.checkpoint_dir, timed_out=timed_out,
        )

    def wait_for(self, predicate, timeout: float, poll_s: float = 0.2) -> bool:
        """Poll ``predicate()`` until it is true (True) or the job ends / time runs out (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            if not self.running():
                return bool(predicate())
            time.sleep(poll_s)
        return False


def run_training_job(job_dir, hyperparameters: dict, channels: dict, checkpoint_dir=None,
                     image: str | None = None, env: dict | None = None, timeout: float | None = None,
                     log_file=None, echo: bool = False, feature_cache_dir=None) -> TrainingJobResult:
    """Run one training job to the end (see the module docstring) and return its result."""
    job = TrainingJob(job_dir, hyperparameters, channels, checkpoint_dir=checkpoint_dir, image=image,
                      env=env, log_file=log_file, echo=echo, feature_cache_dir=feature_cache_dir)
    return job.start().wait(timeout=timeout)
