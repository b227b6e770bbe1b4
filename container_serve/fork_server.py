"""The fork server: torch imported once, every MMS backend worker forked from it.

multi-model-server 1.1.11 runs one python process per model (the "backend server" the frontend starts
with ``Runtime.exec``, ``WorkerLifeCycle.startBackendServer``), which forks a child per worker
connection (``mms/model_service_worker.py``, ``run_server``: ``multiprocessing.Process`` per accepted
socket) that imports the handler and loads the model. Importing torch + torchvision is ~364 MiB of
private memory per process and each model paid it again. MMS's own ``preload_model`` does not help: it
only loads the model in the backend server before its per-connection forks, one model per process as
before (``run_server``: ``if self.service is None and self.preload is True: self.load_model(...)``).

This process imports torch, torchvision, this project's handler and MMS's worker modules once
(:data:`PRELOAD`), freezes what it has (``gc.freeze()``: later collections in the children do not touch,
and so do not copy, these objects) and then forks, for every client (:mod:`container_serve.fork_client`,
the "python" the frontend runs), a process that becomes ``python model_service_worker.py ...`` with the
client's stdio, environment and working directory (:mod:`container_serve.fork_worker`). Those pages stay
shared copy-on-write between all models' workers (``bench/RESULTS.md`` section 3b).

Supervision (one thread, :mod:`selectors`):

* a client that goes away (the frontend SIGKILLs it: ``Process.destroyForcibly()``, on unload, scale-down
  or a failed start) closes its connection, and its worker, still unreaped so the pid cannot have been
  reused, is SIGKILLed;
* a worker that exits is reaped (SIGCHLD) and its status sent to its client, which exits the same way;
* signals a client passes on are sent to its worker;
* every process it forked dies with it (``PR_SET_PDEATHSIG``), and it with ``serve``
  (``PR_SET_PDEATHSIG`` too, ``--parent-pid`` for the race); the children those fork per connection
  (MMS's own ``multiprocessing`` forks, which hold the models) live on their connection to the frontend,
  as without a fork server, and when orphaned are reaped here (a child subreaper);
* SIGTERM (``serve`` stopping the process group): stop accepting, pass SIGTERM on, reap until no child
  is left, exit 0.

Only connections from this user are served (``SO_PEERCRED``; the socket is in the 0700 run folder), and
only to run MMS's own worker script (``argv[0]`` must be the file this process imported as
``mms.model_service_worker``); anything else is refused and the client runs it as a plain python.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass

from container_serve import fork_wire, fork_worker

PRELOAD = ("torch", "torchvision", "container_serve.handler_service", "mms.model_service_worker")
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
REQUEST_TIMEOUT_S = 10.0
# The fork server's command line ends with this many spaces: the room a forked worker's command line
# is written into (container_serve.fork_worker.show_command_line).
COMMAND_LINE_ROOM = 4096

logger = logging.getLogger("container_serve.fork_server")
_STARTUP_PATH = list(sys.path)


@dataclass
class Worker:
    pid: int
    conn: socket.socket | None  # to its client; None once closed
    model: str


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option})")


def _kill(pid: int, signo: int) -> None:
    try:
        os.kill(pid, signo)
    except ProcessLookupError:
        pass


def _answer(conn: socket.socket, message: dict) -> None:
    try:
        conn.setblocking(True)
        conn.settimeout(REQUEST_TIMEOUT_S)
        fork_wire.send(conn, message)
    except OSError:
        pass  # the client is gone: it finds out on its own


def _model_name(argv: list[str]) -> str:
    return argv[argv.index("--model-name") + 1] if "--model-name" in argv[:-1] else "?"


class ForkServer:
    def __init__(self, listener: socket.socket, worker_script: str, path: list[str]):
        self.listener = listener
        self.worker_script = worker_script
        self.path = path  # the interpreter's own sys.path entries (fork_worker.interpreter_path)
        self.workers: dict[int, Worker] = {}
        self.stop_asked = self.stopping = False
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "signal")
        # Python's C-level handler writes every signal to wake_w, so select() wakes up for each
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for signo in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signo, self._ask_stop)

    def _ask_stop(self, *_) -> None:
        self.stop_asked = True

    # -- the loop --------------------------------------------------------------------------------
    def serve_forever(self) -> int:
        while True:
            for key, _ in self.selector.select():
                if key.data == "accept" and not self.stop_asked:
                    self._accept()
                elif key.data == "signal":
                    self._drain_wakeups()
                elif isinstance(key.data, Worker):
                    self._from_client(key.data)
            if self.stop_asked and not self.stopping:
                self._stop()
            if self._reap() and self.stopping:
                logger.info("stopped: no worker left")
                return 0

    def _stop(self) -> None:
        self.stopping = True
        self.selector.unregister(self.listener)
        self.listener.close()
        for worker in self.workers.values():
            _kill(worker.pid, signal.SIGTERM)

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _reap(self) -> bool:
        """Reap every child that exited; True when no child is left at all."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == 0:
                return False
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue  # an orphaned grandchild this subreaper adopted
            end = ({"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status)
                   else {"exit": os.waitstatus_to_exitcode(status)})
            logger.info("worker pid %d (model %s) ended: %s", pid, worker.model, end)
            if worker.conn is not None:
                _answer(worker.conn, end)
                self._drop_connection(worker)

    def _drop_connection(self, worker: Worker) -> None:
        if worker.conn is not None:
            self.selector.unregister(worker.conn)
            worker.conn.close()
            worker.conn = None

    def _from_client(self, worker: Worker) -> None:
        try:
            data = worker.conn.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            if worker.pid in self.workers:
                logger.info("the client of worker pid %d (model %s) is gone: killing the worker",
                            worker.pid, worker.model)
                _kill(worker.pid, signal.SIGKILL)   # not reaped yet, so the pid is still this child's
            self._drop_connection(worker)
            return
        for signo in data:
            if signo in FORWARDED:
                _kill(worker.pid, signo)

    # -- a new worker ------------------------------------------------------------------------------
    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        fds: list[int] = []
        try:
            conn.settimeout(REQUEST_TIMEOUT_S)
            request, fds = self._read_request(conn)
            pid = self._fork(conn, request, fds)
        except Exception as e:  # noqa: BLE001 - one bad client must not stop the server
            logger.warning("refused a worker: %s: %s", type(e).__name__, e)
            _answer(conn, {"error": f"{type(e).__name__}: {e}"})
            conn.close()
            return
        finally:
            fork_wire.close_all(fds)  # the worker has its own copies now
        _answer(conn, {"pid": pid})
        conn.setblocking(False)

    def _read_request(self, conn: socket.socket) -> tuple[dict, list[int]]:
        pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if uid != os.getuid():
            raise PermissionError(f"connection from uid {uid} (pid {pid})")
        request, fds = fork_wire.recv(conn, max_fds=len(fork_wire.STDIO_FDS))
        argv, env, cwd = request.get("argv"), request.get("env"), request.get("cwd")
        ok = (len(fds) == len(fork_wire.STDIO_FDS) and isinstance(argv, list) and argv
              and all(isinstance(a, str) for a in argv) and isinstance(cwd, str) and isinstance(env, dict)
              and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()))
        if not ok or not fork_wire.same_file(argv[0], self.worker_script):
            fork_wire.close_all(fds)
            raise ValueError(f"only MMS's worker script {self.worker_script} with stdin, stdout and stderr "
                             f"is run here, not {str(argv)[:200]} with {len(fds)} descriptors")
        return request, fds

    def _fork(self, conn: socket.socket, request: dict, fds: list[int]) -> int:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:
            self._in_child(conn, request, fds)   # never returns
        worker = Worker(pid, conn, _model_name(request["argv"]))
        self.workers[pid] = worker
        self.selector.register(conn, selectors.EVENT_READ, worker)
        logger.info("forked worker pid %d for model %s", pid, worker.model)
        return pid

    def _in_child(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        """Drop everything of the server, then become the worker (container_serve.fork_worker)."""
        try:
            parent = os.getppid()
            signal.set_wakeup_fd(-1)
            for signo in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(signo, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for worker in self.workers.values():
                if worker.conn is not None:
                    worker.conn.close()
            conn.close()
            self.selector.close()
            self.listener.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            fork_worker.die_with_parent(parent)
        except BaseException:  # noqa: BLE001 - never back into the server's loop
            os._exit(1)
        fork_worker.become(request["argv"], request["env"], request["cwd"], fds, sys.executable, self.path)


FORWARDED = frozenset(int(s) for s in fork_wire.FORWARDED_SIGNALS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m container_serve.fork_server", description=__doc__.splitlines()[0])
    p.add_argument("--socket", required=True, help="the Unix socket to listen on (in a private folder)")
    p.add_argument("--ready-fd", type=int, required=True,
                   help="written 'listening' once bound, then 'ready' once the imports are done")
    p.add_argument("--parent-pid", type=int, required=True, help="serve's pid: exit if it is gone")
    p.add_argument("room", nargs="?", help=argparse.SUPPRESS)  # COMMAND_LINE_ROOM spaces
    args = p.parse_args(argv)
    gc.disable()  # no collections (holes, copied pages) while importing; frozen below
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != args.parent_pid:
        return 1
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    # Listen first, import then: MMS starts meanwhile, and a client that connects early waits in the
    # backlog until the imports are done (a server that dies importing resets it: the client then runs
    # its worker as a plain python).
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(args.socket)
    os.chmod(args.socket, 0o600)
    listener.listen(64)
    os.write(args.ready_fd, b"listening\n")
    started = time.monotonic()
    for name in PRELOAD:
        importlib.import_module(name)
    worker_script = os.path.realpath(sys.modules["mms.model_service_worker"].__file__)
    server = ForkServer(listener, worker_script, fork_worker.interpreter_path(_STARTUP_PATH, dict(os.environ)))
    gc.collect()
    gc.freeze()
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        logger.warning("%d threads after the imports: forking a threaded process is unsafe", threads)
    logger.info("ready in %.1f s: %s imported once, pid %d, listening on %s", time.monotonic() - started,
                ", ".join(PRELOAD), os.getpid(), args.socket)
    os.write(args.ready_fd, b"ready\n")
    os.close(args.ready_fd)
    return server.serve_forever()


if __name__ == "__main__":
    code = main()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    # No interpreter shutdown: nothing here needs it, and torch's exit hooks (which import more of
    # torch) took over 20 s in a container whose page cache was cold.
    os._exit(code)
