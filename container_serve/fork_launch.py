"""Starting the fork server next to multi-model-server, and the "python" MMS then runs for its workers.

:class:`ForkServerProcess` is used by :class:`container_serve.mms_process.ModelServerProcess` when
``BYOC_FORK_SERVER`` is on (:mod:`container_serve.settings`). Before MMS starts it

1. writes the client script ``<run dir>/mms-python``: ``#!<this python> -IS``, running
   :func:`container_serve.fork_client.main` with this server's socket and MMS's worker script (found
   from the installed ``mms`` package: the file the frontend names, ``<MMS home>/mms/model_service_worker.py``),
   and runs it once (``mms-python -c pass``, which the client hands to the real interpreter): an
   interpreter path a ``#!`` line cannot hold, or a run folder on a ``noexec`` file system (where MMS's
   netty could not load its native transport either), shows here;
2. starts ``python -m container_serve.fork_server`` in its own process group, with the environment MMS's
   workers get (OpenMP reads ``OMP_*`` when torch is imported, in the fork server), and waits until it
   listens (a fraction of a second); its imports then go on while MMS starts (a worker started meanwhile
   waits for them in the socket's backlog), and a thread logs how they end.

Either step failing, it logs why and the server runs the plain way: MMS starts every worker as a fresh
python, exactly as with ``BYOC_FORK_SERVER=false``. Later failures fall back per worker instead: a
fork server that dies or hangs while importing (logged, and killed), or that is gone later, leaves each
client to run its worker as a plain python, which says so in MMS's log.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from container_serve.fork_server import COMMAND_LINE_ROOM

logger = logging.getLogger(__name__)

CLIENT_FILE = "mms-python"
SOCKET_FILE = "fork.sock"
START_TIMEOUT_S = 120.0  # importing torch on a busy 2-core host takes 3-20 s
PROBE_TIMEOUT_S = 60.0
LISTEN_TIMEOUT_S = 60.0  # python's start-up and a bind
MAX_INTERPRETER_CHARS = 200  # Linux reads a #! line from the first 256 bytes of a script (BINPRM_BUF_SIZE)
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ForkServerUnavailable(RuntimeError):
    """Why the fork server is not used for this server."""


def mms_worker_script() -> Path:
    spec = importlib.util.find_spec("mms")   # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ForkServerUnavailable("multi-model-server (the mms package) is not installed")
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "model_service_worker.py"


def client_script(python: str, socket_path: Path, worker_script: Path) -> str:
    return "\n".join([
        f"#!{python} -IS",
        "# The python multi-model-server runs for its backend workers (container_serve.fork_client).",
        "import sys",
        f"sys.path.insert(0, {str(PROJECT_ROOT)!r})",
        "from container_serve.fork_client import main",
        f"main(sys.argv[1:], python={python!r}, socket_path={str(socket_path)!r}, "
        f"worker_script={str(worker_script)!r})",
        "",
    ])


def write_client(run_dir: Path, socket_path: Path, env: dict[str, str], python: str = sys.executable) -> Path:
    """The client script, written and run once; :class:`ForkServerUnavailable` when it cannot run."""
    if len(python) > MAX_INTERPRETER_CHARS or any(c.isspace() for c in python):
        raise ForkServerUnavailable(f"the interpreter path {python[:300]!r} cannot be a #! line")
    path = run_dir / CLIENT_FILE
    path.write_text(client_script(python, socket_path, mms_worker_script()))
    path.chmod(0o700)
    try:
        probe = subprocess.run([str(path), "-c", "pass"], env=env, capture_output=True, text=True,
                               timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ForkServerUnavailable(f"{path} does not run ({type(e).__name__}: {e})") from e
    if probe.returncode != 0:
        raise ForkServerUnavailable(f"{path} exited with {probe.returncode}: {probe.stderr.strip()[-300:]}")
    return path


class _ReadyPipe:
    """The lines the fork server writes on its ready pipe ("listening", then "ready"), read with deadlines."""

    def __init__(self, fd: int, proc: subprocess.Popen):
        self.fd, self.proc, self.buffer = fd, proc, b""

    def expect(self, word: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while (line := self._line()) is None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise ForkServerUnavailable(f"the fork server was not {word} within {timeout_s:.0f} s")
            chunk = os.read(self.fd, 64)
            if not chunk:
                try:  # the pipe closed: the fork server ended (its reason is in the log above)
                    code = self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    code = "(still running)"
                raise ForkServerUnavailable(f"the fork server exited with {code} before it was {word}")
            self.buffer += chunk
        if line != word:
            raise ForkServerUnavailable(f"the fork server said {line!r}, not {word!r}")

    def _line(self) -> str | None:
        if b"\n" not in self.buffer:
            return None
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode(errors="replace")


class ForkServerProcess:
    """One server's fork server: its process (own process group) and its socket in the run folder."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.socket = run_dir / SOCKET_FILE
        self.proc: subprocess.Popen | None = None
        self.stopping = False   # set by the model server: a fork server that ends now is no news
        self._ready = threading.Event()
        self._ok = False

    def command(self, ready_fd: int) -> list[str]:
        return [sys.executable, "-m", "container_serve.fork_server", "--socket", str(self.socket),
                "--ready-fd", str(ready_fd), "--parent-pid", str(os.getpid()), " " * COMMAND_LINE_ROOM]

    def start(self, env: dict[str, str], timeout_s: float = START_TIMEOUT_S) -> Path | None:
        """Start it; the client script for MMS's ``--python``, or None (logged) to run the plain way.

        Returns once the fork server listens; its imports (seconds) go on while MMS starts, watched by a
        thread that logs how they ended (:meth:`wait_ready`). Call it from the thread that stays (the
        main one): the fork server dies with the thread that started it (``PR_SET_PDEATHSIG``)."""
        try:
            client = write_client(self.run_dir, self.socket, env)
            pipe = self._spawn(env)
        except ForkServerUnavailable as e:
            self._not_used(e)
            return None
        try:
            pipe.expect("listening", LISTEN_TIMEOUT_S)
        except ForkServerUnavailable as e:
            os.close(pipe.fd)
            self._not_used(e)
            return None
        threading.Thread(target=self._watch, args=(pipe, timeout_s, time.monotonic()), daemon=True,
                         name="fork-server-ready").start()
        return client

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        """True once the fork server has imported everything and serves; False if it never will."""
        self._ready.wait(timeout_s)
        return self._ok

    def _spawn(self, env: dict[str, str]) -> _ReadyPipe:
        ready_r, ready_w = os.pipe()
        try:
            self.proc = subprocess.Popen(self.command(ready_w), env=env, cwd=self.run_dir,
                                         stdin=subprocess.DEVNULL, pass_fds=(ready_w,), process_group=0)
        except OSError as e:
            os.close(ready_r)
            raise ForkServerUnavailable(f"cannot run {sys.executable}: {e}") from e
        finally:
            os.close(ready_w)
        return _ReadyPipe(ready_r, self.proc)

    def _watch(self, pipe: _ReadyPipe, timeout_s: float, started: float) -> None:
        try:
            pipe.expect("ready", timeout_s)
            self._ok = True
            logger.info("fork server pid %d ready in %.1f s after listening: model workers are forked from it",
                        self.proc.pid, time.monotonic() - started)
        except ForkServerUnavailable as e:
            if not self.stopping:
                logger.warning("fork server failed: %s; model workers start as plain python processes", e)
                self.kill()   # clients waiting in its backlog then run their workers as plain pythons
        finally:
            os.close(pipe.fd)
            self._ready.set()

    def _not_used(self, why: ForkServerUnavailable) -> None:
        logger.warning("fork server not used: %s; every model worker starts as a plain python process", why)
        self.kill()
        self._ready.set()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
