"""The gate: the only thing listening on SageMaker's port, in front of multi-model-server's Unix sockets.

Routes (anything else is a JSON 404, a wrong method a JSON 405 with ``Allow``):

=================================  ======================  ===============================================
route                              endpoint                what the gate does
=================================  ======================  ===============================================
``GET /ping``                      both                    answers itself while MMS runs (never waits on
                                                           MMS, so it stays fast during model loads)
``GET /execution-parameters``      both                    forwards to MMS (the plugin answers)
``POST /invocations``              single-model            forwards to MMS, no query string
``POST /models/<name>/invoke``     multi-model             forwards to MMS, no query string
``POST /models``                   multi-model             checks it (:mod:`container_serve.management`),
                                                           sends MMS a registration it builds itself
``GET /models``                    multi-model             only ``limit`` / ``next_page_token``
``GET|DELETE /models/<name>``      multi-model             forwards
=================================  ======================  ===============================================

A single-model endpoint has no ``/models`` routes at all: its one model is loaded at start-up.

Loads and unloads of one name run one at a time. A load is two MMS calls: register the model with no
workers, then start its workers (``PUT /models/<name>?min_worker=N&synchronous=true``), which answers
once they loaded it. When that fails, the gate answers with the reason the worker left
(:mod:`container_serve.load_reports`: 400 for a bad artifact, 507 when memory is short) and unregisters
the name first. Why not MMS's one-call load: when its workers fail, MMS 1.1.11 unregisters the model
from the dying worker's thread, whose wait is interrupted, and then puts the model back with zero workers
(``ModelManager.unregisterModel``), after it has already answered; SageMaker's retry after evicting other
models would get 409 and its invocations 503. With the two calls, MMS never unregisters on its own and
the gate's ``DELETE`` is the only one.

Gate errors have the handler's shape ``{"error": ..., "code": ...}``; what MMS answers is passed on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from container_serve import content_types as ct
from container_serve import load_reports
from container_serve.errors import (
    BadRequestError,
    InferenceError,
    InsufficientStorageError,
    MethodNotAllowedError,
    NotFoundError,
    ServiceUnavailableError,
)
from container_serve.http1 import (
    MAX_HEAD_BYTES,
    HttpError,
    Message,
    encode_request,
    encode_response,
    read_request_body,
    read_request_head,
    read_response,
    reason,
)
from container_serve.management import (
    MAX_LOAD_BODY_BYTES,
    MODEL_NAME_RE,
    list_query,
    parse_load_request,
)
from container_serve.settings import ServeSettings

logger = logging.getLogger(__name__)

MAX_IDLE_UPSTREAM = 32
MODEL_PATH = re.compile(r"^/models/([^/]+)$")
INVOKE_PATH = re.compile(r"^/models/([^/]+)/invoke$")
JSON_HEADERS = [("Content-Type", ct.JSON)]
Handler = Callable[[Message, bytes], Awaitable[Message]]


def reply(status: int, doc: dict, headers: tuple = ()) -> Message:
    return Message(JSON_HEADERS + list(headers), status=status, reason=reason(status),
                   body=json.dumps(doc).encode())


def error_reply(e: InferenceError) -> Message:
    allow = (("Allow", ", ".join(e.allow)),) if isinstance(e, MethodNotAllowedError) else ()
    return reply(e.status, {"error": e.message, "code": e.status}, allow)


def _mms_message(resp: Message) -> str:
    try:
        return str(json.loads(resp.body).get("message") or resp.reason)
    except (ValueError, AttributeError):
        return resp.reason or f"HTTP {resp.status}"


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
            if resp.keep_alive and len(self.idle) < MAX_IDLE_UPSTREAM:
                self.idle.append((reader, writer))
            else:
                writer.close()
            return resp

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


class Gate:
    def __init__(self, settings: ServeSettings, inference_socket: Path, management_socket: Path,
                 load_reports_dir: Path, server_running: Callable[[], bool] = lambda: True):
        self.settings = settings
        self.inference = Upstream(inference_socket)
        self.management = Upstream(management_socket)
        self.load_reports_dir = load_reports_dir
        self.server_running = server_running
        self._name_locks: dict[str, asyncio.Lock] = {}

    # -- routing --------------------------------------------------------------------------------------
    def route(self, head: Message) -> tuple[Handler, int]:
        """(handler, largest body accepted) for a request head; raises the 404/405/400 to answer."""
        path, method, multi = head.path, head.method, self.settings.multi_model
        payload = self.settings.max_payload_bytes
        if path == "/ping":
            return self._only(method, ("GET",), self.ping), 0
        models_api = path == "/models" or path.startswith("/models/")
        if models_api and not multi:
            raise NotFoundError("this is a single-model endpoint: it serves POST /invocations and loads "
                                "no model over HTTP")
        if head.query is not None and not (path == "/models" and method in ("GET", "POST")):
            raise BadRequestError(f"{path[:200]} takes no query string")
        if path == "/execution-parameters":
            return self._only(method, ("GET",), self.forward_inference), 0
        if path == "/invocations" and not multi:
            return self._only(method, ("POST",), self.forward_inference), payload
        if models_api:
            if path == "/models":
                if method == "POST":
                    return self.load, MAX_LOAD_BODY_BYTES
                return self._only(method, ("GET", "POST"), self.list_models), 0
            if m := INVOKE_PATH.match(path):
                self._model_name(m.group(1))
                return self._only(method, ("POST",), self.forward_inference), payload
            if m := MODEL_PATH.match(path):
                self._model_name(m.group(1))
                if method == "DELETE":
                    return self.unload, 0
                return self._only(method, ("GET", "DELETE"), self.forward_management), 0
        raise NotFoundError(f"no route {method} {path[:200]}")

    @staticmethod
    def _only(method: str, allowed: tuple[str, ...], handler: Handler) -> Handler:
        if method not in allowed:
            raise MethodNotAllowedError(f"method {method} is not allowed here", allowed)
        return handler

    @staticmethod
    def _model_name(name: str) -> str:
        if not MODEL_NAME_RE.match(name):
            raise NotFoundError(f"no model {name[:80]!r}: model names are letters, digits, '.', '_' and '-'")
        return name

    # -- handlers -------------------------------------------------------------------------------------
    async def ping(self, head: Message, body: bytes) -> Message:
        if not self.server_running():
            return reply(503, {"status": "Unhealthy"})
        return reply(200, {"status": "Healthy"})  # what MMS answers, without waiting for it

    async def forward_inference(self, head: Message, body: bytes) -> Message:
        return await self.inference.send(head.method, head.path, head.end_to_end_headers(), body)

    async def forward_management(self, head: Message, body: bytes) -> Message:
        return await self.management.send(head.method, head.path, [], b"")

    async def list_models(self, head: Message, body: bytes) -> Message:
        return await self.management.send("GET", "/models" + list_query(head.query), [], b"")

    def _lock(self, name: str) -> asyncio.Lock:
        return self._name_locks.setdefault(name, asyncio.Lock())

    async def unload(self, head: Message, body: bytes) -> Message:
        name = MODEL_PATH.match(head.path).group(1)
        async with self._lock(name):
            return await self.management.send("DELETE", f"/models/{name}", [], b"")

    async def load(self, head: Message, body: bytes) -> Message:
        request = parse_load_request(body, head.header("content-type"), head.query, self.settings.model_root)
        name = request.model_name
        async with self._lock(name):
            load_reports.discard(self.load_reports_dir, name)
            registered = await self.management.send("POST", "/models", JSON_HEADERS, request.mms_body(self.settings))
            if registered.status >= 300:  # 409 already loaded, or a url MMS itself refuses
                return registered
            resp = await self.management.send("PUT", request.scale_target(self.settings), [], b"")
            report = load_reports.take(self.load_reports_dir, name)
            if resp.status < 300:
                return resp
            # No name may stay registered without workers (see the module docstring).
            forget = await self.management.send("DELETE", f"/models/{name}", [], b"")
            logger.info("load of %s failed (MMS %d, %s); unregistered: %d", name, resp.status, report, forget.status)
        if report is not None and report[0] != load_reports.LOADED:
            code, message = report
        elif resp.status == 507:
            code, message = 507, InsufficientStorageError.phrase
        else:
            code, message = resp.status, _mms_message(resp)
        return reply(code, {"error": f"model {name!r} did not load: {message}", "code": code})

    # -- connections ----------------------------------------------------------------------------------
    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # noqa: BLE001 - a bug here must not take the gate down
            logger.exception("gate: unexpected error")
        finally:
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection is to be closed."""
        try:
            head = await read_request_head(reader)
        except HttpError as e:
            writer.write(self._encode(error_reply(e), keep_alive=False))
            await writer.drain()
            return False
        if head is None:
            return False
        keep_alive = head.keep_alive
        try:
            refused: InferenceError | None = None
            try:
                handler, limit = self.route(head)
            except InferenceError as e:
                refused, limit = e, self.settings.max_payload_bytes
                if (head.header("expect") or "").lower() == "100-continue":
                    raise HttpError(e.status, e.message, close=True) from e
            body = await read_request_body(reader, writer, head, limit)
            resp = error_reply(refused) if refused else await handler(head, body)
        except InferenceError as e:
            resp = error_reply(e)
            keep_alive = keep_alive and not e.close
        writer.write(self._encode(resp, keep_alive))
        await writer.drain()
        return keep_alive

    @staticmethod
    def _encode(resp: Message, keep_alive: bool) -> bytes:
        return encode_response(resp.status, resp.reason, resp.end_to_end_headers(), resp.body, keep_alive)

    async def serve(self, host: str, port: int) -> asyncio.base_events.Server:
        return await asyncio.start_server(self.handle_connection, host, port, limit=MAX_HEAD_BYTES,
                                          reuse_address=True)

    def close(self) -> None:
        self.inference.close()
        self.management.close()
