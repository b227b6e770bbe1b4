"""Where a served ResNet50 pass spends its CPU, per form, layout and thread count, side by side (issue 27).

CPU time (``time.process_time``, all threads of this process) per forward pass of one 224 px image, for
the float32 network and the bf16 served form (BatchNorm folded), each in NCHW (torch's default layout)
and channels_last (NHWC, what :mod:`container_serve.model_form` serves since issue 27), with 1 and 2
intra-op threads, in interleaved rounds. CPU time, not wall time, because this machine is shared:
other processes stretch the wall clock but not the CPU a pass needs; the 2-thread rows show what a
split pass costs in CPU (barrier waits), the wall column what it costs when a core is taken. With
``--onednn`` it also prints the oneDNN primitive time per kind for each form/layout at 1 thread
(``ONEDNN_VERBOSE``, in a child process): the reorders NCHW costs.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m bench.bench_serve_profile --rounds 3 --onednn
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import time
from collections import defaultdict

import torch
import torchvision

from bench.common import machine_note, print_table

CL = torch.channels_last


def variants() -> dict:
    from container_serve.model_form import fold_batchnorm

    torch.manual_seed(0)
    net = torchvision.models.resnet50(num_classes=133).eval()
    bf16 = fold_batchnorm(copy.deepcopy(net)).to(torch.bfloat16)
    return {
        "fp32 NCHW": (net, lambda t: t),
        "fp32 NHWC": (copy.deepcopy(net).to(memory_format=CL), lambda t: t.contiguous(memory_format=CL)),
        "bf16 NCHW": (bf16, lambda t: t.bfloat16()),
        "bf16 NHWC": (copy.deepcopy(bf16).to(memory_format=CL), lambda t: t.bfloat16().contiguous(memory_format=CL)),
    }


def onednn_breakdown(name: str) -> dict[str, float]:
    """ms per pass by oneDNN primitive kind (reorder / convolution / ...) at 1 thread, from ONEDNN_VERBOSE."""
    code = ("import torch; from bench.bench_serve_profile import variants; torch.set_num_threads(1); "
            f"m, f = variants()[{name!r}]; x = torch.randn(1, 3, 224, 224)\n"
            "with torch.inference_mode():\n m(f(x)); print('MARK', flush=True); m(f(x))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "ONEDNN_VERBOSE": "1"},
                         capture_output=True, text=True, check=True).stdout
    per_kind: dict[str, float] = defaultdict(float)
    for line in out.split("MARK", 1)[1].splitlines():
        parts = line.split(",")
        if len(parts) > 5 and parts[3] == "exec":
            per_kind[parts[5]] += float(parts[-1])
    return per_kind


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--passes", type=int, default=5, help="timed passes per variant, round and thread count")
    p.add_argument("--onednn", action="store_true")
    a = p.parse_args(argv)
    print(f"# bench_serve_profile: {machine_note()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}",
          flush=True)
    vs, x = variants(), torch.randn(1, 3, 224, 224)
    cpu, wall = defaultdict(list), defaultdict(list)
    with torch.inference_mode():
        for _ in range(a.rounds):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                for name, (m, f) in vs.items():
                    m(f(x))
                    c0, w0 = time.process_time(), time.perf_counter()
                    for _ in range(a.passes):
                        m(f(x))
                    cpu[(name, threads)].append((time.process_time() - c0) / a.passes * 1e3)
                    wall[(name, threads)].append((time.perf_counter() - w0) / a.passes * 1e3)
    base = sorted(cpu[("fp32 NCHW", 1)])[len(cpu[("fp32 NCHW", 1)]) // 2]
    rows = []
    for (name, threads), cs in cpu.items():
        c, w = sorted(cs)[len(cs) // 2], sorted(wall[(name, threads)])[len(cs) // 2]
        rows.append([name, threads, f"{c:.0f}", f"{w:.0f}", f"{base / c:.2f}x"])
    print_table(f"CPU ms per pass (median of {a.rounds} rounds x {a.passes} passes)",
                ["variant", "threads", "CPU ms", "wall ms", "CPU vs fp32 NCHW 1 thread"], rows)
    if a.onednn:
        kinds = {name: onednn_breakdown(name) for name in vs}
        names = sorted({k for d in kinds.values() for k in d})
        print_table("oneDNN primitive ms per pass at 1 thread (ONEDNN_VERBOSE; second pass)",
                    ["variant", *names, "reorder share"],
                    [[n, *(f"{d.get(k, 0.0):.1f}" for k in names),
                      f"{d.get('reorder', 0.0) / max(sum(d.values()), 1e-9):.0%}"] for n, d in kinds.items()])
    print(f"# {machine_note().replace('at start', 'at end')}")


if __name__ == "__main__":
    main()
