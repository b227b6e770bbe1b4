"""The in-process floor of one request, in a fresh process with a worker's OpenMP environment.

``bench.bench_serving`` runs this as a child process (``python -m bench.bench_serve_floor MODEL_DIR
JPEG THREADS ITERATIONS FORM``) because OpenMP reads ``OMP_WAIT_POLICY`` once, when torch loads it: the
bench's own process cannot switch. Prints one JSON line: p50/p99 of
``container_serve.decoding.ImageDecoder.decode`` + forward + softmax, and of the decode alone.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from container_serve import content_types as ct


def floor(model_dir: Path, body: bytes, threads: int, n: int, form: str) -> dict:
    import torch

    from container_serve.decoding import ImageDecoder
    from container_serve.model_form import load_served_model

    torch.set_num_threads(threads)
    model, _, config = load_served_model(model_dir, form)
    decoder = ImageDecoder(config)
    times, decode_times = [], []
    with torch.inference_mode():
        for i in range(n + 3):
            t0 = time.perf_counter()
            x = torch.stack(decoder.decode(body, ct.JPEG))
            t1 = time.perf_counter()
            torch.softmax(model(x), dim=1)
            t2 = time.perf_counter()
            if i >= 3:                                  # 3 warm-up iterations
                times.append(t2 - t0)
                decode_times.append(t1 - t0)
    times.sort()
    return {"form": model.form, "threads": threads, "p50_ms": times[len(times) // 2] * 1e3,
            "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))] * 1e3,
            "decode_p50_ms": statistics.median(decode_times) * 1e3}


if __name__ == "__main__":
    model_dir, jpeg, threads, n, form = sys.argv[1:6]
    print(json.dumps(floor(Path(model_dir), Path(jpeg).read_bytes(), int(threads), int(n), form)))
