"""Multi-model-server seen from the gate: keep-alive HTTP connections to one of its Unix sockets, and a
deadline on every answer (:mod:`container_serve.gate`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path

from container_serve.errors import GatewayTimeoutError, ServiceUnavailableError
from container_serve.http1 import MAX_HEAD_BYTES, Message, encode_request, read_response

MAX_IDLE_UPSTREAM = 32


async def within(seconds: float, what: str, work: Awaitable[Message]) -> Message:
    """``work``'s answer, or a JSON 504 after ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError:
        raise GatewayTimeoutError(f"the model server did not answer {what} within {seconds:g} s") from None


class Upstream:
    """Keep-alive HTTP connections to one of MMS's Unix sockets."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def send(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> Message:
        data = encode_request(method, target, headers, body)
        while True:
            reused = bool(self.idle)
            if reused:
                reader, writer = self.idle.pop()
            else:
                try:
                    reader, writer = await asyncio.open_unix_connection(self.path, limit=MAX_HEAD_BYTES)
                except OSError as e:
                    raise ServiceUnavailableError(f"the model server is not reachable: {e}") from e
            try:
                writer.write(data)
                resp = await read_response(reader)
            except ConnectionResetError:
                writer.close()
                if reused:  # a kept-alive connection MMS had closed before reading anything: send again
                    continue
                raise ServiceUnavailableError("the model server closed the connection") from None
            except (OSError, asyncio.IncompleteReadError) as e:
                writer.close()
                raise ServiceUnavailableError(f"the model server dropped the request: {e}") from e
            except BaseException:  # cancelled (deadline, unload) or refused: its answer must not be reused
                writer.close()
                raise
            if resp.keep_alive and len(self.idle) < MAX_IDLE_UPSTREAM:
                self.idle.append((reader, writer))
            else:
                writer.close()
            return resp

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()
