"""What the request gate adds to an invocation: the same requests with and without it, in one run.

One single-model endpoint (``byoc.local.endpoint.LocalEndpoint``, process mode: the real ``serve`` entry,
gate + multi-model-server + our handler). Each round sends one request **through the gate** (TCP to the
gate, which forwards over MMS's Unix socket) and one **straight to MMS** (HTTP over the same Unix socket
the gate uses, found in the server's private run folder), alternating, on kept-alive connections, so both
see the same machine at the same moment. "Without the gate" is therefore MMS on a Unix socket, slightly
cheaper than the TCP port MMS listened on before the gate: the difference is an upper bound on the gate's
cost. The model is small on purpose (``--arch resnet18 --image-size 32``: a request costs a few ms), so
the gate's share is as large as it gets; ``/ping`` (answered by the gate alone) is measured too.

    .venv/bin/python -m bench.bench_gate --rounds 400

The request parser alone, against h11 and httptools on the same bytes: ``bench/bench_gate_parsers.py``.
"""

from __future__ import annotations

import argparse
import http.client
import io
import socket
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from bench.common import machine_note, print_table
from byoc_common.architectures import build_classifier
from byoc_common.artifact import ModelConfig, save_model_artifact
from container_serve import content_types as ct
from container_serve.mms_process import INFERENCE_SOCKET


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float = 60):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.socket_path)


def timed(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None, headers: dict) -> float:
    start = time.perf_counter()
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    resp.read()
    elapsed = time.perf_counter() - start
    if resp.status != 200:
        raise RuntimeError(f"{method} {path}: HTTP {resp.status}")
    return elapsed


def percentile(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, max(0, int(round(q / 100 * len(data) + 0.5)) - 1))]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=400, help="request pairs (one through the gate, one direct)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--source-size", type=int, default=64, help="JPEG side in pixels")
    a = p.parse_args(argv)

    from byoc.local.endpoint import LocalEndpoint

    work = Path(tempfile.mkdtemp(prefix="bench-gate-"))
    config = ModelConfig(a.arch, 3, image_size=a.image_size, resize_size=ModelConfig.default_resize(a.image_size))
    save_model_artifact(work / "model", build_classifier(a.arch, 3), ["a", "b", "c"], config)
    buf = io.BytesIO()
    Image.new("RGB", (a.source_size, a.source_size), (120, 30, 200)).save(buf, format="JPEG")
    body, headers = buf.getvalue(), {"Content-Type": ct.JPEG, "Accept": ct.JSON}
    print(f"# bench_gate: {machine_note()}; {a.arch} at {a.image_size}px, {len(body)} byte JPEG, "
          f"{a.rounds} rounds", flush=True)

    env = {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "TMPDIR": str(work)}  # the run folder (and its sockets) here
    with LocalEndpoint(model_root=work / "model", multi_model=False, env=env, log_file=work / "endpoint.log") as ep:
        (socket_path,) = work.glob(f"byoc-mms-*/{INFERENCE_SOCKET}")
        gate = http.client.HTTPConnection("127.0.0.1", ep.port, timeout=60)
        direct = UnixConnection(socket_path)
        for _ in range(a.warmup):
            timed(gate, "POST", "/invocations", body, headers)
            timed(direct, "POST", "/invocations", body, headers)
        with_gate, without, ping = [], [], []
        for i in range(a.rounds):
            pair = [("gate", gate), ("direct", direct)]
            for name, conn in (pair if i % 2 == 0 else pair[::-1]):   # alternate who goes first
                (with_gate if name == "gate" else without).append(
                    timed(conn, "POST", "/invocations", body, headers))
            ping.append(timed(gate, "GET", "/ping", None, {}))
        gate.close()
        direct.close()

    paired = [g - d for g, d in zip(with_gate, without, strict=True)]
    rows = []
    for name, values in (("through the gate (TCP -> gate -> MMS socket)", with_gate),
                         ("straight to MMS (its Unix socket)", without),
                         ("GET /ping (the gate alone)", ping)):
        rows.append([name, len(values), f"{percentile(values, 50) * 1e3:.2f}", f"{percentile(values, 90) * 1e3:.2f}",
                     f"{percentile(values, 99) * 1e3:.2f}"])
    print_table("POST /invocations with and without the gate (ms)", ["path", "requests", "p50", "p90", "p99"], rows)
    added_p50 = (percentile(with_gate, 50) - percentile(without, 50)) * 1e3
    result = {"added_p50_ms": added_p50, "median_paired_ms": statistics.median(paired) * 1e3,
              "ratio_p50": percentile(with_gate, 50) / percentile(without, 50),
              "ping_p50_ms": percentile(ping, 50) * 1e3}
    print(f"Added by the gate: p50 {added_p50:+.2f} ms (median of per-round differences "
          f"{result['median_paired_ms']:+.2f} ms), p50 ratio {result['ratio_p50']:.3f}; "
          f"/ping p50 {result['ping_p50_ms']:.2f} ms\n", flush=True)
    return result


if __name__ == "__main__":
    main()
