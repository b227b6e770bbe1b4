"""The serving image (``docker run IMAGE serve``, as SageMaker runs it) against TorchServe 0.12, quiet and
under a background load this bench starts itself, in alternating rounds (issue 27 item 1).

One ResNet50 artifact (random weights, seed 0: :func:`bench.bench_serving.make_artifact`), one 500 x 375
JPEG, POST ``image/jpeg`` to 127.0.0.1 only (:mod:`bench.loadgen`). Servers, all started once and kept
running:

* ``image <settings>`` for each ``--ours`` entry: ``docker run --network host`` of ``--image`` with
  ``/opt/ml/model`` mounted read-only, ``SAGEMAKER_BIND_TO_PORT`` and the entry's ``BYOC_*`` settings
  (``default`` = none, what an endpoint gets);
* ``TorchServe <WxT>`` for each ``--torchserve`` entry (:mod:`bench.bench_serve_torchserve`; its own
  ``image_classifier`` handler, W workers x T OpenMP threads).

Each of ``--rounds`` rounds runs the conditions in turn, ``quiet`` then ``loaded``: ``loaded`` starts one
busy process per core (a spin loop with a deadline, killed at the end of the condition at the latest), so
the load is the same for every server; in each condition every server gets ``--requests`` requests at
concurrency 1 and 16 (3 warm-up requests first). Printed per condition: p50/p99/req/s per server and the
ratios issue 27 asks for against TorchServe's best setting for each figure: c=1 p50, c=16 req/s, c=16 p99.

Then, for the first ``--ours`` entry: top-1 agreement of the image's answers with the float32 network run
in this process on ``--agreement`` varied images (different drawings, sizes and aspect ratios, decoded by
the server's own decoder); and, with ``--models N``, the multi-model image (``SAGEMAKER_MULTI_MODEL=true``)
with the fork server on and off: cold load of N copies (``POST /models``) and memory per model
(the container's cgroup ``memory.current``) -> models per GiB.

    .venv/bin/pip install -e '.[bench]'        # TorchServe 0.12 and its archiver
    .venv/bin/python -m bench.bench_serve_image --rounds 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

from bench.bench_serve_torchserve import TorchServe, free_port, make_archive
from bench.bench_serving import make_artifact, make_jpeg, parse_env, summarise
from bench.common import background_load, machine_note, print_table
from bench.loadgen import new_tally, run_load, tally
from container_serve import content_types as ct

CONDITIONS = ("quiet", "loaded")
LEVELS = (1, 16)
START_TIMEOUT_S = 180


def _http(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None,
          timeout: float = 120) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


class ImageEndpoint:
    """The serving image in docker, as SageMaker runs it (``serve``, host network, /opt/ml mounted)."""

    def __init__(self, image: str, env: dict[str, str], model_dir: Path | None = None,
                 models_dir: Path | None = None):
        self.image, self.env, self.model_dir, self.models_dir = image, env, model_dir, models_dir
        self.port = free_port()
        self.name = f"bench-serve-{uuid.uuid4().hex[:8]}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/invocations"

    def __enter__(self) -> ImageEndpoint:
        cmd = ["docker", "run", "-d", "--rm", "--name", self.name, "--network", "host",
               "--add-host", "algo-1:127.0.0.1", "-e", f"SAGEMAKER_BIND_TO_PORT={self.port}"]
        for k, v in self.env.items():
            cmd += ["-e", f"{k}={v}"]
        if self.model_dir is not None:
            cmd += ["-v", f"{self.model_dir}:/opt/ml/model:ro"]
        if self.models_dir is not None:
            cmd += ["-e", "SAGEMAKER_MULTI_MODEL=true", "-v", f"{self.models_dir}:/opt/ml/models:ro"]
        subprocess.run([*cmd, self.image, "serve"], check=True, capture_output=True, timeout=120)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if _http(self.port, "GET", "/ping", timeout=5)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(1)
        logs = subprocess.run(["docker", "logs", "--tail", "40", self.name], capture_output=True, text=True)
        self.__exit__()
        raise TimeoutError(f"{self.image} did not answer /ping in {START_TIMEOUT_S}s:\n{logs.stdout}{logs.stderr}")

    def memory_mib(self) -> float:
        """The container's cgroup memory (``memory.current``, cgroup v2; v1 ``memory.usage_in_bytes``)."""
        out = subprocess.run(["docker", "exec", self.name, "sh", "-c",
                              "cat /sys/fs/cgroup/memory.current 2>/dev/null || "
                              "cat /sys/fs/cgroup/memory/memory.usage_in_bytes"],
                             capture_output=True, text=True, timeout=30, check=True)
        return int(out.stdout.split()[0]) / 2**20

    def __exit__(self, *exc) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, timeout=60)


def alternating_rounds(servers: dict, body: bytes, rounds: int, requests: dict[int, int],
                       max_seconds: float) -> dict:
    """{condition: {label: {c: acc}}}: every round runs quiet then loaded, every server in each (the
    servers' order rotated by one each round)."""
    raw = {cond: {lb: {c: new_tally() for c in LEVELS}
                  for lb in servers} for cond in CONDITIONS}
    budget = len(servers) * len(LEVELS) * (max_seconds + 30)
    for r in range(rounds):
        for cond in CONDITIONS:
            with background_load(cond == "loaded", budget):
                load = os.getloadavg()[0]
                items = list(servers.items())
                k = r % len(items)  # rotate who goes first each round: a burst of outside load hits all alike
                for label, server in items[k:] + items[:k]:
                    for c in LEVELS:
                        res = run_load(server.url, body, concurrency=c, requests=requests[c],
                                       max_seconds=max_seconds, headers={"Content-Type": ct.JPEG}, warmup=3)
                        tally(raw[cond][label][c], res)
                        print(f"# round {r + 1} {cond} (load {load:.1f}) {label} c={c}: {res.summary()}", flush=True)
    return raw


def ratio_rows(summary: dict, ours: list[str], theirs: list[str]) -> list[list]:
    best_p50 = min(summary[(t, 1)]["p50_ms"] for t in theirs)
    best_rps = max(summary[(t, 16)]["req_per_s"] for t in theirs)
    best_p99 = min(summary[(t, 16)]["p99_ms"] for t in theirs)
    return [[o, f"{summary[(o, 1)]['p50_ms'] / best_p50:.2f}x", f"{summary[(o, 16)]['req_per_s'] / best_rps:.2f}x",
             f"{summary[(o, 16)]['p99_ms'] / best_p99:.2f}x"] for o in ours]


def varied_jpegs(n: int) -> list[bytes]:
    """``n`` different drawings at different sizes and aspect ratios (seeded)."""
    import io

    from byoc.datasets.synthetic import draw_example

    rng, out = random.Random(27), []
    for i in range(n):
        img = draw_example(i % 10, 10, rng, size=rng.choice((96, 160, 256, 400)))
        w, h = rng.randint(120, 640), rng.randint(120, 640)
        buf = io.BytesIO()
        img.resize((w, h)).save(buf, format="JPEG", quality=rng.randint(70, 95))
        out.append(buf.getvalue())
    return out


def agreement(port: int, model_dir: Path, jpegs: list[bytes]) -> float:
    """Share of images whose top-1 from the server equals the float32 network's (this process)."""
    import torch

    from byoc_common.artifact import load_network, read_model_metadata
    from container_serve.decoding import ImageDecoder

    config, _ = read_model_metadata(model_dir)
    net, decoder, same = load_network(model_dir, config).eval(), ImageDecoder(config), 0
    for body in jpegs:
        status, answer = _http(port, "POST", "/invocations", body, {"Content-Type": ct.JPEG, "Accept": ct.JSON})
        if status != 200:
            raise RuntimeError(f"agreement image: {status} {answer[:200]!r}")
        with torch.inference_mode():
            expected = int(net(torch.stack(decoder.decode(body, ct.JPEG))).argmax(1)[0])
        same += json.loads(answer)["predictions"][0]["index"] == expected
    return same / len(jpegs)


def multi_model(image: str, model_dir: Path, work: Path, body: bytes, n: int, fork_server: bool) -> dict:
    models = work / f"models-{fork_server}"
    for i in range(n):
        shutil.copytree(model_dir, models / f"resnet50-{i}", dirs_exist_ok=True)
    env = {"BYOC_FORK_SERVER": str(fork_server).lower()}
    with ImageEndpoint(image, env, models_dir=models) as ep:
        time.sleep(2)
        before, loads, mem = ep.memory_mib(), [], []
        for i in range(n):
            name = f"resnet50-{i}"
            t0 = time.perf_counter()
            status, answer = _http(ep.port, "POST", "/models", json.dumps(
                {"model_name": name, "url": f"/opt/ml/models/{name}"}).encode(), {"Content-Type": ct.JSON}, 600)
            loads.append(time.perf_counter() - t0)
            inv, _ = _http(ep.port, "POST", f"/models/{name}/invoke", body, {"Content-Type": ct.JPEG})
            if status != 200 or inv != 200:
                raise RuntimeError(f"loading {name}: {status} {answer[:300]!r}; invoke {inv}")
            time.sleep(1)
            mem.append(ep.memory_mib())
    per_model = (mem[-1] - before) / n
    return {"fork_server": fork_server, "load_s": loads, "idle_mib": before, "per_model_mib": per_model,
            "models_per_gib": 1024 / per_model if per_model > 0 else None}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", default="byoc-serve:latest")
    p.add_argument("--ours", default="default|BYOC_MODEL_FORM=fp32",
                   help="'|'-separated image settings, each 'default' or 'VAR=value;VAR=value'")
    p.add_argument("--torchserve", default="2x1,1x2", help="TorchServe settings WxT (best one per figure counts)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", default="16,64", help="requests per round and condition at concurrency 1,16")
    p.add_argument("--max-seconds", type=float, default=90, help="time bound per load level, round, condition")
    p.add_argument("--agreement", type=int, default=200, help="varied images for top-1 agreement (0: skip)")
    p.add_argument("--models", type=int, default=3, help="multi-model: ResNet50 copies (0: skip)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-image-"))
    model_dir = make_artifact(work / "model")
    os.chmod(work, 0o755)
    body = make_jpeg(500, 375)
    requests = dict(zip(LEVELS, (int(x) for x in a.requests.split(",")), strict=True))
    ours = [s.strip() for s in a.ours.split("|") if s.strip()]
    theirs = [s.strip() for s in a.torchserve.split(",") if s.strip()]
    print(f"# bench_serve_image: {machine_note()}; image {a.image}; ours {ours}; TorchServe {theirs}; "
          f"{a.rounds} rounds x {CONDITIONS}, background = {os.cpu_count()} busy processes", flush=True)
    results: dict = {}
    if a.rounds > 0:
        archive = make_archive(model_dir, work)
        with ExitStack() as stack:
            servers = {f"image {o}": stack.enter_context(ImageEndpoint(a.image, parse_env(o), model_dir))
                       for o in ours}
            servers.update({f"TorchServe {t}": stack.enter_context(TorchServe(archive, work, t)) for t in theirs})
            raw = alternating_rounds(servers, body, a.rounds, requests, a.max_seconds)
            if a.agreement:
                results["top1_agreement"] = agreement(servers[f"image {ours[0]}"].port, model_dir,
                                                      varied_jpegs(a.agreement))
        for cond in CONDITIONS:
            summary = summarise(raw[cond])
            results[cond] = {f"{k[0]} c={k[1]}": v for k, v in summary.items()}
            print_table(f"{cond}: {a.rounds} rounds", ["server", "c", "ok/sent", "p50 ms", "p99 ms", "req/s",
                        "req/s per round"], [[lb, c, f"{summary[(lb, c)]['ok']}/{summary[(lb, c)]['sent']}",
                                              summary[(lb, c)]["p50_ms"], summary[(lb, c)]["p99_ms"],
                                              summary[(lb, c)]["req_per_s"],
                                              " ".join(map(str, summary[(lb, c)]["per_round"]))]
                                             for lb in servers for c in LEVELS])
            print_table(f"{cond}: image / TorchServe's best (targets: c=1 p50 <= 0.8x, c=16 req/s >= 1.5x, "
                        "c=16 p99 <= 1x)", ["image", "c=1 p50", "c=16 req/s", "c=16 p99"],
                        ratio_rows(summary, [f"image {o}" for o in ours], [f"TorchServe {t}" for t in theirs]))
        if "top1_agreement" in results:
            print(f"top-1 agreement of image {ours[0]} with the float32 network on {a.agreement} varied images: "
                  f"{results['top1_agreement']:.3f}")
    if a.models:
        mm = [multi_model(a.image, model_dir, work, body, a.models, fork) for fork in (False, True)]
        results["multi_model"] = mm
        print_table(f"Multi-model image, {a.models} ResNet50 (container memory.current)",
                    ["fork server", "cold load s (each)", "idle MiB", "+MiB/model", "models per GiB"],
                    [[m["fork_server"], " ".join(f"{x:.2f}" for x in m["load_s"]), f"{m['idle_mib']:.0f}",
                      f"{m['per_model_mib']:.0f}", f"{m['models_per_gib'] or 0:.2f}"] for m in mm])
        off, on = mm
        if off["models_per_gib"] and on["models_per_gib"]:
            print(f"fork server on / off: models per GiB {on['models_per_gib'] / off['models_per_gib']:.2f}x, "
                  f"cold load {statistics.fmean(on['load_s']) / statistics.fmean(off['load_s']):.2f}x")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=str))
    shutil.rmtree(work, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
