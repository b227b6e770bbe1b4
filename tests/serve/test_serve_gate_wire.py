"""The gate on real sockets, in one process: a stand-in for multi-model-server on Unix sockets that never
answers invocations (what MMS does with those queued for a model it unloads), the gate in front of it on
TCP. Deadlines (JSON 504), unloads (JSON 404 at once), the connection cap, and the limits as settings."""

from __future__ import annotations

import asyncio
import json

from container_serve import http1
from container_serve.gate import Gate
from container_serve.settings import ServeSettings

# ---- the gate on real sockets: deadlines, unloads, the connection cap -----------------------------------

class _StalledMms:
    """A real Unix-socket server in multi-model-server's place: it answers everything except invocations,
    which it keeps forever (what MMS does with those queued for a model it unloads)."""

    def __init__(self):
        self.invoked = asyncio.Event()

    async def handle(self, reader, writer):
        while (head := await http1.read_request_head(reader)) is not None:
            await http1.read_request_body(reader, writer, head, 1 << 20)
            if head.path.endswith("/invoke"):
                self.invoked.set()
                await asyncio.Event().wait()
            writer.write(http1.encode_response(200, "OK", [("Content-Type", "application/json")], b"{}", True))


async def _gate(tmp_path, **env):
    settings = ServeSettings.from_env({"SAGEMAKER_MULTI_MODEL": "true", "BYOC_MODEL_ROOT": str(tmp_path), **env})
    mms = _StalledMms()
    for name in ("i", "m"):
        await asyncio.start_unix_server(mms.handle, tmp_path / name)
    gate = Gate(settings, tmp_path / "i", tmp_path / "m", tmp_path)
    listener = await gate.serve("127.0.0.1", 0)
    return mms, listener.sockets[0].getsockname()[1], gate


async def _ask(port, raw, conn=None):
    reader, writer = conn or await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    return await http1.read_response(reader)


INVOKE = b"POST /models/m/invoke HTTP/1.1\r\nContent-Type: image/jpeg\r\nContent-Length: 1\r\n\r\nx"
PING = b"GET /ping HTTP/1.1\r\n\r\n"


def test_no_invocation_waits_forever(tmp_path):
    async def go():
        mms, port, gate = await _gate(tmp_path, BYOC_UPSTREAM_TIMEOUT_S="2")
        late = await _ask(port, INVOKE)                   # MMS never answers: the gate's deadline does
        assert (late.status, json.loads(late.body)["code"]) == (504, 504)
        mms.invoked.clear()
        pending = asyncio.ensure_future(_ask(port, INVOKE))
        await mms.invoked.wait()                          # the invocation is at MMS ...
        assert (await _ask(port, b"DELETE /models/m HTTP/1.1\r\n\r\n")).status == 200   # ... and its model goes
        answer = await pending
        assert (answer.status, json.loads(answer.body)["code"]) == (404, 404), answer.body  # not the 504
        assert "unloaded" in json.loads(answer.body)["error"]
        for name in ("x1", "x2", "x3"):  # unloads of made-up names leave no per-name state behind
            assert (await _ask(port, b"DELETE /models/%s HTTP/1.1\r\n\r\n" % name.encode())).status == 200
        assert gate._name_locks == {} and gate._unloaded == {}
    asyncio.run(go())


def test_at_the_connection_cap_the_longest_waiting_connection_goes(tmp_path):
    async def go():
        _, port, _ = await _gate(tmp_path, BYOC_GATE_MAX_CONNECTIONS="3")
        conns = []
        for _ in range(5):  # each answers a ping, then waits idle on its client
            conns.append(await asyncio.open_connection("127.0.0.1", port))
            assert (await _ask(port, PING, conns[-1])).status == 200
        for reader, _ in conns[:2]:
            assert await asyncio.wait_for(reader.read(), 30) == b""   # closed to make room, oldest first
        for conn in conns[2:]:
            assert (await _ask(port, PING, conn)).status == 200
    asyncio.run(go())


def test_the_gate_limits_are_settings():
    default = ServeSettings.from_env({})
    assert (default.idle_timeout_s, default.head_timeout_s, default.body_timeout_s, default.max_connections) == \
        (60, 10, 60, 1000)
    assert default.upstream_timeout_s == 65                     # SageMaker's 60 s invocation limit + margin
    assert ServeSettings.from_env({"SAGEMAKER_BATCH": "true"}).upstream_timeout_s == 605
    assert ServeSettings.from_env({"BYOC_UPSTREAM_TIMEOUT_S": "2"}).upstream_timeout_s == 2
    assert "+UseContainerSupport" in default.jvm_args          # the heap follows the container's limit
    assert ServeSettings.from_env({"SAGEMAKER_MODEL_SERVER_VMARGS": "-Xmx1g"}).jvm_args == "-Xmx1g"
