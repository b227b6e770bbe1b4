"""The gate's HTTP/1.1 request parser against h11 and httptools, on the same bytes (issue 28's question:
should a well-kept implementation replace the hand-written one?). Three measurements per parser:

* cost: microseconds per typical invocation (a ~300-byte head and a 30 KB ``Content-Length`` body), and
  per request for a 16 KB body sent in 2-byte chunks (8,000 of them, under the gate's cap) (the attack that cost the gate ~25x its size);
* memory: peak Python allocation (tracemalloc) while the chunk flood is parsed;
* strictness: how many of the gate's refused-on-purpose requests (smuggling, folding, bare LF, absolute
  form, signs and non-ASCII digits in lengths, ...) each parser refuses by itself.

h11 and httptools are not project dependencies: install them where the bench can import them, e.g.
``pip install --target /tmp/parsers h11 httptools`` and ``PYTHONPATH=/tmp/parsers``:

    PYTHONPATH=/tmp/parsers .venv/bin/python -m bench.bench_gate_parsers --rounds 2000
"""

from __future__ import annotations

import argparse
import asyncio
import time
import tracemalloc

from bench.common import machine_note, print_table
from container_serve import http1

TYPICAL = (b"POST /models/shapes-a/invoke HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept-Encoding: identity\r\n"
           b"Content-Type: image/jpeg\r\nAccept: application/json\r\nX-Amzn-SageMaker-Custom-Attributes: topk=3\r\n"
           b"User-Agent: python-requests/2.32\r\nContent-Length: 30000\r\n\r\n" + b"x" * 30_000)
FLOOD = (b"POST /invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
         + b"2\r\nab\r\n" * 8_000 + b"0\r\n\r\n")   # 16 KB of body in 56 KB, under the chunk cap
REFUSED = {  # what the gate refuses on purpose (tests/serve/test_serve_gate_units.py)
    "CL and TE (smuggling)": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
    "two different CLs": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "folded header": b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
    "space in a header name": b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: a\r\n\r\n",
    "bare LF in the head": b"GET / HTTP/1.1\r\nHost: x\r\nX: a\nY: b\r\n\r\n",
    "absolute-form target": b"GET http://evil/ HTTP/1.1\r\nHost: x\r\n\r\n",
    "HTTP/2.0 request line": b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    "Content-Length: +3": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    "Content-Length: \u00b2 (non-ASCII)": "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \u00b2\r\n\r\nab".encode("latin-1"),
    "chunk size -1": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nab\r\n0\r\n\r\n",
    "chunk size 0x2": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n",
    "Transfer-Encoding: gzip": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    "NUL in a header value": b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
}


LOOP = asyncio.new_event_loop()  # one loop for every call, as in the gate (asyncio.run per call costs ~1 ms)


def ours(raw: bytes) -> bytes:
    async def go():
        reader = asyncio.StreamReader(limit=http1.MAX_HEAD_BYTES)
        reader.feed_data(raw)
        reader.feed_eof()
        head = await http1.read_request_head(reader)
        return await http1.read_request_body(reader, None, head, 1 << 30)
    return LOOP.run_until_complete(go())


def with_h11(raw: bytes) -> bytes:
    import h11

    conn, body = h11.Connection(h11.SERVER), bytearray()
    conn.receive_data(raw)
    conn.receive_data(b"")
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return bytes(body)
        elif event is h11.NEED_DATA:
            raise ValueError("incomplete")


def with_httptools(raw: bytes) -> bytes:
    import httptools

    class Sink:
        def __init__(self):
            self.body, self.done = bytearray(), False

        def on_body(self, data):
            self.body += data

        def on_message_complete(self):
            self.done = True

    sink = Sink()
    httptools.HttpRequestParser(sink).feed_data(raw)
    if not sink.done:
        raise ValueError("incomplete")
    return bytes(sink.body)


PARSERS = {"gate (hand-written, asyncio streams)": ours, "h11 0.16": with_h11, "httptools 0.9 (llhttp)": with_httptools}


def per_call_us(parse, raw: bytes, rounds: int) -> float:
    parse(raw)
    start = time.perf_counter()
    for _ in range(rounds):
        parse(raw)
    return (time.perf_counter() - start) / rounds * 1e6


def peak_mib(parse, raw: bytes) -> float:
    tracemalloc.start()
    parse(raw)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def refuses(parse, raw: bytes) -> bool:
    try:
        parse(raw)
    except Exception:  # noqa: BLE001 - any refusal counts
        return True
    return False


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2000, help="typical requests parsed per parser")
    p.add_argument("--flood-rounds", type=int, default=5)
    a = p.parse_args(argv)
    print(f"# bench_gate_parsers: {machine_note()}", flush=True)
    available = {}
    for name, parse in PARSERS.items():
        try:
            parse(TYPICAL)
            available[name] = parse
        except ImportError as e:
            print(f"{name}: not importable ({e}); skipped")
    base = {}
    rows = []
    for name, parse in available.items():
        typical = per_call_us(parse, TYPICAL, a.rounds)
        flood = per_call_us(parse, FLOOD, a.flood_rounds)
        peak = peak_mib(parse, FLOOD)
        refused = [case for case, raw in REFUSED.items() if refuses(parse, raw)]
        base = base or {"typical": typical, "flood": flood}
        rows.append([name, f"{typical:.1f}", f"{typical / base['typical']:.2f}x", f"{flood / 1e3:.1f}",
                     f"{flood / base['flood']:.2f}x", f"{peak:.1f}", f"{len(refused)}/{len(REFUSED)}"])
        missed = sorted(set(REFUSED) - set(refused))
        print(f"{name} accepts: {', '.join(missed) or '(none)'}", flush=True)
    print_table("Parsing one request (same bytes for every parser; ratios against the gate's)",
                ["parser", "typical us", "vs gate", "2-byte-chunk flood ms", "vs gate", "flood peak MiB",
                 "refuses on its own"], rows)
    return {"rows": rows}


if __name__ == "__main__":
    main()
