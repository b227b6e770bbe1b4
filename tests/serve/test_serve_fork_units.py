"""The fork server's pieces on their own, with real processes and sockets: the wire protocol, what a forked
worker is made to look like, the client's exit and fallback, how a start that cannot work is reported."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from container_serve import fork_wire
from container_serve.fork_launch import (
    ForkServerProcess,
    ForkServerUnavailable,
    client_script,
    mms_worker_script,
    write_client,
)
from container_serve.fork_worker import exit_code, interpreter_path, script_sys_path
from container_serve.mms_process import mms_command
from container_serve.settings import ServeSettings, SettingsError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, *args: str, env: dict | None = None, cwd: Path | None = None, **kw):
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120, **kw)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


# ---- the wire -------------------------------------------------------------------------------------

def test_messages_and_descriptors_cross_the_wire():
    a, b = socket.socketpair()
    r, w = os.pipe()
    with a, b:
        fork_wire.send(a, {"argv": ["x", "é", "\udcff"], "env": {"K": "v"}}, (w,))
        message, fds = fork_wire.recv(b, max_fds=3)
        assert message == {"argv": ["x", "é", "\udcff"], "env": {"K": "v"}}   # undecodable bytes survive
        assert len(fds) == 1
        os.write(fds[0], b"through the passed descriptor")
        assert os.read(r, 100) == b"through the passed descriptor"
        fork_wire.close_all([*fds, r, w])

        a.sendall(fork_wire.HEADER.pack(fork_wire.MAX_MESSAGE_BYTES + 1))
        with pytest.raises(fork_wire.WireError, match="over the"):
            fork_wire.recv(b)
        a.sendall(fork_wire.HEADER.pack(2) + b"[]")
        with pytest.raises(fork_wire.WireError, match="JSON object"):
            fork_wire.recv(b)
        with pytest.raises(fork_wire.WireError, match="over the"):
            fork_wire.send(a, {"env": "x" * fork_wire.MAX_MESSAGE_BYTES})
        a.sendall(fork_wire.HEADER.pack(10) + b"{}")
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(fork_wire.WireError, match="closed after 2 of 10 bytes"):
            fork_wire.recv(b)


# ---- what a forked worker looks like ---------------------------------------------------------------

def test_a_forked_worker_gets_the_sys_path_a_fresh_interpreter_would(tmp_path, monkeypatch):
    """Compared with real interpreters: the fork server's own start (-c here, -m in the server: the
    first entry differs, the rest is the interpreter's) and a fresh ``python script`` with another
    PYTHONPATH (relative, absolute, empty and trailing-slash entries, as MMS's frontend builds them)."""
    script = tmp_path / "mms" / "worker.py"
    script.parent.mkdir()
    script.write_text("import json, sys\nprint(json.dumps(sys.path))\n")
    cwd = tmp_path / "model"
    cwd.mkdir()
    server_env = _env(PYTHONPATH=f"{PROJECT_ROOT}:{tmp_path}/other")
    server_path = json.loads(_python("import json, sys; print(json.dumps(sys.path))", env=server_env).stdout)
    worker_env = _env(PYTHONPATH=f"container_serve.handler_service:{PROJECT_ROOT}:{cwd}/::/abs/x")
    fresh = subprocess.run([sys.executable, str(script)], env=worker_env, cwd=cwd, capture_output=True,
                           text=True, check=True)
    monkeypatch.chdir(cwd)
    assert script_sys_path(str(script), worker_env, interpreter_path(server_path, server_env)) \
        == json.loads(fresh.stdout)
    assert interpreter_path(["first", "/own", "/lib"], {"PYTHONPATH": "/own"}) == ["/lib"]


def test_the_command_line_shown_is_the_workers(tmp_path):
    code = ("import sys; from container_serve.fork_worker import show_command_line\n"
            "print(show_command_line(sys.argv[2].split()), flush=True); sys.stdin.read()")
    title = "/venv/bin/python /site/mms/model_service_worker.py --model-name shapes-a"
    proc = subprocess.Popen([sys.executable, "-c", code, " " * 300, title], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=_env(PYTHONPATH=str(PROJECT_ROOT)))
    try:
        assert proc.stdout.readline().strip() == "True"
        shown = psutil.Process(proc.pid).cmdline()
        assert shown[:4] == title.split() and not any(shown[4:])   # the rest of the room is empty
        assert Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(title.replace(" ", "\0").encode())
    finally:
        proc.communicate("")
    long_title = "x" * 5000   # longer than the room: cut, never written past it
    out = _python(code, "", long_title, input="", env=_env(PYTHONPATH=str(PROJECT_ROOT)))
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (3, 3), (256 + 7, 7), ("a message", 1)])
def test_exit_codes_are_the_interpreters(code, status):
    assert exit_code(code) == status


# ---- the client ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "returncode"), [({"exit": 0}, 0), ({"exit": 3}, 3), ({"signal": 15}, -15),
                                                    ({"signal": 9}, -9), ({}, 1)])
def test_the_client_ends_the_way_its_worker_did(status, returncode):
    out = _python("import sys, json; from container_serve.fork_client import exit_like; "
                  "exit_like(json.loads(sys.argv[1]))", json.dumps(status), env=_env(PYTHONPATH=str(PROJECT_ROOT)))
    assert out.returncode == returncode, out.stderr


def test_the_client_runs_anything_else_and_an_unserved_worker_as_a_plain_python(tmp_path):
    """MMS also runs its metric collector with the worker "python"; and a worker whose fork server is
    not there (never started, or gone) runs as the plain python would, saying why on stderr."""
    worker = tmp_path / "worker.py"
    worker.write_text("import os, sys\nprint('plain', sys.argv[1:], os.getcwd())\n")
    client = tmp_path / "mms-python"
    client.write_text(client_script(sys.executable, tmp_path / "no-server.sock", worker))
    client.chmod(0o700)
    other = subprocess.run([str(client), "-c", "import sys; print(sys.argv)", "x"], capture_output=True, text=True)
    assert other.returncode == 0 and other.stdout.strip() == "['-c', 'x']" and not other.stderr
    alone = subprocess.run([str(client), str(worker), "--model-name", "m"], capture_output=True, text=True,
                           cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.strip() == f"plain ['--model-name', 'm'] {tmp_path}"
    assert "did not start it" in alone.stderr and "plain python process" in alone.stderr


# ---- starting it -----------------------------------------------------------------------------------

def test_a_fork_server_that_dies_importing_leaves_the_workers_to_a_plain_python(tmp_path, caplog):
    """A real fork server whose ``import torch`` fails: it listened, so MMS was started with the client;
    the failure is logged when it happens and every worker then runs as a plain python (here MMS's real
    worker script, which fails on its own for the socket path it is given: the plain run's own error)."""
    broken = tmp_path / "broken" / "torch"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('this torch is broken on purpose')\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = _env(PYTHONPATH=f"{tmp_path / 'broken'}:{PROJECT_ROOT}")
    server = ForkServerProcess(run_dir)
    with caplog.at_level(logging.WARNING, logger="container_serve.fork_launch"):
        client = server.start(env)
        assert client is not None and server.wait_ready(120) is False
    assert "fork server failed: the fork server exited with 1 before it was ready" in caplog.text
    assert "model workers start as plain python processes" in caplog.text
    worker = subprocess.run([str(client), str(mms_worker_script()), "--sock-type", "unix", "--sock-name",
                             str(tmp_path / "no-such-dir" / "sock"), "--handler", "h", "--model-path", str(tmp_path),
                             "--model-name", "m", "--preload-model", "false", "--tmp-dir", str(run_dir)],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "starting this worker as a plain python process" in worker.stderr
    assert worker.returncode == 1 and "Backend worker process died" in worker.stdout


def test_a_fork_server_that_cannot_listen_is_not_used(tmp_path, caplog):
    """A socket path over the 107 bytes a Unix socket address holds: the fork server exits at once, and
    start() returns None, so the model server starts MMS the plain way."""
    run_dir = tmp_path / ("d" * 110)
    run_dir.mkdir()
    with caplog.at_level(logging.WARNING, logger="container_serve.fork_launch"):
        assert ForkServerProcess(run_dir).start(_env(PYTHONPATH=str(PROJECT_ROOT))) is None
    assert "fork server not used: the fork server exited with 1 before it was listening" in caplog.text
    assert "every model worker starts as a plain python process" in caplog.text


def test_an_interpreter_a_shebang_cannot_hold_is_refused(tmp_path):
    with pytest.raises(ForkServerUnavailable, match="cannot be a #! line"):
        write_client(tmp_path, tmp_path / "s.sock", dict(os.environ), python="/a path/with spaces/python")
    with pytest.raises(ForkServerUnavailable, match="cannot be a #! line"):
        write_client(tmp_path, tmp_path / "s.sock", dict(os.environ), python="/" + "p" * 300)


def test_the_knob_and_the_mms_command(tmp_path):
    assert ServeSettings.from_env({}).fork_server is True
    assert ServeSettings.from_env({"BYOC_FORK_SERVER": "false"}).fork_server is False
    assert ServeSettings.from_env({"BYOC_FORK_SERVER": ""}).fork_server is True
    with pytest.raises(SettingsError, match="BYOC_FORK_SERVER"):
        ServeSettings.from_env({"BYOC_FORK_SERVER": "sometimes"})
    settings = ServeSettings.from_env({"SAGEMAKER_MULTI_MODEL": "true"})
    plain = mms_command(settings, tmp_path / "c")
    forked = mms_command(settings, tmp_path / "c", python=tmp_path / "mms-python")
    assert plain[0].endswith("multi-model-server")
    assert forked[:4] == [sys.executable, "-m", "container_serve.mms_launcher", str(tmp_path / "mms-python")]
    assert forked[4:] == plain[1:]
    assert signal.SIGTERM in fork_wire.FORWARDED_SIGNALS


def test_send_survives_a_peer_that_read_everything_and_closed(monkeypatch):
    """The fork server reads a request whole, may refuse it and close at once; the client's send must not
    then fail on a zero-byte send (EPIPE) before it reads the refusal. The peer's read and close are put
    between send_fds and the rest of send, where the race fell in CI."""
    client, server = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    real_send_fds = socket.send_fds

    def send_fds_then_the_peer_reads_and_closes(sock, buffers, fds):
        sent = real_send_fds(sock, buffers, fds)
        message, got = fork_wire.recv(server, max_fds=len(fork_wire.STDIO_FDS))
        fork_wire.close_all(got)
        fork_wire.send(server, {"error": f"refused {message['argv'][0]}"})
        server.close()
        return sent

    monkeypatch.setattr(socket, "send_fds", send_fds_then_the_peer_reads_and_closes)
    with client:
        fork_wire.send(client, {"argv": ["/bin/sh"], "env": {}, "cwd": "/"}, fork_wire.STDIO_FDS)
        assert fork_wire.recv(client)[0] == {"error": "refused /bin/sh"}
