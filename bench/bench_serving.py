"""Serving side by side: this project's endpoint and TorchServe 0.12, same ResNet50, same JPEG, in rounds.

All in one run, on one ResNet50 artifact made with ``byoc_common.artifact.save_model_artifact``
from **random weights** (seed 0; no ImageNet ResNet weights exist offline; latency and memory do not
depend on the weight values) and one ``--width`` x ``--height`` JPEG (500 x 375 by default, a
dogImages-sized photo), POST ``image/jpeg`` to 127.0.0.1 only (:mod:`bench.loadgen`):

1. **Floor**: in this process, ``container_serve.decoding.ImageDecoder.decode`` + forward + softmax on the
   same bytes, for the float32 network and the served form (:mod:`container_serve.model_form`), with 1
   and with all cores' threads: what a request must cost.
2. **Side by side**: every server in ``--ours`` (this project's single-model endpoint,
   ``byoc.local.endpoint.LocalEndpoint``, process mode, each entry a ``;``-separated list of environment
   settings, ``default`` = none) and in ``--torchserve`` (:mod:`bench.bench_serve_torchserve`: ``default``
   or ``WxT``) is started once and kept running; then ``--rounds`` rounds, each sending every server in
   turn ``--requests`` requests at concurrency 1, 4 and 16 (after 3 warm-up requests), so a change in
   the machine's load hits every server alike. p50/p99 over all rounds' latencies, req/s = requests /
   seconds summed over rounds; ratios against TorchServe's best setting for each figure.
3. **Multi-model** (:mod:`bench.bench_serve_multi_model`): a multi-model endpoint per ``--mme`` entry
   (``before`` = defaults with the fork server off, ``BYOC_FORK_SERVER=false``; ``after`` = defaults),
   ``--mme-rounds`` interleaved pairs; ``--models`` copies of the artifact loaded one by one with
   ``POST /models``: cold load time (the POST returns after the worker loaded and warmed the model) plus
   the first invoke, and the memory summed over the server's process tree idle and after each load
   (psutil RSS, PSS, USS). Models per GiB = 1024 / the mean PSS increment per model.

    .venv/bin/python -m bench.bench_serving
"""

from __future__ import annotations

import argparse
import io
import json
import random
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import psutil
import torch

from bench.bench_serve_multi_model import MME_RUNS, run_multi_model
from bench.bench_serve_torchserve import TorchServe, make_archive
from bench.common import machine_note, print_table
from bench.loadgen import new_tally, run_load, tally
from byoc.datasets.synthetic import draw_example
from byoc_common.architectures import build_classifier
from byoc_common.artifact import ModelConfig, save_model_artifact
from container_serve import content_types as ct

ARCH = "resnet50"
CONCURRENCY = (1, 4, 16)
BEFORE_ENV = "BYOC_MODEL_FORM=fp32;BYOC_MAX_TORCH_THREADS=1"   # what served until issue 15


def make_artifact(dest: Path, num_classes: int = 133) -> Path:
    torch.manual_seed(0)
    model = build_classifier(ARCH, num_classes)       # random weights: see the module docstring
    return save_model_artifact(dest, model, [f"class_{i}" for i in range(num_classes)],
                               ModelConfig(ARCH, num_classes, image_size=224, resize_size=256))


def make_jpeg(width: int, height: int = 0) -> bytes:
    buf = io.BytesIO()
    img = draw_example(0, 4, random.Random(0), size=max(width, height))
    img.resize((width, height or width)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def parse_env(spec: str) -> dict[str, str]:
    """``"A=1;B=2"`` -> {"A": "1", "B": "2"}; ``"default"`` -> {}."""
    if spec.strip() in ("", "default"):
        return {}
    return dict(item.split("=", 1) for item in spec.split(";") if item.strip())


def _percentiles(times: list[float]) -> tuple[float, float]:
    times = sorted(times)
    return times[len(times) // 2] * 1e3, times[min(len(times) - 1, int(0.99 * len(times)))] * 1e3


def floor_latency(model_dir: Path, jpeg: Path, threads: int, n: int, form: str) -> dict:
    """p50/p99 of decode + forward + softmax (the cost no server can avoid), in a child process with the
    OpenMP environment a worker gets (:mod:`bench.bench_serve_floor`)."""
    from container_serve.mms_process import worker_environment
    from container_serve.settings import ServeSettings

    env = worker_environment(ServeSettings.from_env({"BYOC_TORCH_THREADS": str(threads)}), jpeg.parent, False)
    out = subprocess.run([sys.executable, "-m", "bench.bench_serve_floor", str(model_dir), str(jpeg), str(threads),
                          str(n), form], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


class OurEndpoint:
    """This project's single-model endpoint with some environment settings, as a bench server."""

    def __init__(self, model_dir: Path, env: dict[str, str]):
        from byoc.local.endpoint import LocalEndpoint

        self.ep = LocalEndpoint(model_root=model_dir, multi_model=False, env=env)

    @property
    def url(self) -> str:
        return self.ep.url + "/invocations"

    def __enter__(self) -> OurEndpoint:
        self.ep.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.ep.__exit__(*exc)


def side_by_side(servers: dict[str, object], body: bytes, rounds: int, requests: dict[int, int],
                 max_seconds: float) -> dict:
    """{label: {c: {"lat": [...], "ok", "sent", "wall_s", "per_round": [req/s...]}}}, interleaved."""
    out = {label: {c: new_tally() for c in CONCURRENCY}
           for label in servers}
    for r in range(rounds):
        for label, server in servers.items():
            for c in CONCURRENCY:
                res = run_load(server.url, body, concurrency=c, requests=requests[c], max_seconds=max_seconds,
                               headers={"Content-Type": ct.JPEG}, warmup=3)
                tally(out[label][c], res)
                print(f"# round {r + 1} {label} c={c}: {res.summary()}", flush=True)
    return out


def summarise(raw: dict) -> dict:
    summary = {}
    for label, levels in raw.items():
        for c, acc in levels.items():
            p50, p99 = _percentiles(acc["lat"]) if acc["lat"] else (float("nan"), float("nan"))
            summary[(label, c)] = {"p50_ms": p50, "p99_ms": p99, "ok": acc["ok"], "sent": acc["sent"],
                                   "req_per_s": acc["ok"] / acc["wall_s"] if acc["wall_s"] else 0.0,
                                   "per_round": acc["per_round"]}
    return summary


def ratios(summary: dict, ours: list[str], theirs: list[str]) -> list[list]:
    """Each of ours against TorchServe's best setting for each figure (lower p50/p99, higher req/s)."""
    rows = []
    for c in CONCURRENCY:
        best_p50 = min(summary[(t, c)]["p50_ms"] for t in theirs)
        best_p99 = min(summary[(t, c)]["p99_ms"] for t in theirs)
        best_rps = max(summary[(t, c)]["req_per_s"] for t in theirs)
        for o in ours:
            s = summary[(o, c)]
            rows.append([o, c, f"{s['p50_ms'] / best_p50:.2f}x", f"{s['p99_ms'] / best_p99:.2f}x",
                         f"{s['req_per_s'] / best_rps:.2f}x"])
    return rows


def run_side_by_side(model_dir: Path, work: Path, body: bytes, ours: list[str], theirs: list[str], rounds: int,
                     requests: dict[int, int], max_seconds: float) -> dict:
    """Start every server, run the interleaved rounds, print the table and the ratios."""
    archive = make_archive(model_dir, work)
    labels = [f"ours {o}" for o in ours] + [f"TorchServe {t}" for t in theirs]
    with ExitStack() as stack:
        servers = {f"ours {o}": stack.enter_context(OurEndpoint(model_dir, parse_env(o))) for o in ours}
        servers.update({f"TorchServe {t}": stack.enter_context(TorchServe(archive, work, t)) for t in theirs})
        summary = summarise(side_by_side(servers, body, rounds, requests, max_seconds))
    print_table(f"Side by side, {rounds} interleaved rounds (p50/p99 over all rounds; req/s = requests / seconds)",
                ["server", "concurrency", "ok/sent", "p50 ms", "p99 ms", "req/s", "req/s per round"],
                [[lb, c, f"{summary[(lb, c)]['ok']}/{summary[(lb, c)]['sent']}", summary[(lb, c)]["p50_ms"],
                  summary[(lb, c)]["p99_ms"], summary[(lb, c)]["req_per_s"],
                  " ".join(str(x) for x in summary[(lb, c)]["per_round"])] for lb in labels for c in CONCURRENCY])
    print_table("Ours / TorchServe's best setting for each figure (p50, p99: lower is better; req/s: higher)",
                ["ours", "concurrency", "p50 ratio", "p99 ratio", "req/s ratio"],
                ratios(summary, [f"ours {o}" for o in ours], [f"TorchServe {t}" for t in theirs]))
    return {f"{k[0]} c={k[1]}": v for k, v in summary.items()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ours", default=f"default|{BEFORE_ENV}",
                   help="'|'-separated endpoint settings, each 'default' or 'VAR=value;VAR=value'")
    p.add_argument("--torchserve", default="default,2x1,1x2", help="TorchServe settings: default or WxT")
    p.add_argument("--rounds", type=int, default=3, help="0: floor and multi-model only")
    p.add_argument("--requests", default="12,24,48", help="requests per round at concurrency 1,4,16")
    p.add_argument("--max-seconds", type=float, default=90, help="time bound per load level and round")
    p.add_argument("--floor-iterations", type=int, default=20)
    p.add_argument("--models", type=int, default=3, help="ResNet50 models to load on the multi-model endpoint")
    p.add_argument("--mme", default="before,after", help="multi-model runs: before, after (or none)")
    p.add_argument("--mme-rounds", type=int, default=1, help="interleaved rounds of the multi-model runs")
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--height", type=int, default=375)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    model_dir = make_artifact(work / "model")
    body = make_jpeg(a.width, a.height)
    jpeg = work / "request.jpg"
    jpeg.write_bytes(body)
    requests = dict(zip(CONCURRENCY, (int(x) for x in a.requests.split(",")), strict=True))
    ours = [s.strip() for s in a.ours.split("|") if s.strip()]
    theirs = [s.strip() for s in a.torchserve.split(",") if s.strip()]
    cores = psutil.cpu_count() or 1
    print(f"# bench_serving: {machine_note()}; ResNet50 (random weights, seed 0), {len(body)} byte "
          f"{a.width}x{a.height} JPEG; ours {ours}; TorchServe {theirs}; {a.rounds} rounds", flush=True)
    results: dict = {"floor": [f for form in ("fp32", "auto") for t in sorted({1, cores})
                               for f in [floor_latency(model_dir, jpeg, t, a.floor_iterations, form)]]}
    print_table("In-process floor: decode + forward + softmax, one request", ["form", "threads", "p50 ms", "p99 ms",
                "decode p50 ms"], [[f["form"], f["threads"], f["p50_ms"], f["p99_ms"], f["decode_p50_ms"]]
                                   for f in results["floor"]])

    if a.rounds > 0:
        results["side_by_side"] = run_side_by_side(model_dir, work, body, ours, theirs, a.rounds, requests,
                                                   a.max_seconds)

    mme = [r.strip() for r in a.mme.split(",") if r.strip() in MME_RUNS]
    if mme:
        results["multi_model"] = run_multi_model(model_dir, body, a.models, mme, a.mme_rounds)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=str))
    return results


if __name__ == "__main__":
    main()
