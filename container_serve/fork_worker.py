"""In a process just forked by the fork server: become what ``python <script> <args...>`` would have been.

A fresh interpreter started by MMS's frontend (``Runtime.exec(args, envp, modelPath)`` in
``WorkerLifeCycle.startBackendServer``) would have the frontend's stdin/stdout/stderr, the environment
``envp`` (the frontend's own plus ``PYTHONPATH`` = handler folder, the inherited ``PYTHONPATH``, the model
folder, ...: ``WorkerLifeCycle.getEnvString``), the model folder as working directory, ``sys.path`` = the
script's folder + ``PYTHONPATH`` + the interpreter's own folders, and ``sys.argv`` = the script and its
arguments; it would then run the script as ``__main__`` and exit through the interpreter's usual
shutdown (``atexit`` functions, buffers flushed). :func:`become` does all of that in the forked process,
whose only difference is what the fork server had imported (torch, torchvision, this project's handler,
MMS's worker modules) and keeps shared with it copy-on-write. Modules are found in ``sys.modules`` first,
so a module of the same name next to a model (which the gate refuses anyway,
:mod:`container_serve.model_layout`) cannot replace one of those.

The command line the process shows (``/proc/<pid>/cmdline``, ``ps``, psutil) is rewritten to
``<python> <script> <args...>`` as well (:func:`show_command_line`), in the room the fork server's own
command line left for it, so tools that find MMS workers by their command line still do.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import importlib
import logging
import os
import runpy
import signal
import sys
import traceback
from pathlib import Path
from typing import NoReturn

PROC_STAT_ARG_START = 48  # proc(5): fields 48 and 49 of /proc/<pid>/stat, where argv lies in memory
PR_SET_PDEATHSIG = 1


def _pythonpath(env: dict[str, str]) -> list[str]:
    """``PYTHONPATH``'s entries as ``site`` leaves them (``removeduppaths``: made absolute, an empty one
    is the working directory, duplicates dropped)."""
    entries = env.get("PYTHONPATH", "")
    return _unique(entries.split(os.pathsep)) if entries else []


def _unique(paths: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for p in map(os.path.abspath, paths):
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def script_sys_path(script: str, env: dict[str, str], interpreter_path: list[str]) -> list[str]:
    """``sys.path`` of ``python <script>`` started with ``env`` in the current working directory:
    the script's real folder, then ``PYTHONPATH``'s entries and the interpreter's own (standard
    library, site-packages, ``.pth`` lines), made absolute and without duplicates as ``site`` does."""
    return [os.path.dirname(os.path.realpath(script)), *_unique([*_pythonpath(env), *interpreter_path])]


def interpreter_path(path: list[str], env: dict[str, str]) -> list[str]:
    """The interpreter's own ``sys.path`` entries: ``path`` (this process's, taken at start-up, before
    anything changed it) without its first entry (the script's folder or, for ``-m``, the working
    directory) and without the entries ``env``'s ``PYTHONPATH`` put in front."""
    own = _pythonpath(env)
    if path[1:1 + len(own)] == own:
        return list(path[1 + len(own):])
    return [p for p in path[1:] if p not in own]


def show_command_line(argv: list[str]) -> bool:
    """Make ``argv`` this process's command line, truncated to the room the original one occupies
    (the rest is NUL-filled: psutil then lists empty strings after the arguments). False when the
    kernel does not say where that room is."""
    try:
        stat = Path("/proc/self/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()   # fields from the third one (state) on
        start, end = (int(fields[n - 3]) for n in (PROC_STAT_ARG_START, PROC_STAT_ARG_START + 1))
    except (OSError, ValueError, IndexError):
        return False
    if start <= 0 or end <= start:
        return False
    room = end - start
    data = b"\0".join(os.fsencode(a) for a in argv)[:room - 1]
    ctypes.memmove(start, data + b"\0" * (room - len(data)), room)
    return True


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when the fork server dies (and now, if it already has)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent_pid:
        os._exit(1)


def exit_code(code: object) -> int:
    """The status ``SystemExit(code)`` gives the interpreter (None: 0; a number: itself; else 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def run_as_main(script: str) -> int:
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as e:
        code = exit_code(e.code)
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    return code


def become(argv: list[str], env: dict[str, str], cwd: str, stdio: list[int], python: str,
           path: list[str]) -> NoReturn:
    """Turn this freshly forked process into ``python argv[0] argv[1:]`` and run it; never returns.
    ``stdio`` are the client's stdin/stdout/stderr, ``path`` the interpreter's own ``sys.path`` entries
    (:func:`interpreter_path`)."""
    try:
        for target, fd in enumerate(stdio):
            if fd != target:
                os.dup2(fd, target)
        for fd in set(stdio) - {0, 1, 2}:
            os.close(fd)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        sys.path[:] = script_sys_path(argv[0], env, path)
        importlib.invalidate_caches()   # folders the fork server listed may have changed since
        sys.argv = list(argv)
        sys.orig_argv = [python, *argv]
        root = logging.getLogger()   # as unconfigured as a fresh interpreter's: the script's
        for handler in list(root.handlers):   # logging.basicConfig(stream=sys.stdout) must take effect
            root.removeHandler(handler)
        root.setLevel(logging.WARNING)
        show_command_line([python, *argv])
        gc.enable()
    except BaseException:  # noqa: BLE001 - nothing of this may return into the fork server's loop
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    os._exit(run_as_main(argv[0]))
