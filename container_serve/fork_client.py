"""The "python" multi-model-server runs for its backend workers while the fork server is on.

MMS's Java frontend starts each model's backend worker as ``<python> <MMS home>/mms/model_service_worker.py
--sock-type unix --sock-name ... --handler ... --model-path ... --model-name ... --preload-model ...
--tmp-dir ...`` (``WorkerLifeCycle.startBackendServer``; ``<python>`` is the ``--python`` argument the
``multi-model-server`` launcher passes, ``mms/model_server.py``: ``cmd.append(sys.executable)``). With the
fork server on, ``<python>`` is a small script written by :mod:`container_serve.fork_launch` that runs
:func:`main` under ``python -I -S`` (no site, no environment-driven imports: a few MiB). It

* hands its argv, environment, working directory and stdin/stdout/stderr to the fork server
  (:mod:`container_serve.fork_server`), which forks the worker from a process that has already imported
  torch: the worker's output goes straight into the pipes the frontend reads, as a fresh python's would
  (``WorkerLifeCycle.attachIOStreams``: a ``ReaderThread`` per stream logs every line, and the
  ``MMS worker started.`` and ``[PID] <pid>`` lines end the start-up wait and name the worker's pid;
  the per-connection children then write to the FIFOs ``_remap_io`` opens, as always);
* passes on the signals it gets (:data:`container_serve.fork_wire.FORWARDED_SIGNALS`), and when it is
  SIGKILLed (all the frontend ever sends: ``Process.destroyForcibly()``) the server sees the connection
  close and SIGKILLs the worker: no worker outlives the process the frontend launched;
* exits the way the worker did, with its exit code, or killed by the same signal (so the frontend's
  check in ``WorkerThread.run``, ``exitValue == 137``: an OOM-killed worker, 507, still reads 137);
* runs anything that is not MMS's worker script (MMS's metric collector, ``mms/metrics/metric_collector.py``,
  ``MetricCollector.run``) and the worker itself, when the fork server cannot be reached or refuses, as
  the plain python would: ``execv`` of the real interpreter with the same arguments, saying why on stderr.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import sys
from typing import NoReturn

from container_serve import fork_wire

# connect, send, get the forked pid back: the server only forks, but a client started while the server
# still imports torch waits for that (container_serve.fork_launch.START_TIMEOUT_S, and some more)
HANDSHAKE_TIMEOUT_S = 150.0


def _say(message: str) -> None:
    # stderr reaches MMS's log: the frontend logs every line a backend worker writes there
    sys.stderr.write(f"fork client: {message}\n")
    sys.stderr.flush()


def exec_plain(python: str, argv: list[str], why: str | None = None) -> NoReturn:
    if why:
        _say(f"{why}; starting this worker as a plain python process")
    os.execv(python, [python, *argv])


def _handshake(socket_path: str, argv: list[str]) -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(HANDSHAKE_TIMEOUT_S)
        sock.connect(socket_path)
        fork_wire.send(sock, {"argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}, fork_wire.STDIO_FDS)
        reply, _ = fork_wire.recv(sock)
    except BaseException:
        sock.close()
        raise
    if not isinstance(reply.get("pid"), int):
        sock.close()
        raise fork_wire.WireError(f"refused: {str(reply.get('error', reply))[:500]}")
    sock.settimeout(None)
    return sock, reply["pid"]


def _pass_on(sock: socket.socket, signo: int) -> None:
    try:
        sock.send(bytes([signo]))
    except OSError:
        pass  # the server is gone; its end of the story arrives as the connection closing


def exit_like(status: dict) -> NoReturn:
    """Leave with the worker's exit code, or die of the signal that killed it."""
    signo = status.get("signal")
    if isinstance(signo, int) and 0 < signo < signal.NSIG:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the worker's core, if any, is the worker's
        if signo not in (signal.SIGKILL, signal.SIGSTOP):   # those two cannot be handled anyway
            signal.signal(signo, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signo])
        os.kill(os.getpid(), signo)
        os._exit(128 + signo)  # a signal whose default is to be ignored: say it the way a shell would
    code = status.get("exit")
    os._exit(code if isinstance(code, int) else 1)


def main(argv: list[str], *, python: str, socket_path: str, worker_script: str) -> NoReturn:
    if not argv or not fork_wire.same_file(argv[0], worker_script):
        exec_plain(python, argv)
    try:
        sock, pid = _handshake(socket_path, argv)
    except (OSError, fork_wire.WireError) as e:
        exec_plain(python, argv, f"the fork server at {socket_path} did not start it ({type(e).__name__}: {e})")
    for signo in fork_wire.FORWARDED_SIGNALS:
        signal.signal(signo, lambda s, _frame: _pass_on(sock, s))
    try:
        status, _ = fork_wire.recv(sock)
    except (OSError, fork_wire.WireError) as e:
        _say(f"lost the fork server before worker pid {pid} exited ({e})")
        os._exit(1)
    exit_like(status)
