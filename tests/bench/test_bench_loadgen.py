"""The load generator only targets 127.0.0.1 and stops at its request and time bounds."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.loadgen import LoadTargetError, check_target, run_load


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    delay_s = 0.0
    hold_until = 0.0        # time.monotonic() before which no answer is given
    hits = 0

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).hits += 1
        time.sleep(self.delay_s)
        while time.monotonic() < self.hold_until:
            time.sleep(0.01)
        status = 200 if body != b"bad" else 400
        payload = b'{"ok": true}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.hits, _Handler.delay_s, _Handler.hold_until = 0, 0.0, 0.0
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/invocations"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("url", [
    "http://localhost:8080/invocations", "http://10.0.0.1:8080/", "https://127.0.0.1:8080/",
    "http://example.com/", "http://127.0.0.2:8080/", "http://0.0.0.0:8080/",
])
def test_refuses_anything_but_127_0_0_1(url):
    with pytest.raises(LoadTargetError):
        check_target(url)
    with pytest.raises(LoadTargetError):
        run_load(url, b"x", concurrency=1, requests=1, max_seconds=1)


@pytest.mark.parametrize("kw", [dict(requests=0), dict(requests=10**9), dict(max_seconds=0),
                                dict(max_seconds=10**6), dict(concurrency=0)])
def test_bounds_are_mandatory_and_capped(kw, server):
    args = dict(concurrency=1, requests=1, max_seconds=1) | kw
    with pytest.raises(LoadTargetError):
        run_load(server, b"x", **args)


def test_stops_at_request_budget(server):
    r = run_load(server, b"x", concurrency=4, requests=37, max_seconds=30, warmup=2)
    assert r.sent == r.ok == 37 and _Handler.hits == 39          # 2 warm-up requests not recorded
    assert r.statuses == {200: 37}
    assert 0 < r.percentile(50) <= r.percentile(99) and r.requests_per_s > 0


def test_stops_at_time_limit(server):
    """Every answer comes only after the load's time limit has passed: each of the two workers sends
    one request and takes no other, whatever the machine's speed."""
    _Handler.hold_until = time.monotonic() + 2.0 + 0.5     # the limit (2 s from about now) and a margin
    r = run_load(server, b"x", concurrency=2, requests=10_000, max_seconds=2.0)
    assert r.sent == r.ok == _Handler.hits == 2
    assert r.wall_s >= 2.0


def test_errors_are_counted_not_timed(server):
    r = run_load(server, b"bad", concurrency=2, requests=6, max_seconds=10)
    assert r.statuses == {400: 6} and r.ok == 0 and r.errors
