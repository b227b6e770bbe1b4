"""A small HTTP load generator for the local endpoint: 127.0.0.1 only, bounded in requests and time.

``N`` threads each keep one keep-alive connection and send the same request body until the shared
request budget is spent or the time limit passes; every request's latency and status is recorded.
It refuses any host other than ``127.0.0.1`` (so a typo cannot load someone else's server), and
both bounds are mandatory and capped (:data:`MAX_REQUESTS`, :data:`MAX_SECONDS`).

    python -m bench.loadgen --url http://127.0.0.1:8080/invocations --file dog.jpg \\
        --content-type image/jpeg --concurrency 4 --requests 200 --max-seconds 30
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from container_serve import content_types as ct

ALLOWED_HOST = "127.0.0.1"
MAX_REQUESTS = 100_000
MAX_SECONDS = 900.0
MAX_CONCURRENCY = 256


class LoadTargetError(ValueError):
    """The target or the bounds are not allowed."""


def check_target(url: str) -> tuple[str, int, str]:
    """(host, port, path) of ``url``; raises unless it is plain http on 127.0.0.1."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise LoadTargetError(f"only http:// URLs are supported, got {url!r}")
    if parts.hostname != ALLOWED_HOST:
        raise LoadTargetError(f"refusing to send load to {parts.hostname!r}: only {ALLOWED_HOST} is allowed")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return ALLOWED_HOST, parts.port or 80, path


@dataclass
class LoadResult:
    concurrency: int
    latencies_s: list[float] = field(default_factory=list)   # successful (2xx) requests only
    statuses: dict[int, int] = field(default_factory=dict)   # status code -> count (0 = connection error)
    errors: list[str] = field(default_factory=list)          # first few error messages
    wall_s: float = 0.0

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    @property
    def requests_per_s(self) -> float:
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in seconds (nearest-rank); NaN without successful requests."""
        if not self.latencies_s:
            return float("nan")
        data = sorted(self.latencies_s)
        k = max(0, min(len(data) - 1, int(round(q / 100 * len(data) + 0.5)) - 1))
        return data[k]

    def summary(self) -> dict:
        return {"concurrency": self.concurrency, "sent": self.sent, "ok": self.ok, "statuses": self.statuses,
                "wall_s": round(self.wall_s, 3), "req_per_s": round(self.requests_per_s, 2),
                "p50_ms": round(self.percentile(50) * 1e3, 2), "p99_ms": round(self.percentile(99) * 1e3, 2),
                "mean_ms": round(statistics.fmean(self.latencies_s) * 1e3, 2) if self.latencies_s else None}


def new_tally() -> dict:
    """Where a bench adds up one server's rounds at one concurrency (:func:`tally`)."""
    return {"lat": [], "ok": 0, "sent": 0, "wall_s": 0.0, "per_round": []}


def tally(acc: dict, res: LoadResult) -> None:
    """Add one round's :class:`LoadResult` to ``acc`` (from :func:`new_tally`): latencies, counts,
    wall time, and the round's req/s, so a bench can show the spread between rounds."""
    acc["lat"] += res.latencies_s
    acc["ok"] += res.ok
    acc["sent"] += res.sent
    acc["wall_s"] += res.wall_s
    acc["per_round"].append(round(res.requests_per_s, 2))


def run_load(url: str, body: bytes, *, concurrency: int, requests: int, max_seconds: float,
             headers: dict[str, str] | None = None, method: str = "POST", timeout_s: float = 30.0,
             warmup: int = 0) -> LoadResult:
    """Send up to ``requests`` requests with ``concurrency`` threads, stopping after ``max_seconds``.

    ``warmup`` extra requests are sent first (one thread, not recorded) so connection set-up and
    lazy model initialisation do not count.
    """
    host, port, path = check_target(url)
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise LoadTargetError(f"concurrency must be 1..{MAX_CONCURRENCY}, got {concurrency}")
    if not 1 <= requests <= MAX_REQUESTS:
        raise LoadTargetError(f"requests must be 1..{MAX_REQUESTS}, got {requests}")
    if not 0 < max_seconds <= MAX_SECONDS:
        raise LoadTargetError(f"max_seconds must be in (0, {MAX_SECONDS}], got {max_seconds}")
    headers = {"Content-Type": ct.OCTET_STREAM, **(headers or {})}
    result = LoadResult(concurrency)
    lock = threading.Lock()
    budget = [requests]

    def take() -> bool:
        with lock:
            if budget[0] <= 0 or time.monotonic() >= deadline:
                return False
            budget[0] -= 1
            return True

    def record(status: int, latency: float | None, error: str | None) -> None:
        with lock:
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if latency is not None and 200 <= status < 300:
                result.latencies_s.append(latency)
            if error and len(result.errors) < 10:
                result.errors.append(error)

    def one(conn: http.client.HTTPConnection) -> tuple[int, float, str | None]:
        start = time.perf_counter()
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        latency = time.perf_counter() - start
        err = None if 200 <= resp.status < 300 else f"HTTP {resp.status}: {data[:200]!r}"
        return resp.status, latency, err

    def worker() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        try:
            while take():
                try:
                    status, latency, err = one(conn)
                    record(status, latency, err)
                except (OSError, http.client.HTTPException) as e:
                    record(0, None, f"{type(e).__name__}: {e}")
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        finally:
            conn.close()

    if warmup:
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        try:
            for _ in range(warmup):
                one(conn)
        finally:
            conn.close()
    start = time.monotonic()
    deadline = start + max_seconds
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max_seconds + timeout_s + 5)
    result.wall_s = time.monotonic() - start
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="http://127.0.0.1:PORT/path")
    p.add_argument("--file", type=Path, required=True, help="request body")
    p.add_argument("--content-type", default=ct.X_IMAGE)
    p.add_argument("--concurrency", "-c", type=int, default=1)
    p.add_argument("--requests", "-n", type=int, required=True)
    p.add_argument("--max-seconds", type=float, required=True)
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args(argv)
    r = run_load(a.url, a.file.read_bytes(), concurrency=a.concurrency, requests=a.requests,
                 max_seconds=a.max_seconds, headers={"Content-Type": a.content_type}, warmup=a.warmup)
    print(r.summary())
    for e in r.errors:
        print("error:", e)


if __name__ == "__main__":
    main()
