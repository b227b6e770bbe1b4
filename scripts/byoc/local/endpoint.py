"""Run the serving container's code as a local endpoint: the real multi-model-server on 127.0.0.1.

Process mode (default) runs ``python -m container_serve.serve`` from this checkout; container mode
(``image="byoc-serve:latest"``) runs ``docker run --network host IMAGE serve`` with the model root
mounted where SageMaker puts models. Either way the endpoint answers the SageMaker HTTP contract on
``endpoint.url``::

    with LocalEndpoint(model_root="runs/models") as ep:          # multi-model endpoint
        ep.deploy("dogs", "runs/job1/model.tar.gz")              # unpack to runs/models/dogs/
        ep.client.load_model("dogs", ep.model_url("dogs"))       # POST /models
        status, headers, body = ep.client.invoke(jpeg_bytes, "image/jpeg", target_model="dogs")

    with LocalEndpoint(model_root="runs/job1/model", multi_model=False) as ep:   # single model
        ep.client.invoke(jpeg_bytes, "image/jpeg")               # POST /invocations

This module runs the server; every HTTP call goes through its :attr:`LocalEndpoint.client`
(:class:`byoc.local.client.EndpointClient`).

``model_root`` plays ``/opt/ml/models`` (multi-model) or ``/opt/ml/model`` (single model); without one a
temporary folder is used. Server logs go to ``log_file`` (a temporary file by default, see
``.log_path`` / ``.log_text()``). ``stop()`` sends SIGTERM, as SageMaker does, and waits.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from byoc.errors import EndpointError
from byoc.local.client import EndpointClient
from byoc_common.sagemaker_paths import MODEL_DIR, MULTI_MODEL_ROOT

CONTAINER_MODEL_ROOT = {True: MULTI_MODEL_ROOT, False: MODEL_DIR}
STOP_TIMEOUT_S = 60.0
# Ports picked for local endpoints: below Linux's default ephemeral range (32768-60999), so a
# port chosen here is not also handed out to some outgoing connection meanwhile.
FREE_PORT_RANGE = (20000, 32767)


def port_in_use(port: int) -> bool:
    """Whether something already listens on 127.0.0.1:``port`` (a bind test, as the server's own
    bind would fail)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def refuse_taken_port(port: int) -> None:
    """Raise :class:`EndpointError` with the reason when ``port`` is taken, before anything starts.

    Started anyway, the new server dies on "address already in use" while the old endpoint answers
    its ``/ping`` in its place, so the caller would record (and later delete) an endpoint it does not own.
    """
    if not port_in_use(port):
        return
    if EndpointClient(f"http://127.0.0.1:{port}").ping():
        raise EndpointError(f"port {port} is taken: an endpoint already answers /ping there (another "
                            "`byoc serve`? `byoc cleanup --run-dir ITS_RUN_DIR` stops it); pick another --port")
    raise EndpointError(f"port {port} is taken by another program (not an endpoint); pick another --port")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 in :data:`FREE_PORT_RANGE`."""
    low, high = FREE_PORT_RANGE
    for _ in range(200):
        port = random.randint(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise EndpointError(f"no free port found between {low} and {high}")


class LocalEndpoint:
    def __init__(self, port: int | None = None, model_root: str | os.PathLike | None = None,
                 multi_model: bool = True, image: str | None = None, env: dict | None = None,
                 log_file: str | os.PathLike | None = None, startup_timeout: float = 180.0):
        self.port = port or free_port()
        self.multi_model = multi_model
        self.image = image
        self.env = dict(env or {})
        self.startup_timeout = startup_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="byoc-endpoint-")
        if model_root is None:
            model_root = Path(self._tmp.name) / ("models" if multi_model else "model")
        self.model_root = Path(model_root).resolve()
        if multi_model:
            self.model_root.mkdir(parents=True, exist_ok=True)
        self.log_path = Path(log_file) if log_file else Path(self._tmp.name) / "endpoint.log"
        self._proc: subprocess.Popen | None = None
        self._log = None
        self._container_name = f"byoc-serve-{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def client(self) -> EndpointClient:
        return EndpointClient(self.url)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> LocalEndpoint:
        refuse_taken_port(self.port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(self._command(), env=self._process_env(), stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_for_ping()
        return self

    def _command(self) -> list[str]:
        if self.image is None:
            return [sys.executable, "-m", "container_serve.serve"]
        cmd = ["docker", "run", "--rm", "--name", self._container_name, "--network", "host",
               "-v", f"{self.model_root}:{CONTAINER_MODEL_ROOT[self.multi_model]}"]
        for key, value in self._server_env().items():
            cmd += ["-e", f"{key}={value}"]
        return cmd + [self.image, "serve"]

    def _server_env(self) -> dict[str, str]:
        env = {"SAGEMAKER_BIND_TO_PORT": str(self.port), "BYOC_BIND_ADDRESS": "127.0.0.1",
               "SAGEMAKER_MULTI_MODEL": "true" if self.multi_model else "false"}
        env.update(self.env)
        return env

    def _process_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self._server_env())
        if self.image is None:
            env["BYOC_MODEL_ROOT"] = str(self.model_root)
        return env

    def _wait_for_ping(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EndpointError(f"server exited with code {self._proc.returncode} before answering "
                                    f"/ping: {self._last_log_line()} (whole log: {self.log_path})")
            if self.client.ping():
                return
            time.sleep(0.5)
        self.stop()
        raise EndpointError(f"no healthy /ping within {self.startup_timeout:.0f}s; log {self.log_path}")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM the server (``docker stop`` in container mode) and wait; SIGKILL after ``timeout``."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            if self.image is not None:
                subprocess.run(["docker", "stop", "-t", str(int(timeout)), self._container_name],
                               capture_output=True)
            else:
                self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self._proc.returncode

    def __enter__(self) -> LocalEndpoint:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self._tmp.cleanup()

    def _last_log_line(self) -> str:
        lines = [line.strip() for line in self.log_text().splitlines() if line.strip()]
        return lines[-1] if lines else "no output"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- models ----------------------------------------------------------------------------------
    def deploy(self, name: str, source: str | os.PathLike, overwrite: bool = False) -> Path:
        """Unpack/copy a model (``model.tar.gz`` or model dir) to ``<model_root>/<name>/``."""
        # model_archive reads the artifact with torch: imported here, not at the CLI's start-up
        from container_serve.model_archive import deploy_model

        return deploy_model(source, self.model_root, name, overwrite=overwrite)

    def model_url(self, name: str) -> str:
        """The ``url`` SageMaker would send for a deployed model, as the server sees the filesystem."""
        if self.image is None:
            return str(self.model_root / name)
        return f"{CONTAINER_MODEL_ROOT[True]}/{name}"
