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

What the gate bounds, so that no request waits forever and ``/ping`` answers during every attack:

* an invocation whose ``Content-Type`` the handler does not accept (``content_types.ACCEPTED_CONTENT_TYPES``)
  is a 415 before anything reaches MMS: its Java frontend (Netty 4.1.91) parses form and multipart bodies
  field by field before our handler runs (one 6 MB body: 163 s of CPU and +2.3 GB);
* idle, head and body timeouts (408 for a head or body that stalls), and a connection cap at which the
  connection that waited longest on its client is closed (``BYOC_GATE_*``, :mod:`container_serve.settings`);
* MMS's answer: ``BYOC_UPSTREAM_TIMEOUT_S`` for invocations and queries, ``BYOC_LOAD_TIMEOUT_S`` for a load,
  then a JSON 504;
* an invocation still waiting when its model is unloaded is answered 404 at once (MMS never answers
  it): the contract's answer for a model that is not loaded ("Invoke Model API"), on which SageMaker
  loads the model again;
* ``POST /models`` is parsed and checked in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import resource
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
    UnsupportedMediaTypeError,
)
from container_serve.http1 import (
    MAX_HEAD_BYTES,
    HttpError,
    Message,
    encode_response,
    read_request_body,
    read_request_head,
    reason,
)
from container_serve.management import (
    MAX_LOAD_BODY_BYTES,
    check_model_name,
    list_query,
    parse_load_request,
)
from container_serve.settings import ServeSettings
from container_serve.upstream import Upstream, within

logger = logging.getLogger(__name__)

FD_RESERVE = 64  # open files kept for MMS sockets, logs and load reports beyond two per connection
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


def connection_cap(wanted: int) -> int:
    """``wanted``, lowered to what the open-files limit allows (a client connection and its upstream
    one each take a descriptor); the soft limit is raised to the hard one first."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, (soft - FD_RESERVE) // 2))


def _mms_message(resp: Message) -> str:
    try:
        return str(json.loads(resp.body).get("message") or resp.reason)
    except (ValueError, AttributeError):
        return resp.reason or f"HTTP {resp.status}"


class Gate:
    def __init__(self, settings: ServeSettings, inference_socket: Path, management_socket: Path,
                 load_reports_dir: Path, server_running: Callable[[], bool] = lambda: True):
        self.settings = settings
        self.inference = Upstream(inference_socket)
        self.management = Upstream(management_socket)
        self.load_reports_dir = load_reports_dir
        self.server_running = server_running
        self._name_locks: dict[str, tuple[asyncio.Lock, int]] = {}  # name -> (lock, users)
        self._unloaded: dict[str, set[asyncio.Future]] = {}  # per model, invocations waiting on MMS
        self._unloading: set[str] = set()
        self._waiting_on_client: dict[asyncio.StreamWriter, None] = {}  # oldest first
        self._open = 0
        self.max_connections = settings.max_connections

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
            return self._invocation(head, self.forward_inference), payload
        if models_api:
            if path == "/models":
                if method == "POST":
                    return self.load, MAX_LOAD_BODY_BYTES
                return self._only(method, ("GET", "POST"), self.list_models), 0
            if m := INVOKE_PATH.match(path):
                check_model_name(m.group(1), "no model", NotFoundError)
                return self._invocation(head, self.invoke), payload
            if m := MODEL_PATH.match(path):
                check_model_name(m.group(1), "no model", NotFoundError)
                if method == "DELETE":
                    return self.unload, 0
                return self._only(method, ("GET", "DELETE"), self.forward_management), 0
        raise NotFoundError(f"no route {method} {path[:200]}")

    @staticmethod
    def _only(method: str, allowed: tuple[str, ...], handler: Handler) -> Handler:
        if method not in allowed:
            raise MethodNotAllowedError(f"method {method} is not allowed here", allowed)
        return handler

    def _invocation(self, head: Message, handler: Handler) -> Handler:
        """POST only, and only a Content-Type the handler reads (content_types, the one definition)."""
        self._only(head.method, ("POST",), handler)
        values = head.all("content-type")
        if len(values) > 1:
            raise BadRequestError("more than one Content-Type header")
        if ct.media_type(values[0] if values else None) not in ct.ACCEPTED_CONTENT_TYPES:
            accepted = ", ".join(t for t in ct.ACCEPTED_CONTENT_TYPES if t) + " or none"
            raise UnsupportedMediaTypeError(f"Content-Type {values[0][:100]!r} is not accepted; send {accepted}")
        return handler

    # -- handlers -------------------------------------------------------------------------------------
    async def ping(self, head: Message, body: bytes) -> Message:
        if not self.server_running():
            return reply(503, {"status": "Unhealthy"})
        return reply(200, {"status": "Healthy"})  # what MMS answers, without waiting for it

    async def forward_inference(self, head: Message, body: bytes) -> Message:
        return await within(self.settings.upstream_timeout_s, f"{head.method} {head.path}",
                            self.inference.send(head.method, head.path, head.end_to_end_headers(), body))

    async def invoke(self, head: Message, body: bytes) -> Message:
        """Forward one invocation of a multi-model endpoint; 404 the moment its model is unloaded."""
        name = INVOKE_PATH.match(head.path).group(1)
        unloaded = asyncio.get_running_loop().create_future()
        self._unloaded.setdefault(name, set()).add(unloaded)
        answer = asyncio.ensure_future(self.forward_inference(head, body))
        try:
            await asyncio.wait((answer, unloaded), return_when=asyncio.FIRST_COMPLETED)
            cut_short = name in self._unloading or unloaded.done()
            if answer.done() and not (answer.result().status >= 500 and cut_short):
                return answer.result()
            # never answered, or MMS's 500 "Worker died" for the one the unload cut short
            raise NotFoundError(f"model {name!r} was unloaded while this invocation waited for it")
        finally:
            answer.cancel()
            waiting = self._unloaded.get(name)
            if waiting is not None:
                waiting.discard(unloaded)
                if not waiting:
                    del self._unloaded[name]

    async def forward_management(self, head: Message, body: bytes) -> Message:
        return await within(self.settings.upstream_timeout_s, f"{head.method} {head.path}",
                            self.management.send(head.method, head.path, [], b""))

    async def list_models(self, head: Message, body: bytes) -> Message:
        return await within(self.settings.upstream_timeout_s, "GET /models",
                            self.management.send("GET", "/models" + list_query(head.query), [], b""))

    @contextlib.asynccontextmanager
    async def _lock(self, name: str):
        """Loads and unloads of one name, one at a time; the lock is dropped with its last user, so
        DELETEs of a million made-up names leave nothing behind."""
        lock, users = self._name_locks.get(name, (asyncio.Lock(), 0))
        self._name_locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._name_locks[name]
            if users == 1:
                del self._name_locks[name]
            else:
                self._name_locks[name] = (lock, users - 1)

    async def unload(self, head: Message, body: bytes) -> Message:
        name = MODEL_PATH.match(head.path).group(1)
        async with self._lock(name):
            self._unloading.add(name)
            try:
                resp = await within(self.settings.upstream_timeout_s, f"DELETE /models/{name}",
                                    self.management.send("DELETE", f"/models/{name}", [], b""))
            finally:
                self._unloading.discard(name)
        if resp.status < 300:  # what MMS still had queued for the model it will never answer
            for waiting in self._unloaded.get(name, ()):
                if not waiting.done():
                    waiting.set_result(None)
        return resp

    async def load(self, head: Message, body: bytes) -> Message:
        request = await asyncio.to_thread(parse_load_request, body, head.header("content-type"), head.query,
                                          self.settings.model_root)
        return await within(self.settings.load_timeout_s, f"POST /models ({request.model_name})",
                            self._load(request))

    async def _load(self, request) -> Message:
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
        if self._open >= self.max_connections and not self._close_longest_waiting():
            writer.write(self._encode(reply(503, {"error": "too many connections, all busy", "code": 503}), False))
            writer.close()
            return
        self._open += 1
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:  # noqa: BLE001 - a bug here must not take the gate down
            logger.exception("gate: unexpected error")
        finally:
            self._open -= 1
            self._waiting_on_client.pop(writer, None)
            writer.close()

    def _close_longest_waiting(self) -> bool:
        """At the connection cap: abort the connection that has waited longest on its client (idle, or
        sending a head or a body), so a fresh request (a /ping) gets in; False when all are busy."""
        for writer in self._waiting_on_client:
            del self._waiting_on_client[writer]
            writer.transport.abort()
            return True
        return False

    def _on_client(self, writer: asyncio.StreamWriter, waiting: bool) -> None:
        self._waiting_on_client.pop(writer, None)
        if waiting:
            self._waiting_on_client[writer] = None  # to the end: the newest wait

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection is to be closed."""
        s = self.settings
        self._on_client(writer, True)
        try:
            head = await read_request_head(reader, s.idle_timeout_s, s.head_timeout_s)
        except HttpError as e:
            await self._send(writer, error_reply(e), keep_alive=False)
            return False
        if head is None:
            return False
        keep_alive = head.keep_alive
        try:
            refused: InferenceError | None = None
            try:
                handler, limit = self.route(head)
            except InferenceError as e:
                refused, limit = e, s.max_payload_bytes
                if (head.header("expect") or "").lower() == "100-continue":
                    raise HttpError(e.status, e.message, close=True) from e
            try:
                async with asyncio.timeout(s.body_timeout_s):
                    body = await read_request_body(reader, writer, head, limit, keep=refused is None)
            except TimeoutError:
                raise HttpError(408, f"the request body did not arrive within {s.body_timeout_s} s",
                                close=True) from None
            self._on_client(writer, False)
            resp = error_reply(refused) if refused else await handler(head, body)
        except InferenceError as e:
            resp = error_reply(e)
            keep_alive = keep_alive and not e.close
        await self._send(writer, resp, keep_alive)
        return keep_alive

    async def _send(self, writer: asyncio.StreamWriter, resp: Message, keep_alive: bool) -> None:
        """Write the answer; a client that does not take it within the body timeout is dropped."""
        self._on_client(writer, True)
        writer.write(self._encode(resp, keep_alive))
        async with asyncio.timeout(self.settings.body_timeout_s):
            await writer.drain()

    @staticmethod
    def _encode(resp: Message, keep_alive: bool) -> bytes:
        return encode_response(resp.status, resp.reason, resp.end_to_end_headers(), resp.body, keep_alive)

    async def serve(self, host: str, port: int) -> asyncio.base_events.Server:
        self.max_connections = connection_cap(self.settings.max_connections)
        if self.max_connections < self.settings.max_connections:
            logger.warning("connection cap lowered to %d by the open-files limit", self.max_connections)
        return await asyncio.start_server(self.handle_connection, host, port, limit=MAX_HEAD_BYTES,
                                          reuse_address=True)

    def close(self) -> None:
        self.inference.close()
        self.management.close()
