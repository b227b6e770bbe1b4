"""Serving latency, throughput, model load time and memory on the local endpoint (multi-model-server).

All in one run, on one ResNet50 artifact made with ``byoc_common.artifact.save_model_artifact``
from **random weights** (no ImageNet ResNet weights exist offline; latency and memory do not depend
on the weight values) and one JPEG (``--source-size`` px, a dogImages-sized photo by default):

1. **Floor**: in this process, ``container_serve.decoding.ImageDecoder.decode`` + forward + softmax
   on the same bytes with the same torch thread count a worker uses: what a request must cost.
2. **Endpoint** (``byoc.local.endpoint.LocalEndpoint``, process mode, single-model
   ``/invocations``) for each thread setting in ``--settings`` (``WORKERSxTHREADS``: MMS workers for
   the model x torch threads per worker): p50/p99 latency and requests/s at concurrency 1, 4, 16
   with :mod:`bench.loadgen` (127.0.0.1 only, bounded). Ratio = endpoint p50 at concurrency 1 /
   floor p50.
3. **Multi-model**: a multi-model endpoint; ``--models`` copies of the artifact loaded one by one
   with ``POST /models``: cold load time (the POST, which returns after the worker loaded and
   warmed the model) plus the first invoke, and the resident memory (psutil RSS and USS summed over
   the server's process tree: Java frontend + Python workers) after each load. From the increment
   per model: how many ResNet50 models fit in ``--budget-gib`` before the endpoint must evict.

    .venv/bin/python -m bench.bench_serving
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import psutil
import torch

from bench.common import machine_note, print_table
from bench.loadgen import run_load
from byoc.datasets.synthetic import draw_example
from byoc_common.architectures import build_classifier
from byoc_common.artifact import ModelConfig, load_model_artifact, save_model_artifact

ARCH = "resnet50"


def make_artifact(dest: Path, num_classes: int = 133) -> Path:
    torch.manual_seed(0)
    model = build_classifier(ARCH, num_classes)       # random weights: see the module docstring
    return save_model_artifact(dest, model, [f"class_{i}" for i in range(num_classes)],
                               ModelConfig(ARCH, num_classes, image_size=224, resize_size=256))


def make_jpeg(size: int) -> bytes:
    import random

    buf = io.BytesIO()
    draw_example(0, 4, random.Random(0), size=size).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def floor_latency(model_dir: Path, body: bytes, threads: int, n: int) -> dict:
    """p50/p99 of decode + forward + softmax in this process (the cost no server can avoid)."""
    from container_serve.decoding import ImageDecoder

    torch.set_num_threads(threads)
    model, _, config = load_model_artifact(model_dir)
    decoder = ImageDecoder(config)
    times, decode_times = [], []
    with torch.inference_mode():
        for i in range(n + 3):
            t0 = time.perf_counter()
            x = torch.stack(decoder.decode(body, "image/jpeg"))
            t1 = time.perf_counter()
            torch.softmax(model(x), dim=1)
            t2 = time.perf_counter()
            if i >= 3:                                  # 3 warm-up iterations
                times.append(t2 - t0)
                decode_times.append(t1 - t0)
    times.sort()
    return {"threads": threads, "p50_ms": times[len(times) // 2] * 1e3,
            "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))] * 1e3,
            "decode_p50_ms": statistics.median(decode_times) * 1e3}


def tree_memory(pid: int) -> dict:
    """RSS and USS (MiB) summed over a process and its descendants."""
    rss = uss = 0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {"rss_mib": 0.0, "uss_mib": 0.0, "procs": 0}
    for p in procs:
        try:
            info = p.memory_full_info()
            rss += info.rss
            uss += info.uss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return {"rss_mib": rss / 2**20, "uss_mib": uss / 2**20, "procs": len(procs)}


def endpoint_latency(model_dir: Path, body: bytes, workers: int, threads: int, concurrency: list[int],
                     requests: dict[int, int], max_seconds: float) -> list[dict]:
    from byoc.local.endpoint import LocalEndpoint

    env = {"SAGEMAKER_MODEL_SERVER_WORKERS": str(workers), "BYOC_TORCH_THREADS": str(threads)}
    rows = []
    with LocalEndpoint(model_root=model_dir, multi_model=False, env=env) as ep:
        for c in concurrency:
            r = run_load(ep.url + "/invocations", body, concurrency=c, requests=requests[c],
                         max_seconds=max_seconds, headers={"Content-Type": "image/jpeg"}, warmup=3)
            s = r.summary()
            s.update(workers=workers, threads=threads, errors=r.errors[:3])
            rows.append(s)
            print(f"# endpoint {workers}x{threads} c={c}: {s}", flush=True)
    return rows


def multi_model_memory(model_dir: Path, body: bytes, n_models: int, threads: int) -> dict:
    from byoc.local.endpoint import LocalEndpoint

    out = {"loads": []}
    with tempfile.TemporaryDirectory(prefix="bench-mme-") as root, \
            LocalEndpoint(model_root=root, multi_model=True, env={"BYOC_TORCH_THREADS": str(threads)}) as ep:
        time.sleep(2)
        out["idle"] = tree_memory(ep._proc.pid)
        for i in range(n_models):
            name = f"resnet50-{i}"
            ep.deploy(name, model_dir)
            t0 = time.perf_counter()
            reply = ep.client.load_model(name, ep.model_url(name))
            status, body_json = reply.status, reply.json()
            t1 = time.perf_counter()
            inv_status, _, _ = ep.client.invoke(body, "image/jpeg", target_model=name)
            t2 = time.perf_counter()
            if status != 200 or inv_status != 200:
                raise RuntimeError(f"loading {name}: {status} {body_json}; invoke {inv_status}")
            time.sleep(1)
            mem = tree_memory(ep._proc.pid)
            out["loads"].append({"model": name, "load_s": t1 - t0, "first_invoke_s": t2 - t1, **mem})
            print(f"# loaded {name}: {out['loads'][-1]}", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", default="1x2,2x1,1x1",
                   help="comma-separated WORKERSxTHREADS endpoint settings (2 cores here)")
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--requests-per-thread", type=int, default=12, help="requests per concurrent client")
    p.add_argument("--max-seconds", type=float, default=60, help="time bound per load level")
    p.add_argument("--floor-iterations", type=int, default=20)
    p.add_argument("--models", type=int, default=3, help="ResNet50 models to load on the multi-model endpoint")
    p.add_argument("--budget-gib", type=float, default=4.0)
    p.add_argument("--source-size", type=int, default=448)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    model_dir = make_artifact(work / "model")
    body = make_jpeg(a.source_size)
    concurrency = [int(c) for c in a.concurrency.split(",")]
    requests = {c: max(10, a.requests_per_thread * c) for c in concurrency}
    settings = [tuple(int(x) for x in s.split("x")) for s in a.settings.split(",")]
    print(f"# bench_serving: {machine_note()}; ResNet50 (random weights), {len(body)} byte "
          f"{a.source_size}px JPEG, settings {settings}", flush=True)

    floors = {t: floor_latency(model_dir, body, t, a.floor_iterations) for t in sorted({t for _, t in settings})}
    for f in floors.values():
        print(f"# floor threads={f['threads']}: {f}", flush=True)
    results = {"floor": floors, "endpoint": [], "multi_model": None}
    for workers, threads in settings:
        results["endpoint"] += endpoint_latency(model_dir, body, workers, threads, concurrency, requests, a.max_seconds)
    rows = []
    for r in results["endpoint"]:
        f = floors[r["threads"]]
        rows.append([f"{r['workers']}x{r['threads']}", r["concurrency"], f"{r['ok']}/{r['sent']}", r["p50_ms"],
                     r["p99_ms"], r["req_per_s"], f"{f['p50_ms']:.1f}", f"{r['p50_ms'] / f['p50_ms']:.2f}x"])
    print_table("Single-image requests to /invocations vs the in-process floor (decode + forward)",
                ["workers x threads", "concurrency", "ok/sent", "p50 ms", "p99 ms", "req/s",
                 "floor p50 ms (same threads)", "p50 / floor"], rows)

    mm = multi_model_memory(model_dir, body, a.models, threads=max(1, psutil.cpu_count() or 1))
    results["multi_model"] = mm
    rows, prev = [], mm["idle"]
    rows.append(["(no model)", "-", "-", f"{prev['rss_mib']:.0f}", f"{prev['uss_mib']:.0f}", "-", "-", prev["procs"]])
    for ld in mm["loads"]:
        rows.append([ld["model"], f"{ld['load_s']:.2f}", f"{ld['first_invoke_s'] * 1e3:.0f}", f"{ld['rss_mib']:.0f}",
                     f"{ld['uss_mib']:.0f}", f"{ld['rss_mib'] - prev['rss_mib']:+.0f}",
                     f"{ld['uss_mib'] - prev['uss_mib']:+.0f}", ld["procs"]])
        prev = ld
    print_table("Multi-model endpoint: cold load and memory per ResNet50 (random weights)",
                ["model", "load s (POST /models)", "first invoke ms", "tree RSS MiB", "tree USS MiB",
                 "RSS +MiB", "USS +MiB", "processes"], rows)
    per_model = statistics.fmean(
        [b["uss_mib"] - a_["uss_mib"] for a_, b in zip([mm["idle"], *mm["loads"][:-1]], mm["loads"], strict=True)])
    budget = a.budget_gib * 1024
    fit = int((budget - mm["idle"]["uss_mib"]) // per_model) if per_model > 0 else None
    results["fit"] = {"budget_gib": a.budget_gib, "per_model_uss_mib": per_model, "models": fit}
    print(f"Per loaded ResNet50: +{per_model:.0f} MiB USS (one Python worker with torch + the weights); "
          f"idle server {mm['idle']['uss_mib']:.0f} MiB -> {fit} models fit in {a.budget_gib:g} GiB before "
          f"eviction.\n", flush=True)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=str))
    return results


if __name__ == "__main__":
    main()
