"""multi-model-server as a child process: its config, its command line, its environment, its process group.

MMS gets the sagemaker-inference toolkit's defaults (``default-mms.properties``, or ``mme-mms.properties``
for multi-model endpoints) plus workers, timeouts, request size, job queue and the
``/execution-parameters`` plugin, and it listens **only on two Unix sockets** in a private folder
(``inference.sock``, ``management.sock``; MMS ``Connector`` accepts ``unix:/path`` addresses). The port
SageMaker talks to belongs to the gate (:mod:`container_serve.gate`), which alone decides what reaches
MMS. ``enable_envvars_config`` is switched off, so no ``MMS_*`` variable can reconfigure it.

Why not ``sagemaker_inference.model_server.start_model_server``: it writes the config to the fixed path
``/etc/sagemaker-mms.properties`` (needs root, collides between servers), finds "its" server by scanning
every process on the host and refuses to start when two MMS servers run on one machine (local tests, a CI
host), pip-installs a ``requirements.txt`` from the model directory at start-up, and on SIGTERM only
signals the Java process.

Single-model endpoints serve ``<model root>`` (``/opt/ml/model``) as the model named ``model``;
multi-model endpoints start empty. MMS resolves a model ``url`` against its model store, which is ``/``
(as with the toolkit) so SageMaker's absolute ``/opt/ml/models/...`` urls work.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from container_serve.core_slots import make_slot_files
from container_serve.fork_launch import ForkServerProcess
from container_serve.settings import CORE_SLOTS_ENV, LOAD_REPORTS_ENV, ServeSettings, cpu_count

logger = logging.getLogger(__name__)

HANDLER_SERVICE = "container_serve.handler_service"
MMS_RUNTIME = "python"  # MMS Manifest.RuntimeType.PYTHON: the configured interpreter, not one named by a model
SINGLE_MODEL_NAME = "model"
STOP_GRACE_S = 20.0
INFERENCE_SOCKET = "inference.sock"
MANAGEMENT_SOCKET = "management.sock"
LOAD_REPORTS_DIR = "load-reports"
CORE_SLOTS_DIR = "core-slots"


def _toolkit_file(name: str) -> Path:
    import sagemaker_inference

    return Path(sagemaker_inference.__file__).resolve().parent / "etc" / name


def mms_properties(settings: ServeSettings, run_dir: Path, plugins_dir: Path | None) -> str:
    """The MMS config file content."""
    base = _toolkit_file("mme-mms.properties" if settings.multi_model else "default-mms.properties")
    ours = {
        "model_store": "/",
        "default_service_handler": HANDLER_SERVICE,
        "inference_address": f"unix:{run_dir / INFERENCE_SOCKET}",
        "management_address": f"unix:{run_dir / MANAGEMENT_SOCKET}",
        "use_native_io": "true",  # Unix sockets need netty's epoll transport
        "enable_envvars_config": "false",
        "default_workers_per_model": settings.workers_per_model,
        "default_response_timeout": settings.response_timeout_s,
        "unregister_model_timeout": settings.response_timeout_s,
        "job_queue_size": settings.job_queue_size,
        "max_request_size": settings.max_payload_bytes,
        # responses can carry Grad-CAM PNGs; let them be as big as requests
        "max_response_size": max(settings.max_payload_bytes, 6553500),
        "preload_model": "false",
        "vmargs": settings.jvm_args,
    }
    # Keep the toolkit's defaults (decode_input_request=false, async logging, ...) except the keys we set
    # (its multi-model file has placeholders such as $$SAGEMAKER_HANDLER$$ for some of them).
    lines = [ln for ln in base.read_text().splitlines()
             if ln.strip() and not ln.startswith("#") and ln.split("=", 1)[0].strip() not in ours]
    if plugins_dir is not None:
        ours["plugins_path"] = str(plugins_dir)
    return "\n".join(lines + [f"{k}={v}" for k, v in ours.items()]) + "\n"


def worker_environment(settings: ServeSettings, run_dir: Path, plugins_available: bool) -> dict[str, str]:
    """Environment for MMS and (inherited) its python workers."""
    env = dict(os.environ)
    project_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, env.get("PYTHONPATH")) if p)
    # Each server gets private temp space: MMS keeps its pid file and worker sockets there, so several
    # servers on one host (tests) never collide.
    env["TEMP"] = env["TMPDIR"] = str(run_dir)
    # Size OpenMP/MKL pools before torch starts them (initialize() also calls torch.set_num_threads).
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "BYOC_TORCH_THREADS"):
        env[name] = str(settings.torch_threads)
    env["OMP_WAIT_POLICY"] = settings.omp_wait_policy  # read when libgomp loads, so set it here
    env["BYOC_MODEL_ROOT"] = str(settings.model_root)
    env["SAGEMAKER_MULTI_MODEL"] = "true" if settings.multi_model else "false"
    env[LOAD_REPORTS_ENV] = str(run_dir / LOAD_REPORTS_DIR)
    env[CORE_SLOTS_ENV] = str(run_dir / CORE_SLOTS_DIR)
    if plugins_available:
        env["BYOC_EXECUTION_PARAMETERS"] = json.dumps(settings.execution_parameters())
    return env


def _mms_executable() -> str:
    beside_python = Path(sys.executable).with_name("multi-model-server")
    found = str(beside_python) if beside_python.exists() else shutil.which("multi-model-server")
    if found is None:
        raise FileNotFoundError("multi-model-server is not installed (pip install multi-model-server)")
    return found


def mms_command(settings: ServeSettings, config_file: Path, python: Path | None = None) -> list[str]:
    """``multi-model-server --start --foreground ...``; with ``python``, MMS's launcher run by
    :mod:`container_serve.mms_launcher` so that the frontend runs ``python`` for its workers."""
    launcher = ([_mms_executable()] if python is None
                else [sys.executable, "-m", "container_serve.mms_launcher", str(python)])
    cmd = [
        *launcher,
        "--start", "--foreground",
        "--model-store", "/",
        "--mms-config", str(config_file),
        "--log-config", str(_toolkit_file("log4j2.xml")),
    ]
    if not settings.multi_model:
        cmd += ["--models", f"{SINGLE_MODEL_NAME}={settings.model_root}"]
    return cmd


class ModelServerProcess:
    """multi-model-server running in its own process group, stoppable as a whole; with
    ``BYOC_FORK_SERVER``, the fork server its workers are forked from in a second one
    (:mod:`container_serve.fork_launch`)."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.run_dir = Path(tempfile.mkdtemp(prefix="byoc-mms-"))  # mode 0700: only this user reaches the sockets
        self.inference_socket = self.run_dir / INFERENCE_SOCKET
        self.management_socket = self.run_dir / MANAGEMENT_SOCKET
        self.load_reports_dir = self.run_dir / LOAD_REPORTS_DIR
        self.proc: subprocess.Popen | None = None
        self.fork_server = ForkServerProcess(self.run_dir)

    def start(self) -> None:
        from container_serve.mms_plugin import ensure_plugins_dir

        plugins_dir = ensure_plugins_dir()
        self.load_reports_dir.mkdir()
        make_slot_files(self.run_dir / CORE_SLOTS_DIR, cpu_count(self.settings.cgroup_dir))
        config_file = self.run_dir / "mms.properties"
        config_file.write_text(mms_properties(self.settings, self.run_dir, plugins_dir))
        env = worker_environment(self.settings, self.run_dir, plugins_dir is not None)
        python = self.fork_server.start(env) if self.settings.fork_server else None
        cmd = mms_command(self.settings, config_file, python)
        logger.info("starting: %s", " ".join(cmd))
        self.proc = subprocess.Popen(cmd, env=env, cwd=self.run_dir, process_group=0)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the whole group (frontend and workers) and the fork server's (it and the workers
        forked from it), SIGKILL what is left after ``grace_s``."""
        self.fork_server.stopping = True
        procs = [p for p in (self.proc, self.fork_server.proc) if p is not None]
        for proc in procs:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_group_alive(p.pid) for p in procs):
            for proc in procs:
                proc.poll()
            time.sleep(0.2)
        for proc in procs:
            if _group_alive(proc.pid):
                logger.warning("process group %d did not stop within %.0fs; killing it", proc.pid, grace_s)
                _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()

    def cleanup(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
