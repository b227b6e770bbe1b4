"""Run the serving container's code as a local endpoint: the real multi-model-server on 127.0.0.1.

Process mode (default) runs ``python -m container_serve.serve`` from this checkout; container mode
(``image="byoc-serve:latest"``) runs ``docker run --network host IMAGE serve`` with the model root
mounted where SageMaker puts models. Either way the endpoint answers the SageMaker HTTP contract on
``endpoint.url``::

    with LocalEndpoint(model_root="runs/models") as ep:          # multi-model endpoint
        ep.deploy("dogs", "runs/job1/model.tar.gz")              # unpack to runs/models/dogs/
        ep.load_model("dogs")                                    # POST /models
        status, headers, body = ep.invoke(jpeg_bytes, "image/jpeg", model="dogs")

    with LocalEndpoint(model_root="runs/job1/model", multi_model=False) as ep:   # single model
        ep.invoke(jpeg_bytes, "image/jpeg")                      # POST /invocations

``model_root`` plays ``/opt/ml/models`` (multi-model) or ``/opt/ml/model`` (single model); without one a
temporary folder is used. Server logs go to ``log_file`` (a temporary file by default, see
``.log_path`` / ``.log_text()``). ``stop()`` sends SIGTERM, as SageMaker does, and waits.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from container_serve.content_types import CUSTOM_ATTRIBUTES_HEADER
from container_serve.model_archive import deploy_model

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONTAINER_MODEL_ROOT = {True: "/opt/ml/models", False: "/opt/ml/model"}
STOP_TIMEOUT_S = 60.0
MMS_MAX_PORT = 32767


class EndpointError(RuntimeError):
    """The local endpoint did not start, or died."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1 below 32767 (multi-model-server refuses higher port numbers)."""
    for _ in range(200):
        port = random.randint(20000, MMS_MAX_PORT - 1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise EndpointError("no free port found between 20000 and 32766")


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

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> LocalEndpoint:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(self._command(), env=self._process_env(), stdout=self._log,
                                      stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, start_new_session=True)
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
                                    f"/ping; log {self.log_path}:\n{self.log_text()[-4000:]}")
            try:
                status, _, _ = self.request("GET", "/ping", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
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

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- models ----------------------------------------------------------------------------------
    def deploy(self, name: str, source: str | os.PathLike, overwrite: bool = False) -> Path:
        """Unpack/copy a model (``model.tar.gz`` or model dir) to ``<model_root>/<name>/``."""
        return deploy_model(source, self.model_root, name, overwrite=overwrite)

    def model_url(self, name: str) -> str:
        """The ``url`` SageMaker would send for a deployed model, as the server sees the filesystem."""
        if self.image is None:
            return str(self.model_root / name)
        return f"{CONTAINER_MODEL_ROOT[True]}/{name}"

    def load_model(self, name: str, url: str | None = None, batch_size: int | None = None,
                   max_batch_delay_ms: int | None = None) -> tuple[int, dict]:
        """POST /models. Plain: the JSON body SageMaker sends. With ``batch_size``: MMS's query-parameter
        form, which also sets server-side batching (SageMaker itself never asks for it)."""
        url = url or self.model_url(name)
        if batch_size is None:
            status, _, body = self.request("POST", "/models", json.dumps(
                {"model_name": name, "url": url}).encode(), "application/json")
            return status, _json_or_text(body)
        query = {"model_name": name, "url": url, "batch_size": batch_size, "initial_workers": 1,
                 "synchronous": "true"}
        if max_batch_delay_ms is not None:
            query["max_batch_delay"] = max_batch_delay_ms
        status, _, body = self.request("POST", "/models?" + urllib.parse.urlencode(query))
        return status, _json_or_text(body)

    def list_models(self, limit: int | None = None, next_page_token: str | None = None) -> tuple[int, dict]:
        query = {k: v for k, v in (("limit", limit), ("next_page_token", next_page_token)) if v is not None}
        path = "/models" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        status, _, body = self.request("GET", path)
        return status, _json_or_text(body)

    def describe_model(self, name: str) -> tuple[int, object]:
        status, _, body = self.request("GET", f"/models/{urllib.parse.quote(name)}")
        return status, _json_or_text(body)

    def unload_model(self, name: str) -> tuple[int, object]:
        status, _, body = self.request("DELETE", f"/models/{urllib.parse.quote(name)}")
        return status, _json_or_text(body)

    # -- inference -------------------------------------------------------------------------------
    def invoke(self, body: bytes, content_type: str, accept: str | None = None, model: str | None = None,
               custom_attributes: str | None = None, timeout: float = 60) -> tuple[int, dict, bytes]:
        """POST /invocations (single model) or /models/<model>/invoke. Returns (status, headers, body)."""
        path = f"/models/{urllib.parse.quote(model)}/invoke" if model else "/invocations"
        headers = {}
        if accept:
            headers["Accept"] = accept
        if custom_attributes:
            headers[CUSTOM_ATTRIBUTES_HEADER] = custom_attributes
        return self.request("POST", path, body, content_type, headers, timeout)

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                headers: dict | None = None, timeout: float = 60) -> tuple[int, dict, bytes]:
        """One HTTP request; returns (status, headers with lower-case names, body) for every status."""
        headers = dict(headers or {})
        if content_type is not None:
            headers["Content-Type"] = content_type
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

def _json_or_text(body: bytes):
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body.decode("utf-8", errors="replace")
