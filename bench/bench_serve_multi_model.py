"""The multi-model part of ``bench.bench_serving``: models per GiB and cold load, fork server off and on.

A multi-model endpoint (``byoc.local.endpoint.LocalEndpoint``, process mode: the gate, MMS, our handler)
per run in ``MME_RUNS``: ``before`` = the defaults with ``BYOC_FORK_SERVER=false`` (every model's MMS
backend worker a fresh python that imports torch itself), ``after`` = the defaults (workers forked from
the fork server, :mod:`container_serve.fork_server`). ``rounds`` pairs run interleaved (before, after,
before, after, ...) so a change in the machine's load hits both alike. In each run ``models`` copies of
the artifact are loaded one by one with ``POST /models``: cold load = the POST (it returns once the
worker has loaded and warmed the model), then the first invoke; memory is summed over the server's
process tree (psutil RSS, PSS, USS) idle and after each load. Models per GiB = 1024 / the mean PSS
increment per loaded model; "total" = the tree's PSS with every model loaded, idle part included (the
fork server's torch is there before the first model is).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import psutil

from bench.common import print_table
from container_serve import content_types as ct

MME_RUNS = {"before": {"BYOC_FORK_SERVER": "false"}, "after": {}}


def tree_memory(pid: int) -> dict:
    """RSS, PSS and USS (MiB) summed over a process and its descendants."""
    total = {"rss": 0, "pss": 0, "uss": 0}
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {"rss_mib": 0.0, "pss_mib": 0.0, "uss_mib": 0.0, "procs": 0}
    for p in procs:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for k in total:
            total[k] += getattr(info, k)
    return {**{f"{k}_mib": v / 2**20 for k, v in total.items()}, "procs": len(procs)}


def multi_model_memory(model_dir: Path, body: bytes, n_models: int, env: dict[str, str]) -> dict:
    from byoc.local.endpoint import LocalEndpoint

    out = {"loads": []}
    with tempfile.TemporaryDirectory(prefix="bench-mme-") as root, \
            LocalEndpoint(model_root=root, multi_model=True, env=env) as ep:
        time.sleep(2)
        out["idle"] = tree_memory(ep._proc.pid)
        for i in range(n_models):
            name = f"resnet50-{i}"
            ep.deploy(name, model_dir)
            t0 = time.perf_counter()
            reply = ep.client.load_model(name, ep.model_url(name))
            status, body_json = reply.status, reply.json()
            t1 = time.perf_counter()
            inv_status, _, _ = ep.client.invoke(body, ct.JPEG, target_model=name)
            t2 = time.perf_counter()
            if status != 200 or inv_status != 200:
                raise RuntimeError(f"loading {name}: {status} {body_json}; invoke {inv_status}")
            time.sleep(1)
            mem = tree_memory(ep._proc.pid)
            out["loads"].append({"model": name, "load_s": t1 - t0, "first_invoke_s": t2 - t1, **mem})
            print(f"# loaded {name}: {out['loads'][-1]}", flush=True)
    steps = list(zip([out["idle"], *out["loads"][:-1]], out["loads"], strict=True))
    for key in ("rss", "pss", "uss"):
        out[f"per_model_{key}_mib"] = statistics.fmean(b[f"{key}_mib"] - a[f"{key}_mib"] for a, b in steps)
    out["models_per_gib"] = 1024 / out["per_model_pss_mib"] if out["per_model_pss_mib"] > 0 else None
    out["load_s_mean"] = statistics.fmean(ld["load_s"] for ld in out["loads"])
    return out


def _env_label(env: dict[str, str]) -> str:
    return ";".join(f"{k}={v}" for k, v in env.items()) or "default"


def run_multi_model(model_dir: Path, body: bytes, n_models: int, runs: list[str], rounds: int) -> dict:
    """Every run in ``runs`` (keys of MME_RUNS), ``rounds`` times interleaved; prints the tables."""
    results: dict[str, list[dict]] = {run: [] for run in runs}
    for r in range(rounds):
        for run in runs:
            print(f"# multi-model round {r + 1}: {run} ({_env_label(MME_RUNS[run])})", flush=True)
            results[run].append(multi_model_memory(model_dir, body, n_models, MME_RUNS[run]))
    rows = [[run, r + 1, _env_label(MME_RUNS[run]), " ".join(f"{ld['load_s']:.2f}" for ld in m["loads"]),
             f"{statistics.fmean(ld['first_invoke_s'] for ld in m['loads']) * 1e3:.0f}",
             f"{m['idle']['pss_mib']:.0f}", f"{m['per_model_rss_mib']:.0f}", f"{m['per_model_pss_mib']:.0f}",
             f"{m['per_model_uss_mib']:.0f}", f"{m['loads'][-1]['pss_mib']:.0f}", f"{m['models_per_gib']:.2f}"]
            for run in runs for r, m in enumerate(results[run])]
    print_table(f"Multi-model endpoint: {n_models} ResNet50 loaded one by one (POST /models), per run",
                ["run", "round", "settings", "cold load s (each)", "first invoke ms", "idle PSS MiB", "RSS +MiB/model",
                 "PSS +MiB/model", "USS +MiB/model", f"total PSS MiB at {n_models}", "models per GiB (PSS)"], rows)
    summary = {run: {"models_per_gib": statistics.fmean(m["models_per_gib"] for m in ms),
                     "load_s": statistics.fmean(m["load_s_mean"] for m in ms)} for run, ms in results.items()}
    if "before" in summary and "after" in summary:
        b, a = summary["before"], summary["after"]
        print_table("After / before (means over rounds)", ["figure", "before", "after", "after / before"],
                    [["models per GiB (PSS)", f"{b['models_per_gib']:.2f}", f"{a['models_per_gib']:.2f}",
                      f"{a['models_per_gib'] / b['models_per_gib']:.2f}x"],
                     ["cold load s (mean)", f"{b['load_s']:.2f}", f"{a['load_s']:.2f}",
                      f"{a['load_s'] / b['load_s']:.2f}x"]])
    return {"runs": results, "summary": summary}
