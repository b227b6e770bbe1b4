"""The ``serve`` entry point: configure and run multi-model-server with our handler service.

SageMaker starts the serving image as ``docker run IMAGE serve``. This process then

1. reads the environment (:class:`container_serve.settings.ServeSettings`),
2. writes an MMS config file: the sagemaker-inference toolkit's defaults (its ``default-mms.properties``
   or, for multi-model endpoints, ``mme-mms.properties``) plus port, workers, timeouts, request size,
   job queue and the ``/execution-parameters`` plugin,
3. starts ``multi-model-server --foreground`` in its own process group and waits for it, and
4. on SIGTERM/SIGINT stops the whole group (the Java frontend *and* its python workers, which the
   frontend leaves running when it is killed alone) and exits.

Why not ``sagemaker_inference.model_server.start_model_server``: it writes the config to the fixed
path ``/etc/sagemaker-mms.properties`` (needs root, collides between servers), finds "its" server by
scanning every process on the host and refuses to start when two MMS servers run on one machine (local
tests, a CI host), pip-installs a ``requirements.txt`` from the model directory at start-up, and on
SIGTERM only signals the Java process. We reuse the toolkit's config defaults, log4j config and
environment variable names, so the container behaves the same way under SageMaker.

Single-model endpoints serve ``<model root>`` (``/opt/ml/model``) as the model named ``model``;
multi-model endpoints start empty and SageMaker loads models with ``POST /models``. MMS resolves a
model ``url`` against its model store, which is ``/`` (as with the toolkit) so SageMaker's absolute
``/opt/ml/models/...`` urls work; the handler refuses directories outside the model root.
"""

from __future__ import annotations

import argparse
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

from byoc_common.artifact import ModelArtifactError
from container_serve.mms_plugin import ensure_plugins_dir
from container_serve.settings import ServeSettings, SettingsError

logger = logging.getLogger("container_serve.serve")

HANDLER_SERVICE = "container_serve.handler_service"
SINGLE_MODEL_NAME = "model"
STOP_GRACE_S = 20.0


def _toolkit_file(name: str) -> Path:
    import sagemaker_inference

    return Path(sagemaker_inference.__file__).resolve().parent / "etc" / name


def mms_properties(settings: ServeSettings, plugins_dir: Path | None) -> str:
    """The MMS config file content."""
    base = _toolkit_file("mme-mms.properties" if settings.multi_model else "default-mms.properties")
    address = f"http://{settings.bind_address}:{settings.port}"
    ours = {
        "model_store": "/",
        "default_service_handler": HANDLER_SERVICE,
        "inference_address": address,
        "management_address": address,
        "default_workers_per_model": settings.workers_per_model,
        "default_response_timeout": settings.response_timeout_s,
        "unregister_model_timeout": settings.response_timeout_s,
        "job_queue_size": settings.job_queue_size,
        "max_request_size": settings.max_payload_bytes,
        # responses can carry Grad-CAM PNGs for many images; let them be as big as requests
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
    env["BYOC_MODEL_ROOT"] = str(settings.model_root)
    env["SAGEMAKER_MULTI_MODEL"] = "true" if settings.multi_model else "false"
    if plugins_available:
        env["BYOC_EXECUTION_PARAMETERS"] = json.dumps(settings.execution_parameters())
    return env


def _mms_executable() -> str:
    beside_python = Path(sys.executable).with_name("multi-model-server")
    found = str(beside_python) if beside_python.exists() else shutil.which("multi-model-server")
    if found is None:
        raise FileNotFoundError("multi-model-server is not installed (pip install multi-model-server)")
    return found


def mms_command(settings: ServeSettings, config_file: Path) -> list[str]:
    cmd = [
        _mms_executable(),
        "--start", "--foreground",
        "--model-store", "/",
        "--mms-config", str(config_file),
        "--log-config", str(_toolkit_file("log4j2.xml")),
    ]
    if not settings.multi_model:
        cmd += ["--models", f"{SINGLE_MODEL_NAME}={settings.model_root}"]
    return cmd


class ModelServerProcess:
    """multi-model-server running in its own process group, stoppable as a whole."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.run_dir = Path(tempfile.mkdtemp(prefix="byoc-mms-"))
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        plugins_dir = ensure_plugins_dir()
        config_file = self.run_dir / "mms.properties"
        config_file.write_text(mms_properties(self.settings, plugins_dir))
        cmd = mms_command(self.settings, config_file)
        logger.info("starting: %s", " ".join(cmd))
        self.proc = subprocess.Popen(
            cmd, env=worker_environment(self.settings, self.run_dir, plugins_dir is not None),
            cwd=self.run_dir, process_group=0,
        )

    def wait(self, should_stop) -> int | None:
        """Block until MMS exits (its return code) or ``should_stop()`` turns true (None)."""
        while not should_stop():
            code = self.proc.poll()
            if code is not None:
                return code
            time.sleep(0.2)
        return None

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the whole group (frontend and workers), SIGKILL what is left after ``grace_s``."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _group_alive(pgid):
            self.proc.poll()
            time.sleep(0.2)
        if _group_alive(pgid):
            logger.warning("model server did not stop within %.0fs; killing it", grace_s)
            _signal_group(pgid, signal.SIGKILL)
        self.proc.wait()


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


def check_model_root(settings: ServeSettings) -> None:
    if settings.multi_model:
        settings.model_root.mkdir(parents=True, exist_ok=True)
        return
    from byoc_common.artifact import read_model_metadata

    read_model_metadata(settings.model_root)  # fail fast with a clear message, before Java starts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="serve", description=__doc__.split("\n\n")[0])
    # SageMaker runs the image as "docker run IMAGE serve", so "serve" may arrive as an argument.
    parser.add_argument("command", nargs="?", choices=["serve"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = ServeSettings.from_env()
        logger.info("settings: %s", settings)
        check_model_root(settings)
    except (SettingsError, ModelArtifactError) as e:
        logger.error("cannot serve: %s", e)
        return 2

    server = ModelServerProcess(settings)
    received: list[int] = []

    def on_signal(signo, _frame):
        # Only record it: stopping needs Popen.wait, which must not run inside a signal handler.
        logger.info("received signal %d, stopping the model server", signo)
        received.append(signo)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start()
        code = server.wait(lambda: bool(received))
    finally:
        server.stop()
        shutil.rmtree(server.run_dir, ignore_errors=True)
    if code is not None:
        logger.error("model server exited unexpectedly with code %s", code)
        return code or 1
    logger.info("model server stopped")
    return 0

if __name__ == "__main__":
    sys.exit(main())
