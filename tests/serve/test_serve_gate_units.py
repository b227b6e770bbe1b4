"""Fast tests of what the gate decides before multi-model-server sees a request, and of the checks a
request body passes before the worker decodes it: no server, no torch model."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from container_serve import body_limits, http1, load_reports, memory
from container_serve import content_types as ct
from container_serve.errors import (
    BadRequestError,
    MethodNotAllowedError,
    NotFoundError,
    UnsupportedMediaTypeError,
)
from container_serve.gate import Gate
from container_serve.management import list_query, parse_load_request
from container_serve.mms_process import HANDLER_SERVICE
from container_serve.model_layout import ModelDirError, ModelOutsideRootError, check_model_dir
from container_serve.settings import ServeSettings

FILES = ("model.pth", "classes.json", "model_config.json")


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "models"
    for name in FILES:
        (r / "m").mkdir(parents=True, exist_ok=True)
        (r / "m" / name).write_text("{}")
    return r


# ---- the model directory layout ------------------------------------------------------------------------

def test_a_model_directory_holds_exactly_the_artifact_files(root, tmp_path):
    assert check_model_dir(root / "m", root) == (root / "m").resolve()
    (root / "m" / "MAR-INF").mkdir()
    with pytest.raises(ModelDirError, match="MAR-INF"):
        check_model_dir(root / "m", root)


@pytest.mark.parametrize("change", ["extra .py", "hidden .py", "symlinked weights", "missing config", "a file",
                                    "outside", "absent"])
def test_model_directories_that_are_refused(root, tmp_path, change):
    model = root / "m"
    if change == "extra .py":
        (model / "torch.py").write_text("x")
    elif change == "hidden .py":   # an inert hidden file is ignored (test_serve_model_layout.py); code is not
        (model / ".sitecustomize.py").write_text("x")
    elif change == "symlinked weights":
        (model / "model.pth").unlink()
        (model / "model.pth").symlink_to("/dev/zero")
    elif change == "missing config":
        (model / "model_config.json").unlink()
    elif change == "a file":
        model = root / "evil.mar"
        model.write_bytes(b"PK")
    elif change == "outside":
        model = root / "linked"
        model.symlink_to(tmp_path)
    else:
        model = root / "nothing-here"
    with pytest.raises(ModelDirError) as err:
        check_model_dir(model, root)
    assert err.value.status == (404 if change == "absent" else 400)
    if change == "outside":
        assert isinstance(err.value, ModelOutsideRootError)


# ---- the management contract ----------------------------------------------------------------------------

def _load(body, content_type="application/json", query=None, root=None):
    return parse_load_request(json.dumps(body).encode() if isinstance(body, dict) else body, content_type,
                              query, root)


def test_a_sagemaker_load_request_is_accepted_and_rebuilt(root):
    req = _load({"model_name": "m-1", "url": str(root / "m")}, root=root)
    sent = json.loads(req.mms_body(ServeSettings.from_env({"BYOC_BATCH_SIZE": "4"})))
    assert sent == {"model_name": "m-1", "url": str(root / "m"), "handler": HANDLER_SERVICE, "runtime": "python",
                    "batch_size": 4, "max_batch_delay": 100, "initial_workers": 0}
    assert req.scale_target(ServeSettings.from_env({"SAGEMAKER_MODEL_SERVER_WORKERS": "2"})) == \
        "/models/m-1?min_worker=2&max_worker=2&synchronous=true"


@pytest.mark.parametrize("body,content_type,query,error", [
    ({"model_name": "m", "url": "U", "handler": "evil:handle"}, "application/json", None, BadRequestError),
    ({"model_name": "m", "url": "U", "runtime": "python3"}, "application/json", None, BadRequestError),
    ({"model_name": "m", "url": "U"}, "application/json", "handler=evil", BadRequestError),
    ({"model_name": "m", "url": "U"}, "text/plain", None, UnsupportedMediaTypeError),
    ({"model_name": "m", "url": "U"}, None, None, UnsupportedMediaTypeError),
    ({"model_name": "m"}, "application/json", None, BadRequestError),
    ({"model_name": "../m", "url": "U"}, "application/json", None, BadRequestError),
    ({"model_name": 7, "url": "U"}, "application/json", None, BadRequestError),
    ({"model_name": "m", "url": "http://127.0.0.1/evil.mar"}, "application/json", None, BadRequestError),
    ({"model_name": "m", "url": "file:///etc"}, "application/json", None, BadRequestError),
    ({"model_name": "m", "url": "m"}, "application/json", None, BadRequestError),
    ({"model_name": "m", "url": "U/../m"}, "application/json", None, BadRequestError),
    ({"model_name": "m", "url": "/etc"}, "application/json", None, BadRequestError),
    ({"model_name": "m", "url": "U-missing"}, "application/json", None, NotFoundError),
    (b'{"model_name": "m", "url": "U", "url": "/etc"}', "application/json", None, BadRequestError),
    (b"[" * 50000, "application/json", None, BadRequestError),
    (b'["m"]', "application/json", None, BadRequestError),
    (b"\xff", "application/json", None, BadRequestError),
])
def test_everything_else_is_refused(root, body, content_type, query, error):
    good = str(root / "m")
    if isinstance(body, dict):
        body = {k: v.replace("U", good) if isinstance(v, str) else v for k, v in body.items()}
    else:
        body = body.replace(b'"U"', json.dumps(good).encode())
    with pytest.raises(error):
        _load(body, content_type, query, root)


def test_load_checks_are_bounded(root):
    keys = b"{" + b",".join(b'"k%d": 1' % i for i in range(7800)) + b"}"   # 64 KB, quadratic before
    with pytest.raises(BadRequestError, match="more than 16 keys"):
        _load(keys, root=root)
    long_name = "a" * 251
    with pytest.raises(BadRequestError, match="1-250"):
        _load({"model_name": long_name, "url": str(root / "m")}, root=root)
    assert _load({"model_name": long_name[:250], "url": str(root / "m")}, root=root).model_name == long_name[:250]
    for url in (str(root / ("x" * 300)), str(root / "m" / "model.pth" / "m")):  # too long; through a file
        with pytest.raises(BadRequestError):
            _load({"model_name": "m", "url": url}, root=root)


def test_list_query():
    assert list_query(None) == "" and list_query("") == ""
    assert list_query("limit=1&next_page_token=2") == "?limit=1&next_page_token=2"
    for bad in ("handler=x", "limit=1&limit=2", "limit=-1", "limit=1e3", "next_page_token=%C2%B2", "limit"):
        with pytest.raises(BadRequestError):
            list_query(bad)


# ---- routing ----------------------------------------------------------------------------------------------

def _head(method, target, headers=()):
    return http1.Message(list(headers), method=method, target=target)


@pytest.mark.parametrize("multi", [True, False])
def test_routes(tmp_path, multi):
    settings = ServeSettings.from_env({"SAGEMAKER_MULTI_MODEL": str(multi).lower(), "BYOC_MODEL_ROOT": str(tmp_path)})
    gate = Gate(settings, tmp_path / "i", tmp_path / "m", tmp_path)
    assert gate.route(_head("GET", "/ping"))[0] == gate.ping
    assert gate.route(_head("GET", "/execution-parameters"))[0] == gate.forward_inference
    routes = {("POST", "/models"): gate.load, ("GET", "/models?limit=2"): gate.list_models,
              ("GET", "/models/a.b_c-1"): gate.forward_management, ("DELETE", "/models/m"): gate.unload,
              ("POST", "/models/m/invoke"): gate.invoke}
    for (method, target), handler in routes.items():
        if multi:
            assert gate.route(_head(method, target))[0] == handler
        else:
            with pytest.raises(NotFoundError, match="single-model endpoint"):
                gate.route(_head(method, target))
    if multi:
        with pytest.raises(NotFoundError):
            gate.route(_head("POST", "/invocations"))
        with pytest.raises(MethodNotAllowedError) as err:
            gate.route(_head("PUT", "/models/m"))
        assert err.value.allow == ("GET", "DELETE")
    else:
        assert gate.route(_head("POST", "/invocations"))[0] == gate.forward_inference
    for method, target in [("GET", "/"), ("OPTIONS", "/"), ("GET", "/api-description"), ("POST", "/predictions/m"),
                           ("POST", "/m/predict"), ("GET", "/metrics")]:
        with pytest.raises(NotFoundError):
            gate.route(_head(method, target))
    with pytest.raises(BadRequestError):
        gate.route(_head("POST", "/invocations?model_name=x" if not multi else "/models/m/invoke?body=x"))


@pytest.mark.parametrize("content_type,error", [
    ("application/x-www-form-urlencoded", UnsupportedMediaTypeError),  # Netty parses these field by field
    ("multipart/form-data; boundary=x", UnsupportedMediaTypeError),
    ("text/plain", UnsupportedMediaTypeError),
    ("image/jpeg, multipart/form-data; boundary=x", UnsupportedMediaTypeError),
    (("image/jpeg", "multipart/form-data; boundary=x"), BadRequestError),   # two headers
    *[(t, None) for t in ct.ACCEPTED_CONTENT_TYPES if t],
    ("Image/JPEG; q=1", None),
])
def test_invocations_take_only_the_content_types_the_handler_reads(tmp_path, content_type, error):
    values = content_type if isinstance(content_type, tuple) else (content_type,)
    headers = [("Content-Type", v) for v in values]
    for multi, target in ((True, "/models/m/invoke"), (False, "/invocations")):
        settings = ServeSettings.from_env({"SAGEMAKER_MULTI_MODEL": str(multi).lower(), "BYOC_MODEL_ROOT": str(tmp_path)})
        gate = Gate(settings, tmp_path / "i", tmp_path / "m", tmp_path)
        if error is None:
            gate.route(_head("POST", target, headers))
        else:
            with pytest.raises(error):
                gate.route(_head("POST", target, headers))


# ---- the HTTP layer -------------------------------------------------------------------------------------

class _Sink:
    """The part of a StreamWriter read_request_body uses."""

    def __init__(self):
        self.data = b""

    def write(self, data):
        self.data += data


def _read(raw: bytes, limit: int = 1000):
    async def go():
        reader = asyncio.StreamReader(limit=http1.MAX_HEAD_BYTES)
        reader.feed_data(raw)
        reader.feed_eof()
        sink = _Sink()
        head = await http1.read_request_head(reader)
        body = await http1.read_request_body(reader, sink, head, limit)
        return head, body, sink.data
    return asyncio.run(go())


def test_requests_are_parsed():
    head, body, sent = _read(b"POST /models/m/invoke HTTP/1.1\r\nContent-Type: image/jpeg\r\n"
                             b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
                             b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")
    assert (head.method, head.path, head.query, body) == ("POST", "/models/m/invoke", None, b"abcde")
    assert sent == http1.CONTINUE
    assert head.end_to_end_headers() == [("Content-Type", "image/jpeg")]
    head, body, _ = _read(b"GET /models?limit=1 HTTP/1.0\r\n\r\n")
    assert (head.query, head.keep_alive, body) == ("limit=1", False, b"")


@pytest.mark.parametrize("raw,status", [
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc", 400),  # smuggling
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400),                                     # folded header
    (b"GET / HTTP/1.1\r\nBad Header: a\r\n\r\n", 400),
    (b"GET http://evil/ HTTP/1.1\r\n\r\n", 400),                                        # absolute form
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\nX: a\nY: b\r\n\r\n", 400),                                      # bare LF
    (b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000, 413),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n" + b"x" * 4096 + b"\r\n0\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 400),                         # truncated body
    ("POST / HTTP/1.1\r\nContent-Length: \u00b2\r\n\r\nab".encode("latin-1"), 400),      # a non-ASCII digit
    (b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nab\r\n0\r\n\r\n", 400),  # negative chunk
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n" + b"x" * 10 + b"\r\n0\r\n\r\n", 400),
])
def test_malformed_requests_are_refused(raw, status):
    with pytest.raises(http1.HttpError) as err:
        _read(raw)
    assert err.value.status == status


def test_chunks_are_counted():
    few = b"".join(b"1\r\nx\r\n" for _ in range(100))
    assert _read(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + few + b"0\r\n\r\n")[1] == b"x" * 100
    many = b"".join(b"1\r\nx\r\n" for _ in range(http1.MAX_CHUNKS + 1))
    with pytest.raises(http1.HttpError, match="chunks") as err:
        _read(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + many + b"0\r\n\r\n", limit=10**7)
    assert err.value.status == 413


def test_head_deadlines():
    async def go(raw: bytes):
        reader = asyncio.StreamReader(limit=http1.MAX_HEAD_BYTES)
        reader.feed_data(raw)  # and nothing more: the client stalls
        return await http1.read_request_head(reader, idle_s=0.05, head_s=0.05)
    assert asyncio.run(go(b"")) is None                 # idle: closed without an answer
    assert asyncio.run(go(b"\r\n")) is None             # an empty line, then idle
    with pytest.raises(http1.HttpError) as err:
        asyncio.run(go(b"GET /ping HTTP/1.1\r\nHost: x"))  # a head that stalls
    assert err.value.status == 408 and err.value.close


def test_a_too_large_body_is_drained_so_the_connection_can_carry_on():
    with pytest.raises(http1.HttpError) as err:
        _read(b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000)
    assert err.value.status == 413 and not err.value.close


def test_responses_are_parsed():
    async def go(raw):
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await http1.read_response(reader)
    resp = asyncio.run(go(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n2\r\nok\r\n0\r\n\r\n"))
    assert (resp.status, resp.body, resp.keep_alive, resp.end_to_end_headers()) == (200, b"ok", True, [("X-A", "1")])
    resp = asyncio.run(go(b"HTTP/1.1 507 Insufficient Storage\r\n\r\nno length"))
    assert (resp.status, resp.body, resp.keep_alive) == (507, b"no length", False)


# ---- bodies: limits before work ---------------------------------------------------------------------------

def test_json_depth_ignores_brackets_in_strings():
    assert body_limits.json_depth(b'{"instances": [[[[1]]]]}') == 5
    assert body_limits.json_depth(b'["]]]]]]]]]]", [[[[[[[[[[1]]]]]]]]]]]') == 11
    assert body_limits.json_depth(b'"[[[[[[[[[[[[[["') == 0
    assert body_limits.json_depth(b'["\\"[[[[[[[[[["]') == 1
    assert body_limits.json_depth(b'["\\\\", [[1]]]') == 3           # an escaped backslash ends no string
    assert body_limits.json_depth(b'["' + b'\\"' * 12_000) == 1   # was a quadratic regex: 5-18 s


def test_json_bounds():
    assert body_limits.load_json(b'{"instances": [[[1.5, 2]]]}') == {"instances": [[[1.5, 2]]]}
    for bad in (b"[" * 9 + b"]" * 9, b"1" * 33, b"[1e999]", b"[NaN]", b"[-Infinity]", b"[" + b"9" * 5000 + b"]",
                b'{"a": ' * 9 + b"1" + b"}" * 9, b"\xff"):
        with pytest.raises(BadRequestError):
            body_limits.load_json(bad)
    assert body_limits.nested_list_shape([[[1, 2, 3]] * 4] * 2) == (2, 4, 3)
    assert body_limits.nested_list_shape([[]]) == (1, 0)


def _npy(arr) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_npy_header_must_describe_the_body():
    body = _npy(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    header = body_limits.read_npy_header(body)
    assert header.shape == (2, 3, 4) and header.dtype == np.float32
    arr = body_limits.npy_array(body, header)
    assert np.array_equal(arr, np.arange(24, dtype=np.float32).reshape(2, 3, 4)) and not arr.flags.writeable
    fortran = _npy(np.asfortranarray(np.arange(6, dtype=np.uint8).reshape(2, 3)))
    assert np.array_equal(body_limits.npy_array(fortran, body_limits.read_npy_header(fortran)),
                          np.arange(6).reshape(2, 3))
    for bad in (body[:-1], body + b"\0", body[:20], b"\x93NUMPY\x03\x00" + body[8:], b"junk"):
        with pytest.raises(BadRequestError):
            body_limits.read_npy_header(bad)
    with pytest.raises(BadRequestError, match="pickle"):
        body_limits.read_npy_header(_npy(np.array([{"a": 1}], dtype=object)))


# ---- memory -------------------------------------------------------------------------------------------

def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_available_memory_reads_cgroup_v2(tmp_path):
    cg, proc = tmp_path / "cg", tmp_path / "cgroup"
    _write(proc, "0::/kubepods/pod1\n")
    _write(cg / "kubepods" / "memory.max", "2147483648\n")                 # 2 GiB on the parent
    _write(cg / "kubepods" / "memory.current", str(1024 * memory.MIB))
    _write(cg / "kubepods" / "memory.stat", f"anon 1\ninactive_file {256 * memory.MIB}\n")
    _write(cg / "kubepods" / "pod1" / "memory.max", "max\n")
    found = memory.available_bytes(cg, tmp_path / "no-meminfo", proc)
    assert found.bytes == (2048 - 1024 + 256) * memory.MIB and "v2" in found.source
    _write(proc, "0::/\n")  # the container view: its own cgroup at the mount point
    _write(cg / "memory.max", str(512 * memory.MIB))
    _write(cg / "memory.current", str(500 * memory.MIB))
    assert memory.available_bytes(cg, tmp_path / "no-meminfo", proc).bytes == 12 * memory.MIB


def test_available_memory_reads_cgroup_v1_and_the_host(tmp_path):
    cg, proc, meminfo = tmp_path / "cg", tmp_path / "cgroup", tmp_path / "meminfo"
    _write(proc, "4:memory:/docker/abc\n0::/\n")
    _write(cg / "memory" / "docker" / "abc" / "memory.limit_in_bytes", str(1024 * memory.MIB))
    _write(cg / "memory" / "docker" / "abc" / "memory.usage_in_bytes", str(1000 * memory.MIB))
    _write(cg / "memory" / "docker" / "abc" / "memory.stat", f"total_inactive_file {100 * memory.MIB}\n")
    _write(cg / "memory" / "memory.limit_in_bytes", "9223372036854771712\n")  # v1's "unlimited"
    _write(meminfo, "MemTotal: 100 kB\nMemAvailable:    8388608 kB\n")
    found = memory.available_bytes(cg, meminfo, proc)
    assert found.bytes == 124 * memory.MIB and "v1" in found.source
    (cg / "memory" / "docker" / "abc" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert memory.available_bytes(cg, meminfo, proc).bytes == 8 * 1024 * memory.MIB  # the host's figure


def test_check_room(tmp_path):
    _write(tmp_path / "memory.max", str(300 * memory.MIB))
    _write(tmp_path / "memory.current", "0")
    memory.check_room(memory.load_needs(50 * memory.MIB, image_size=16), "a model", tmp_path)
    with pytest.raises(MemoryError, match="needs about 328 MiB"):
        memory.check_room(memory.load_needs(100 * memory.MIB, image_size=16), "a model", tmp_path)


def test_load_reports_round_trip(tmp_path):
    assert load_reports.take(tmp_path, "m") is None
    load_reports.write(tmp_path, "m", 507, "full")
    assert load_reports.take(tmp_path, "m") == (507, "full")
    assert load_reports.take(tmp_path, "m") is None
    load_reports.write(None, "m", 500, "no folder: nothing to do")
    load_reports.write(tmp_path, "n" * 250, 400, "the longest legal name")  # the file name does not grow with it
    assert load_reports.take(tmp_path, "n" * 250) == (400, "the longest legal name")
