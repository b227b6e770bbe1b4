"""The little HTTP/1.1 the gate needs, on asyncio streams: read a request, read a response, frame both.

Strict on purpose, since whatever passes here reaches multi-model-server: origin-form targets only,
``HTTP/1.0`` or ``HTTP/1.1``, token header names, no folded or control-character header lines, one
``Content-Length`` or ``Transfer-Encoding: chunked`` (never both, nothing else), bounded head and body.
Bodies are read whole (they are bounded by ``SAGEMAKER_MAX_PAYLOAD_IN_MB``) and always re-framed with a
``Content-Length``; hop-by-hop headers are never passed on.

Every number on the wire is ASCII digits of bounded length (``Content-Length: ²`` and a chunk size of
``-1`` are 400s, not exceptions), a chunked body is gathered into one ``bytearray`` and may have at most
``MAX_CHUNKS`` chunks (2-byte chunks cost ~25x their size as a list of ``bytes``), and all work is linear
in the bytes received. Time limits (idle, head, body) are the caller's (:mod:`container_serve.gate`):
``read_request_head`` takes the idle and head deadlines because only it sees the first byte arrive.

Why hand-written rather than h11 or httptools: ``bench/bench_gate.py --parsers`` (figures in
``container_serve/README.md``) measures all three on the same requests and attacks.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from http import HTTPStatus

from container_serve.errors import InferenceError

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
MAX_TARGET_CHARS = 8 * 1024
DRAIN_MAX_BYTES = 64 * 1024 * 1024   # a too-large body is read and dropped up to this, then the socket closes
READ_CHUNK = 64 * 1024
MAX_CHUNKS = 8_192  # a 6 MB body in 1 KiB chunks needs 6,144; 2-byte chunks stop at 16 KiB
CHUNKS_PER_YIELD = 256  # buffered chunks are parsed without a pause otherwise: let /ping in between
MAX_LEADING_EMPTY_LINES = 4
CONTENT_LENGTH = re.compile(rb"[0-9]{1,18}")   # ASCII only: str.isdigit() also takes "²"
CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")  # no sign, no "0x", no "_": int(x, 16) takes all three
TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
VERSIONS = ("HTTP/1.1", "HTTP/1.0")
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                        "upgrade", "content-length", "expect", "host"})
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def reason(status: int) -> str:
    """The standard reason phrase for ``status`` ("" when there is none)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class HttpError(InferenceError):
    """A message the gate refuses at the protocol level; ``close`` drops the connection after the answer."""

    def __init__(self, status: int, message: str, close: bool = False):
        super().__init__(message)
        self.status, self.phrase, self.close = status, reason(status), close


@dataclass
class Message:
    """A request (``method``/``target`` set) or a response (``status``/``reason`` set)."""

    headers: list[tuple[str, str]]
    version: str = "HTTP/1.1"
    method: str = ""
    target: str = ""
    status: int = 0
    reason: str = ""
    body: bytes = b""
    ends_with_connection: bool = False  # a response framed by the server closing the connection
    _lower: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        for name, value in self.headers:
            self._lower.setdefault(name.lower(), []).append(value)

    def header(self, name: str) -> str | None:
        values = self._lower.get(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return self._lower.get(name, [])

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str | None:
        return self.target.split("?", 1)[1] if "?" in self.target else None

    @property
    def keep_alive(self) -> bool:
        if self.ends_with_connection:
            return False
        tokens = {t.strip().lower() for v in self.all("connection") for t in v.split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens

    def end_to_end_headers(self) -> list[tuple[str, str]]:
        hop = HOP_BY_HOP | {t.strip().lower() for v in self.all("connection") for t in v.split(",")}
        return [(n, v) for n, v in self.headers if n.lower() not in hop]


def _parse_headers(lines: list[bytes]) -> list[tuple[str, str]]:
    if len(lines) > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header lines", close=True)
    headers = []
    for raw in lines:
        if raw[:1] in (b" ", b"\t"):
            raise HttpError(400, "folded header lines are not accepted", close=True)
        line = raw.decode("latin-1")
        name, sep, value = line.partition(":")
        if not sep or not TOKEN.match(name) or any(c in value for c in "\r\n\0"):
            raise HttpError(400, f"malformed header line {line[:80]!r}", close=True)
        headers.append((name, value.strip(" \t")))
    return headers


async def _read_head(reader: asyncio.StreamReader, first: bytes = b"") -> list[bytes] | None:
    """The head's lines (start line first); None on a clean end of stream before any byte. ``first`` is
    a byte the caller already took from the stream (the one that ended the idle wait)."""
    try:
        head = first + await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not (first + e.partial).strip():
            return None
        raise HttpError(400, "connection closed inside the message head", close=True) from e
    except asyncio.LimitOverrunError as e:
        raise HttpError(431, f"message head over {MAX_HEAD_BYTES} bytes", close=True) from e
    if len(head) > MAX_HEAD_BYTES:
        raise HttpError(431, f"message head over {MAX_HEAD_BYTES} bytes", close=True)
    lines = head[:-4].split(b"\r\n")
    if any(b"\n" in line or b"\r" in line for line in lines):
        raise HttpError(400, "bare CR or LF in the message head", close=True)
    return lines


async def _first_byte(reader: asyncio.StreamReader) -> bytes:
    """The first byte of the next request, skipping the empty lines RFC 9112 2.2 lets a client send
    between requests; b"" on a clean end of stream."""
    for _ in range(MAX_LEADING_EMPTY_LINES + 1):
        first = await reader.read(1)
        if first != b"\r":
            return first
        if await reader.read(1) != b"\n":
            raise HttpError(400, "bare CR before the request line", close=True)
    raise HttpError(400, "too many empty lines before the request line", close=True)


async def read_request_head(reader: asyncio.StreamReader, idle_s: float | None = None,
                            head_s: float | None = None) -> Message | None:
    """The next request's head; None when the client closed the connection (or left it idle for
    ``idle_s``) before sending a byte. A head not complete ``head_s`` after its first byte is a 408."""
    loop = asyncio.get_running_loop()
    first = b""
    try:
        async with asyncio.timeout(idle_s) as deadline:
            first = await _first_byte(reader)
            if not first:
                return None
            deadline.reschedule(None if head_s is None else loop.time() + head_s)
            lines = await _read_head(reader, first)
    except TimeoutError:
        if not first:
            return None  # idle: close without an answer, the client sent nothing to answer
        raise HttpError(408, f"the request head did not arrive within {head_s:g} s", close=True) from None
    if lines is None:
        return None
    parts = lines[0].decode("latin-1").split(" ")
    if len(parts) != 3 or not TOKEN.match(parts[0]):
        raise HttpError(400, "malformed request line", close=True)
    method, target, version = parts
    if version not in VERSIONS:
        raise HttpError(505, f"{version[:20]!r} is not supported; use HTTP/1.1", close=True)
    if not target.startswith("/") or len(target) > MAX_TARGET_CHARS or any(ord(c) < 33 for c in target):
        raise HttpError(400, "the request target must be a path (origin form)", close=True)
    return Message(_parse_headers(lines[1:]), version, method=method, target=target)


def _framing(msg: Message) -> tuple[int | None, bool]:
    """(content length or None, chunked)."""
    encodings = [t.strip().lower() for v in msg.all("transfer-encoding") for t in v.split(",") if t.strip()]
    lengths = {v.strip() for v in msg.all("content-length")}
    if encodings:
        if encodings != ["chunked"]:
            raise HttpError(501 if msg.method else 502, f"transfer coding {', '.join(encodings)} is not supported",
                            close=True)
        if lengths:
            raise HttpError(400, "both Content-Length and Transfer-Encoding", close=True)
        return None, True
    if not lengths:
        return None, False
    if len(lengths) > 1 or not CONTENT_LENGTH.fullmatch(next(iter(lengths)).encode("latin-1")):
        raise HttpError(400, "invalid Content-Length (one ASCII decimal number expected)", close=True)
    return int(next(iter(lengths))), False


async def _drain(reader: asyncio.StreamReader, length: int) -> bool:
    """Read and drop ``length`` bytes (up to DRAIN_MAX_BYTES); True when all of it was read."""
    if length > DRAIN_MAX_BYTES:
        return False
    while length > 0:
        chunk = await reader.read(min(READ_CHUNK, length))
        if not chunk:
            return False
        length -= len(chunk)
    return True


async def _read_chunked(reader: asyncio.StreamReader, limit: int, keep: bool = True) -> bytes:
    body, size_so_far = bytearray(), 0
    for count in range(1, MAX_CHUNKS + 1):
        if count % CHUNKS_PER_YIELD == 0:
            await asyncio.sleep(0)
        size_line = (await reader.readuntil(b"\r\n"))[:-2].split(b";", 1)[0].strip(b" \t")
        if not CHUNK_SIZE.fullmatch(size_line):
            raise HttpError(400, "malformed chunk size", close=True)
        size = int(size_line, 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailer fields: dropped
                pass
            return bytes(body)
        size_so_far += size
        if size_so_far > limit:
            raise HttpError(413, f"request body over the limit of {limit} bytes", close=True)
        if keep:
            body += await reader.readexactly(size)
        elif not await _drain(reader, size):
            raise asyncio.IncompleteReadError(b"", size)
        if await reader.readexactly(2) != b"\r\n":
            raise HttpError(400, "malformed chunk", close=True)
    raise HttpError(413, f"a chunked body of more than {MAX_CHUNKS} chunks; send larger chunks", close=True)


async def read_request_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: Message,
                            limit: int, keep: bool = True) -> bytes:
    """The body of ``head`` (at most ``limit`` bytes, else 413), answering ``Expect: 100-continue``;
    with ``keep=False`` it is read and dropped (a refused request's, so the connection can go on)."""
    length, chunked = _framing(head)
    expects = (head.header("expect") or "").lower() == "100-continue"
    if length is not None and length > limit:
        if expects:  # the client has not sent the body and will not
            raise HttpError(413, f"request body of {length} bytes is over the limit of {limit} bytes", close=True)
        drained = await _drain(reader, length)
        raise HttpError(413, f"request body of {length} bytes is over the limit of {limit} bytes",
                        close=not drained)
    if not chunked and not length:
        return b""
    if expects:
        writer.write(CONTINUE)
    try:
        if chunked:
            return await _read_chunked(reader, limit, keep)
        if not keep:
            if not await _drain(reader, length):
                raise asyncio.IncompleteReadError(b"", length)
            return b""
        return await reader.readexactly(length)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
        raise HttpError(400, "connection closed inside the request body", close=True) from e


async def read_response(reader: asyncio.StreamReader) -> Message:
    """One response from the upstream server (whole body)."""
    lines = await _read_head(reader)
    if lines is None:
        raise ConnectionResetError("the model server closed the connection")
    parts = lines[0].decode("latin-1").split(" ", 2)
    if len(parts) < 2 or parts[0] not in VERSIONS or not parts[1].isdigit():
        raise HttpError(502, "malformed response from the model server", close=True)
    msg = Message(_parse_headers(lines[1:]), parts[0], status=int(parts[1]),
                  reason=parts[2] if len(parts) == 3 else "")
    length, chunked = _framing(msg)
    if chunked:
        msg.body = await _read_chunked(reader, 1 << 40)
    elif length is not None:
        msg.body = await reader.readexactly(length)
    elif msg.status >= 200 and msg.status not in (204, 304):
        msg.body = await reader.read()
        msg.ends_with_connection = True
    return msg


def encode_request(method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: localhost", *(f"{n}: {v}" for n, v in headers),
             f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def encode_response(status: int, phrase: str, headers: list[tuple[str, str]], body: bytes,
                    keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {phrase or reason(status)}", *(f"{n}: {v}" for n, v in headers),
             f"Content-Length: {len(body)}"]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
