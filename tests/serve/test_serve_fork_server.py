"""The fork server with real processes and MMS's real worker script, this test playing MMS's frontend.

The frontend starts a backend worker as ``<python> mms/model_service_worker.py --sock-type unix
--sock-name ... --model-name ...`` with pipes for stdout/stderr, in the model folder, waits for the
``[PID]`` and ``MMS worker started.`` lines, and ends it with SIGKILL (``WorkerLifeCycle``). Here
``<python>`` is the fork client script; the worker it gets is forked from the fork server, binds its
socket and waits for the frontend's connection (``run_server``), which is all these tests need.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from container_serve import fork_wire
from container_serve.fork_launch import ForkServerProcess, mms_worker_script
from container_serve.mms_process import HANDLER_SERVICE, worker_environment
from container_serve.settings import ServeSettings

pytestmark = pytest.mark.slow

WAIT_S = 60.0  # generous bounds for things that happen in milliseconds on a quiet machine


class Launched:
    """One backend worker started the way MMS's frontend starts it, its output read line by line."""

    def __init__(self, client: Path, run_dir: Path, name: str, env: dict[str, str], sock_name: str | None = None):
        self.model_dir = run_dir / "models" / name
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self.sock = sock_name or str(run_dir / f".mms.sock.{name}")
        args = [str(client), str(mms_worker_script()), "--sock-type", "unix", "--sock-name", self.sock,
                "--handler", HANDLER_SERVICE, "--model-path", str(self.model_dir), "--model-name", name,
                "--preload-model", "false", "--tmp-dir", str(run_dir)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     cwd=self.model_dir, env=env, text=True)
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.seen: list[tuple[str, str]] = []
        for name_, stream in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr)):
            threading.Thread(target=self._read, args=(name_, stream), daemon=True).start()

    def _read(self, name: str, stream) -> None:
        for line in stream:
            self.lines.put((name, line.rstrip("\n")))

    def wait_for(self, text: str) -> str:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                item = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            self.seen.append(item)
            if text in item[1]:
                return item[1]
        raise AssertionError(f"no line with {text!r} within {WAIT_S:.0f} s; seen {self.seen}")

    def started(self) -> psutil.Process:
        """The forked worker, once it says it is listening (as the frontend waits for it)."""
        pid = int(self.wait_for("[PID]").split()[-1])
        self.wait_for("MMS worker started.")
        return psutil.Process(pid)

    def end(self) -> int:
        return self.proc.wait(timeout=WAIT_S)


def _gone(proc: psutil.Process) -> bool:
    _, alive = psutil.wait_procs([proc], timeout=WAIT_S)
    return not alive or alive[0].status() == psutil.STATUS_ZOMBIE


def _start_fork_server():
    run_dir = Path(tempfile.mkdtemp(prefix="fork-"))   # short: Unix socket paths are limited to 107 bytes
    env = worker_environment(ServeSettings.from_env({"BYOC_MODEL_ROOT": str(run_dir / "models")}), run_dir, False)
    server = ForkServerProcess(run_dir)
    client = server.start(env)
    assert client is not None, "the fork server did not start (see the log above)"
    return server, client, env, run_dir


@pytest.fixture(scope="module")
def fork_server():
    server, client, env, run_dir = _start_fork_server()
    yield server, client, env, run_dir
    server.kill()
    shutil.rmtree(run_dir, ignore_errors=True)


def test_a_worker_is_forked_and_looks_like_a_fresh_python(fork_server):
    server, client, env, run_dir = fork_server
    launched = Launched(client, run_dir, "alpha", env)
    worker = launched.started()
    try:
        assert worker.pid != launched.proc.pid and worker.ppid() == server.proc.pid
        cmdline = [c for c in worker.cmdline() if c]
        assert cmdline[1] == str(mms_worker_script()) and cmdline[cmdline.index("--model-name") + 1] == "alpha"
        assert Path(worker.cwd()) == launched.model_dir
        assert Path(launched.sock).is_socket()        # it bound MMS's worker socket: run_server is running
        assert not any(s == "stderr" for s, _ in launched.seen), launched.seen  # no fallback message
    finally:
        launched.proc.kill()
        launched.end()
    assert _gone(worker), "the forked worker outlived the SIGKILLed process the frontend launched"


def test_sigterm_is_passed_on_and_the_exit_mirrored(fork_server):
    _, client, env, run_dir = fork_server
    launched = Launched(client, run_dir, "beta", env)
    worker = launched.started()
    launched.proc.send_signal(signal.SIGTERM)
    assert launched.end() == -signal.SIGTERM   # the worker died of SIGTERM, the launched process too
    assert _gone(worker)


def test_the_workers_own_end_reaches_the_frontend(fork_server):
    _, client, env, run_dir = fork_server
    launched = Launched(client, run_dir, "gamma", env)
    worker = launched.started()
    worker.kill()                                # e.g. the OOM killer: the frontend reads exit value 137
    assert launched.end() == -signal.SIGKILL
    failing = Launched(client, run_dir, "delta", env, sock_name=str(run_dir / "no-such-dir" / "sock"))
    failing.wait_for("Backend worker process died")   # run_server could not bind; MMS's own log line
    assert failing.end() == 1


def test_only_mms_worker_script_is_run(fork_server):
    server, _, _, run_dir = fork_server
    marker = run_dir / "ran"
    for argv, fds in [(["/bin/sh", "-c", f"touch {marker}"], 3), ([str(mms_worker_script())], 1)]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(server.socket))
            fork_wire.send(sock, {"argv": argv, "env": {}, "cwd": "/"}, tuple(range(fds)))
            reply, _ = fork_wire.recv(sock)
        assert "only MMS's worker script" in reply["error"] and "pid" not in reply
    assert not marker.exists()
    assert server.proc.poll() is None             # a refused client does not stop the server


def test_a_stopping_fork_server_ends_its_workers_first():
    """serve's stop: SIGTERM to the fork server's process group; it passes SIGTERM on, reaps, exits 0."""
    server, client, env, run_dir = _start_fork_server()
    try:
        launched = Launched(client, run_dir, "epsilon", env)
        worker = launched.started()
        os.killpg(server.proc.pid, signal.SIGTERM)
        assert server.proc.wait(timeout=WAIT_S) == 0
        assert _gone(worker)
        assert launched.end() == -signal.SIGTERM
    finally:
        server.kill()
        shutil.rmtree(run_dir, ignore_errors=True)


def test_workers_die_with_the_fork_server():
    server, client, env, run_dir = _start_fork_server()
    try:
        launched = Launched(client, run_dir, "zeta", env)
        worker = launched.started()
        server.proc.kill()
        server.proc.wait()
        assert _gone(worker)                       # PR_SET_PDEATHSIG
        assert launched.end() == 1
        launched.wait_for("lost the fork server")
        # and the next worker, finding no fork server, runs as a plain python (still MMS's worker)
        plain = Launched(client, run_dir, "eta", env)
        plain.wait_for("plain python process")
        assert plain.started().pid == plain.proc.pid
        plain.proc.kill()
        plain.end()
    finally:
        server.kill()
        shutil.rmtree(run_dir, ignore_errors=True)
