"""What the fork server and the "python" multi-model-server runs for its workers say to each other.

The two ends are :mod:`container_serve.fork_server` (one process per server, torch imported once) and
:mod:`container_serve.fork_client` (one per MMS backend worker, started by MMS's Java frontend in place
of a fresh python). They talk over a Unix stream socket in the server's private 0700 run folder.

1. client -> server, once: ``{"argv": [script, args...], "env": {...}, "cwd": "..."}`` with the client's
   stdin, stdout and stderr attached (``SCM_RIGHTS``): exactly what a fresh ``python script args...``
   would have had from the frontend (``WorkerLifeCycle.startBackendServer``: ``Runtime.exec(args, envp,
   modelPath)``).
2. server -> client, once: ``{"pid": <forked worker>}`` or ``{"error": "<why not>"}``.
3. client -> server, any number: one byte, a signal number the client received and passes on.
4. server -> client, once, when the worker has exited: ``{"exit": <code>}`` or ``{"signal": <number>}``.

A message is a 4-byte big-endian length and that many bytes of JSON (strings keep undecodable bytes
as the surrogates ``os.environ`` uses, which JSON carries as ``\\udcXX`` escapes). This module imports
only the standard library: the client runs with ``python -I -S`` and must stay small.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct

HEADER = struct.Struct("!I")
MAX_MESSAGE_BYTES = 1 << 20  # argv + environment; far above what MMS passes (a few kB)
STDIO_FDS = (0, 1, 2)
# What the client passes on to its worker. MMS's frontend itself only ever SIGKILLs a backend worker
# (Process.destroyForcibly() in WorkerLifeCycle.exit, WorkerThread.run and
# WorkLoadManager.shutdownServerThread); SIGKILL cannot be caught, so the server watches the
# connection instead: a client that is gone, however it went, takes its worker with it.
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


class WireError(Exception):
    """The other end sent something that is not a message of this protocol, or went away mid-message."""


def send(sock: socket.socket, message: dict, fds: tuple[int, ...] = ()) -> None:
    payload = json.dumps(message).encode()
    if len(payload) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(payload)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")
    data = HEADER.pack(len(payload)) + payload
    if fds:
        sent = socket.send_fds(sock, [data], list(fds))
        data = data[sent:]
    if data:
        # Never a send of nothing after send_fds took it all: the server may already have read the
        # message, answered (a refusal) and closed, and a zero-byte send to a closed peer is EPIPE,
        # which would hide the answer waiting to be read.
        sock.sendall(data)


def _read_exactly(sock: socket.socket, n: int, got: bytes = b"") -> bytes:
    chunks = [got]
    have = len(got)
    while have < n:
        chunk = sock.recv(min(n - have, 65536))
        if not chunk:
            raise WireError(f"connection closed after {have} of {n} bytes")
        chunks.append(chunk)
        have += len(chunk)
    return b"".join(chunks)


def recv(sock: socket.socket, max_fds: int = 0) -> tuple[dict, list[int]]:
    """One message and the file descriptors that came with it (the caller owns and closes them)."""
    fds: list[int] = []
    if max_fds:
        head, fds, flags, _ = socket.recv_fds(sock, HEADER.size, max_fds)
        if flags & socket.MSG_CTRUNC:
            close_all(fds)
            raise WireError("more file descriptors were sent than expected")
    else:
        head = sock.recv(HEADER.size)
    try:
        if not head:
            raise WireError("connection closed")
        (length,) = HEADER.unpack(_read_exactly(sock, HEADER.size, head))
        if length > MAX_MESSAGE_BYTES:
            raise WireError(f"message of {length} bytes announced, over the {MAX_MESSAGE_BYTES}-byte limit")
        message = json.loads(_read_exactly(sock, length))
        if not isinstance(message, dict):
            raise WireError("a message must be a JSON object")
    except (WireError, ValueError, OSError) as e:
        close_all(fds)
        raise e if isinstance(e, WireError | OSError) else WireError(f"not JSON: {e}") from e
    return message, fds


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
