"""A hostile client against the real server in process mode (gate + multi-model-server + our handler).

Each attack gets a JSON 4xx and the code it would run never writes its marker; the count bombs get a
4xx from the bound checked before decoding (its message says which) with the worker's peak memory
growing less than 100 MB; form bodies, stalled and idle connections, floods of them, chunk floods,
protocol garbage, heavy load bodies and unloads under load all get a JSON answer (or a closed idle
connection) while ``/ping`` keeps answering within its 2 s (the ping request's own deadline); a load refused with 507 for
memory leaves nothing registered and succeeds once memory is free; the SageMaker SDK's default request
(``application/octet-stream``) and one without Content-Type are answered 200; the server is healthy after
all of it. The memory the load sees comes from ``BYOC_CGROUP_DIR``, a folder of cgroup v2 files the test
writes (the same files the kernel provides in a container). Attacks: tests/serve/hostile.py.
"""

from __future__ import annotations

import base64
import errno
import http.client
import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from byoc.errors import EndpointError
from byoc.local.endpoint import LocalEndpoint
from container_serve.mms_process import ModelServerProcess
from container_serve.settings import ServeSettings
from tests.serve import hostile
from tests.serve.hostile import (  # noqa: F401 - fixtures
    PING_LIMIT_S,
    VICTIM,
    attacks_fixture,
    json_answer,
    mar_host_fixture,
    ping_during,
    raw_exchange,
    stage_fixture,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def cgroup(root):
    folder = root / "cgroup"
    hostile.write_cgroup(folder, "max")
    return folder


@pytest.fixture(scope="module")
def endpoint(root, cgroup):
    with LocalEndpoint(model_root=root / "models", multi_model=True, log_file=root / "endpoint.log",
                       env={"BYOC_CGROUP_DIR": str(cgroup), **hostile.GATE_ENV}) as ep:
        hostile.load_victim(ep)
        yield ep


@pytest.mark.parametrize("name", hostile.ATTACK_NAMES)
def test_attack_is_refused_and_runs_nothing(endpoint, stage, mar_host, attacks, name):
    method, path, body, content_type = attacks[name]
    reply = endpoint.client.request(method, path, body or None, content_type)
    assert 400 <= reply.status < 500, (reply.status, reply.body[:300])
    doc = reply.json()
    assert doc["code"] == reply.status and doc["error"], doc
    assert stage.markers_found() == [], "attacker code ran"
    assert mar_host.hits == [], "the server fetched the attacker's url"
    models = {m["modelName"] for m in endpoint.client.list_models().json()["models"]}
    assert models <= {VICTIM}, models


@pytest.mark.parametrize("name", list(hostile.COUNT_BOMBS))
def test_count_bomb_is_refused_before_work(endpoint, name):
    make, content_type, check = hostile.COUNT_BOMBS[name]
    body = make()
    assert endpoint.client.invoke(hostile.jpeg(), "image/jpeg", target_model=VICTIM).status == 200  # warm
    peak = hostile.PeakMemory(hostile.worker_processes(VICTIM, endpoint.port))
    (reply,) = ping_during(endpoint, endpoint.client.invoke, (body, content_type, "application/json", VICTIM))
    growth = peak.growth_bytes()
    print(f"{name}: {len(body)} bytes -> {reply.status}, worker peak +{growth / 2**20:.1f} MiB: {reply.body[:200]}")
    assert 400 <= reply.status < 500, reply.body[:300]
    assert reply.json()["code"] == reply.status
    assert check in reply.json()["error"], reply.json()  # the bound that fired, before any decoding
    assert growth < hostile.BOMB_MEMORY_LIMIT


def test_the_memory_probe_sees_what_a_request_allocates(endpoint):
    """The control for the bombs' < 100 MB: a legitimate 12-megapixel photo, decoded to 36 MB of RGB."""
    photo = hostile.jpeg(size=(4000, 3000))
    peak = hostile.PeakMemory(hostile.worker_processes(VICTIM, endpoint.port))
    reply = endpoint.client.invoke(photo, "image/jpeg", target_model=VICTIM)
    assert reply.status == 200, reply.body[:300]
    assert peak.growth_bytes() > 30 * 1024 * 1024


def test_octet_stream_and_no_content_type_are_read_as_images(endpoint):
    image = hostile.jpeg((10, 200, 10))
    expected = endpoint.client.invoke(image, "image/jpeg", target_model=VICTIM)
    assert expected.status == 200, expected.body
    for content_type in ("application/octet-stream", None):
        reply = endpoint.client.invoke(image, content_type, target_model=VICTIM)
        assert reply.status == 200, (content_type, reply.body[:300])
        assert reply.json()["predictions"] == expected.json()["predictions"]


def test_gradcam_explains_the_first_image_only(endpoint):
    b64 = base64.b64encode(hostile.jpeg()).decode()
    reply = endpoint.client.invoke(json.dumps({"instances": [b64] * 3}).encode(), "application/json",
                                   target_model=VICTIM, custom_attributes="explain=gradcam")
    assert reply.status == 200, reply.body[:300]
    preds = reply.json()["predictions"]
    assert len(preds) == 3 and "gradcam" in preds[0]
    assert not any("gradcam" in p for p in preds[1:])


def test_load_refused_for_memory_is_507_and_the_retry_succeeds(endpoint, stage, cgroup):
    url = stage.good_model("needs-memory")
    hostile.write_cgroup(cgroup, "1048576")  # 1 MiB left in the (test's) cgroup
    try:
        reply = endpoint.client.load_model("needs-memory", url)
        assert reply.status == 507, reply.body
        assert "not enough memory" in reply.json()["error"]
        # nothing stays registered (MMS alone would keep the name with zero workers: 409 on retry)
        assert endpoint.client.describe_model("needs-memory").status == 404
        assert "needs-memory" not in {m["modelName"] for m in endpoint.client.list_models().json()["models"]}
    finally:
        hostile.write_cgroup(cgroup, "max")  # memory is free again (SageMaker would have evicted other models)
    reply = endpoint.client.load_model("needs-memory", url)
    assert reply.status == 200, reply.body
    assert endpoint.client.invoke(hostile.jpeg(), "image/jpeg", target_model="needs-memory").status == 200
    assert endpoint.client.unload_model("needs-memory").status == 200


def test_invalid_artifact_is_a_400_naming_the_problem(endpoint, stage):
    url = stage.good_model("bad-config")
    (stage.host_root / "bad-config" / "model_config.json").write_text(json.dumps(
        {"arch": "resnet999", "num_classes": 3, "image_size": 32}))
    reply = endpoint.client.load_model("bad-config", url)
    assert reply.status == 400, reply.body
    assert "resnet999" in reply.json()["error"]
    assert endpoint.client.describe_model("bad-config").status == 404


def test_ping_answers_while_a_model_loads(endpoint, stage, cgroup):
    """The load is held inside the worker's memory check (it reads memory.max, here a FIFO the test
    writes only after pinging), so the pings provably happen during the load."""
    url = stage.good_model("slow-load")
    fifo = cgroup / "memory.max"
    fifo.unlink()
    os.mkfifo(fifo)
    result = {}
    loader = threading.Thread(target=lambda: result.setdefault("load", endpoint.client.load_model("slow-load", url)))
    loader.start()
    try:
        fd = _open_when_read(fifo, loader, result)  # the worker has opened memory.max: the load is under way
        try:
            for _ in range(5):  # each within SageMaker's 2 s: the request's own deadline
                assert endpoint.client.request("GET", "/ping", timeout=PING_LIMIT_S).status == 200
            assert loader.is_alive()
        finally:
            os.write(fd, b"max\n")
            os.close(fd)
        loader.join()
    finally:
        if fifo.exists():
            fifo.unlink()
        hostile.write_cgroup(cgroup, "max")
    assert result["load"].status == 200, result["load"].body
    assert endpoint.client.unload_model("slow-load").status == 200


def _open_when_read(fifo, loader: threading.Thread, result: dict) -> int:
    """Open the FIFO for writing once a reader has it open (ENXIO until then); fails, instead of hanging,
    when the load ends first or never gets there."""
    deadline = time.monotonic() + 120
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
            assert loader.is_alive(), f"the load ended before reading memory.max: {result}"
            assert time.monotonic() < deadline, "the worker never read memory.max"
            time.sleep(0.05)
            continue
        os.set_blocking(fd, True)
        return fd


# ---- attacks on the gate itself (issue 28) -----------------------------------------------------------------

FORM_BODIES = {
    "application/x-www-form-urlencoded": lambda n: b"&".join(b"f%d=v" % i for i in range(n)),
    "multipart/form-data; boundary=XyZ": lambda n: b"".join(
        b'--XyZ\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(n)) + b"--XyZ--\r\n",
}


@pytest.mark.parametrize("content_type", list(FORM_BODIES))
def test_form_bodies_never_reach_the_model_server(endpoint, content_type):
    """MMS's Netty would parse these field by field before our handler answered 415 (163 s of CPU and
    +2.3 GB for one 6 MB body): the gate refuses them first."""
    body = FORM_BODIES[content_type](500_000)[: 5 * 2**20]
    replies = ping_during(endpoint, endpoint.client.invoke, *[(body, content_type, "application/json", VICTIM)] * 2)
    for reply in replies:
        assert reply.status == 415 and reply.json()["code"] == 415, reply.body[:300]
    # With Expect: 100-continue the 415 arrives before the body was ever sent (no 100 Continue).
    head = (f"POST /models/{VICTIM}/invoke HTTP/1.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n").encode()
    raw = raw_exchange(endpoint.port, head)
    assert b"100 Continue" not in raw
    assert json_answer(raw)[0] == 415


def test_stalled_and_idle_connections_are_closed(endpoint):
    """Head and body timeouts answer 408; an idle connection is closed without an answer; a flood of
    idle connections past the cap closes the oldest, and /ping still answers."""
    invoke = f"POST /models/{VICTIM}/invoke HTTP/1.1\r\nContent-Type: image/jpeg\r\n".encode()
    assert json_answer(raw_exchange(endpoint.port, invoke + b"Content-Length: 5\r\n"))[0] == 408
    assert json_answer(raw_exchange(endpoint.port, invoke + b"Content-Length: 10\r\n\r\nabc"))[0] == 408
    assert raw_exchange(endpoint.port, b"") == b""
    flood = [socket.create_connection(("127.0.0.1", endpoint.port), timeout=hostile.ANSWER_DEADLINE_S)
             for _ in range(3 * int(hostile.GATE_ENV["BYOC_GATE_MAX_CONNECTIONS"]))]
    try:
        for _ in range(3):
            assert endpoint.client.request("GET", "/ping", timeout=PING_LIMIT_S).status == 200
        assert flood[0].recv(1) == b""  # closed (by the cap, or by the idle timeout): not kept forever
    finally:
        for sock in flood:
            sock.close()


@pytest.mark.parametrize("raw,status", [
    ("Content-Length: \u00b2\r\n\r\nab".encode("latin-1"), 400),                   # a non-ASCII digit
    (b"Transfer-Encoding: chunked\r\n\r\n-1\r\nab\r\n0\r\n\r\n", 400),             # a negative chunk size
    (b"Transfer-Encoding: chunked\r\n\r\n" + b"2\r\nab\r\n" * 20_000 + b"0\r\n\r\n", 413),  # 2-byte chunks
])
def test_protocol_garbage_gets_an_answer(endpoint, raw, status):
    head = f"POST /models/{VICTIM}/invoke HTTP/1.1\r\nContent-Type: image/jpeg\r\n".encode()
    (answer,) = ping_during(endpoint, raw_exchange, (endpoint.port, head + raw))
    assert json_answer(answer)[0] == status


def test_heavy_load_bodies_stay_off_the_event_loop(endpoint):
    """Four 64 KB bodies of ~7,800 keys each stalled /ping for 4.3 s with the quadratic duplicate check."""
    keys = b"{" + b",".join(b'"%x":1' % i for i in range(7_700)) + b"}"  # just under the 64 KB limit
    replies = ping_during(endpoint, endpoint.client.request, *[("POST", "/models", keys, "application/json")] * 4)
    for reply in replies:
        assert reply.status == 400 and "keys" in reply.json()["error"], reply.body[:300]


def test_names_and_urls_at_the_file_system_limits(endpoint, stage):
    good = stage.good_model("n" * 250)
    through_file = stage.server_url(f"{VICTIM}/model.pth/model")
    for name, url in [("long-component", stage.server_url("x" * 300)), ("through-a-file", through_file),
                      ("n" * 251, good)]:
        reply = endpoint.client.load_model(name, url)
        assert 400 <= reply.status < 500 and reply.json()["code"] == reply.status, (name[:20], reply.body[:300])
    reply = endpoint.client.load_model("n" * 250, good)  # the longest legal name loads and answers
    assert reply.status == 200, reply.body[:300]
    assert endpoint.client.invoke(hostile.jpeg(), "image/jpeg", target_model="n" * 250).status == 200
    assert endpoint.client.unload_model("n" * 250).status == 200


def test_invocations_pending_at_an_unload_are_answered(endpoint, stage):
    """MMS never answers what it had queued for a model it unloads (still open after 400 s): the gate
    answers them 404 the moment the unload is done. Every request must come back within the deadline."""
    url = stage.good_model("unloading")
    assert endpoint.client.load_model("unloading", url).status == 200
    photo = hostile.jpeg(size=(2000, 1500))
    first_answered = threading.Event()

    def invoke(_):
        reply = endpoint.client.invoke(photo, "image/jpeg", target_model="unloading",
                                       custom_attributes="explain=gradcam", timeout=hostile.ANSWER_DEADLINE_S)
        first_answered.set()
        return reply

    with ThreadPoolExecutor(12) as pool:
        replies = pool.map(invoke, range(12))
        assert first_answered.wait(hostile.ANSWER_DEADLINE_S)   # the worker is busy, the rest queue behind it
        assert endpoint.client.unload_model("unloading").status == 200
        assert endpoint.client.request("GET", "/ping", timeout=PING_LIMIT_S).status == 200
        statuses = [r.status for r in replies]
    print("answers after the unload:", statuses)
    assert set(statuses) <= {200, 404, 503}, statuses
    assert endpoint.client.describe_model("unloading").status == 404


def test_server_is_healthy_after_all_of_it(endpoint, stage, mar_host):
    assert endpoint.client.request("GET", "/ping").status == 200
    reply = endpoint.client.invoke(hostile.jpeg(), "image/jpeg", target_model=VICTIM)
    assert reply.status == 200 and reply.json()["predictions"][0]["label"] in hostile.CLASSES
    assert [(p.pid, p.create_time()) for p in hostile.worker_processes(VICTIM, endpoint.port)] == \
        endpoint.workers_at_start
    assert stage.markers_found() == [] and mar_host.hits == []


# ---- single-model endpoints ---------------------------------------------------------------------------

def test_single_model_endpoint_loads_no_model_over_http(tmp_path):
    stage = hostile.Stage(tmp_path / "models", lambda rel: str(tmp_path / "models" / rel))
    evil = stage.evil_module("single")
    hostile.write_model(tmp_path / "model")
    with LocalEndpoint(model_root=tmp_path / "model", multi_model=False, log_file=tmp_path / "ep.log") as ep:
        for method, path, body in [
            ("POST", "/models", json.dumps({"model_name": "x", "url": str(tmp_path / "model"),
                                            "handler": evil + ":handle"}).encode()),
            ("POST", f"/models?model_name=x&url={tmp_path / 'model'}&handler={evil}:handle", b""),
            ("GET", "/models", b""), ("DELETE", "/models/model", b""), ("POST", "/models/model/invoke", hostile.jpeg()),
        ]:
            reply = ep.client.request(method, path, body or None, "application/json" if body else None)
            assert reply.status == 404, (method, path, reply.body)
        for content_type in ("application/octet-stream", None, "image/jpeg"):
            assert ep.client.invoke(hostile.jpeg(), content_type).status == 200
    assert stage.markers_found() == []


def test_single_model_directory_with_a_manifest_is_not_served(tmp_path):
    stage = hostile.Stage(tmp_path, lambda rel: str(tmp_path / rel))
    stage.model_with("model", {"MAR-INF/MANIFEST.json": hostile.manifest("single-code:handle"),
                               "single-code.py": "{code}"})
    ep = LocalEndpoint(model_root=tmp_path / "model", multi_model=False, log_file=tmp_path / "ep.log")
    with pytest.raises(EndpointError, match="exited with code 2"):
        ep.start()
    assert "holds more than the model artifact" in ep.log_text()
    assert stage.markers_found() == []


# ---- the control: the same attacks do run code on a bare multi-model-server ---------------------------

class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=120)
        self.socket_path = str(path)

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.socket_path)


def _bare_request(path, method, target, body=None, headers=None):
    conn = _UnixConnection(path)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_the_attacks_do_run_code_on_a_bare_mms(tmp_path):
    """Without the gate, MMS runs what the request names: this is what the markers would show."""
    stage = hostile.Stage(tmp_path / "models", lambda rel: str(tmp_path / "models" / rel))
    stage.host_root.mkdir()
    settings = ServeSettings.from_env({"SAGEMAKER_MULTI_MODEL": "true", "BYOC_MODEL_ROOT": str(stage.host_root)})
    server = ModelServerProcess(settings)
    mar_host = hostile.MarHost(stage.mar_bytes("bare-mar"))
    try:
        server.start()
        deadline = time.monotonic() + 120
        while True:  # until the management socket answers
            try:
                if _bare_request(server.management_socket, "GET", "/models")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and server.proc.poll() is None, "MMS did not start"
            time.sleep(0.2)
        json_headers = {"Content-Type": "application/json"}
        good = stage.good_model("victim")
        for name, body in [
            ("handler-field", {"model_name": "a", "url": good, "handler": stage.evil_module("handler-field") + ":handle"}),
            ("with-manifest", {"model_name": "b", "url": stage.model_with("with-manifest", {
                "MAR-INF/MANIFEST.json": hostile.manifest("with-manifest-code:handle"),
                "with-manifest-code.py": "{code}"})}),
            ("bare-mar", {"model_name": "c", "url": mar_host.url}),
        ]:
            status, answer = _bare_request(server.management_socket, "POST", "/models", json.dumps(body), json_headers)
            assert name in stage.markers_found(), (name, status, answer[:300])
    finally:
        mar_host.close()
        server.stop()
        server.cleanup()
