"""Data-parallel scaling on this machine: 1 vs 2 ranks (Gloo on 127.0.0.1, one thread each).

For each workload the script runs the trainer's own step (:func:`container_train.engine.train_one_epoch`
on a DDP-wrapped module, as ``container_train.train`` does in a distributed job) on synthetic batches,
so the figures are compute and communication, not JPEG decoding:

* ``full``: ResNet18 fine-tuned end to end (``freeze=none``), per-rank batch ``--batch``;
* ``head``: the ``freeze=head`` path: the linear head on cached 512-d backbone features.

Reported per workload: images/s with 1 and 2 ranks, scaling efficiency = ips(2) / (2 x ips(1)), the
share of the 2-rank step spent in gradient all-reduce two ways: *busy* (a DDP communication hook times
each bucket's all-reduce from launch to completion, summed; it overlaps the backward pass) and
*exposed* (step time with all-reduce minus step time under ``no_sync()``, over the step time).

``--variants`` (issue 27 item 2) runs the ``full`` workload's 2 ranks once per
:class:`container_train.distributed.DdpOptions` variant, all against the same 1-rank run, and prints their
efficiencies side by side: ``default``, ``bucket=MB``, ``view`` (gradient_as_bucket_view), ``bf16`` /
``fp16`` (compression hooks), joined with ``+`` (``bf16+view+bucket=5``). Their training answers are
checked in ``tests/bench/test_bench_ddp_variants.py``.

    .venv/bin/python -m bench.bench_ddp_scaling --steps 12 --batch 16 --image-size 64
    .venv/bin/python -m bench.bench_ddp_scaling --variants default,bucket=5,bucket=100,view,bf16,fp16+view --rounds 3
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from bench.common import machine_note, print_table

IMAGES_PER_S, BUSY, EXPOSED = "images/s", "busy", "exposed"


def _model(kind: str) -> nn.Module:
    from byoc_common.architectures import build_classifier

    torch.manual_seed(0)
    return build_classifier("resnet18", 10) if kind == "full" else nn.Linear(512, 10)


def _batch(kind: str, batch: int, size: int, step: int):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(batch, 3, size, size, generator=g) if kind == "full" else torch.randn(batch, 512, generator=g)
    return x, torch.randint(0, 10, (batch,), generator=g)


def parse_variant(spec: str):
    """``"bf16+view+bucket=5"`` -> DdpOptions(compression="bf16", gradient_as_bucket_view=True, bucket_cap_mb=5)."""
    from container_train.distributed import DdpOptions

    kw: dict = {}
    for part in (x.strip() for x in spec.split("+") if x.strip() and x.strip() != "default"):
        if part == "view":
            kw["gradient_as_bucket_view"] = True
        elif part.startswith("bucket="):
            kw["bucket_cap_mb"] = float(part.split("=", 1)[1])
        else:
            kw["compression"] = part
    return DdpOptions(**kw)


def _timed_allreduce(state, bucket):
    """The variant's all-reduce (DDP's own, or a compression hook), timed from launch to completion."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    from container_train.distributed import compression_hook

    hook = compression_hook(state["compression"]) or default_hooks.allreduce_hook
    start = time.perf_counter()
    fut = hook(dist.group.WORLD if hook is not default_hooks.allreduce_hook else None, bucket)

    def done(f):
        state["busy_s"] += time.perf_counter() - start
        return f.value()

    return fut.then(done)


def _steps(module, kind, args, sync: bool) -> float:
    """Seconds for ``args.steps`` optimizer steps after 2 warm-up steps."""
    from contextlib import nullcontext

    opt = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    module.train()
    start = 0.0
    for step in range(args.steps + 2):
        if step == 2:
            start = time.perf_counter()
        x, y = _batch(kind, args.batch, args.image_size, step)
        context = nullcontext() if sync or not hasattr(module, "no_sync") else module.no_sync()
        with context:
            loss = loss_fn(module(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
    return time.perf_counter() - start


def _worker(rank: int, world: int, port: int, kind: str, args, out, variant: str = "default"):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    module = _model(kind)
    options = parse_variant(variant)
    state = {"busy_s": 0.0, "compression": options.compression}
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        dist.init_process_group("gloo", rank=rank, world_size=world)
        module = DistributedDataParallel(module, bucket_cap_mb=options.bucket_cap_mb,
                                         gradient_as_bucket_view=options.gradient_as_bucket_view)
        module.register_comm_hook(state, _timed_allreduce)  # the variant's hook, timed
    seconds = _steps(module, kind, args, sync=True)
    busy = state["busy_s"]
    unsynced = _steps(module, kind, args, sync=False) if world > 1 else seconds
    if world > 1:
        dist.destroy_process_group()
    if rank == 0:
        out.put({"seconds": seconds, "busy_s": busy, "nosync_s": unsynced})


def measure(kind: str, world: int, args, port: int, variant: str = "default") -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, world, port, kind, args, out, variant)) for r in range(world)]
    for p in procs:
        p.start()
    result = out.get(timeout=1800)
    for p in procs:
        p.join()
    images = args.steps * args.batch * world
    result[IMAGES_PER_S] = images / result["seconds"]
    result[BUSY] = result["busy_s"] / result["seconds"]
    result[EXPOSED] = max(0.0, result["seconds"] - result["nosync_s"]) / result["seconds"]
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch", type=int, default=16, help="per-rank batch (global = batch x ranks)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--port", type=int, default=29631)
    p.add_argument("--variants", default="", help="comma-separated DDP variants of the full workload (see above)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the variants (order reversed every other)")
    args = p.parse_args(argv)
    print(machine_note(), flush=True)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants:  # the two workloads, as before
        rows = []
        for i, kind in enumerate(("full", "head")):
            one = measure(kind, 1, args, args.port + 2 * i)
            two = measure(kind, 2, args, args.port + 2 * i + 1)
            rows.append([kind, one[IMAGES_PER_S], two[IMAGES_PER_S], two[IMAGES_PER_S] / (2 * one[IMAGES_PER_S]),
                         two["seconds"] / args.steps, 100 * two[BUSY], 100 * two[EXPOSED]])
        print_table(f"DDP scaling, 1 vs 2 ranks x 1 thread (batch {args.batch}/rank, {args.image_size} px, "
                    f"{args.steps} steps)",
                    ["workload", "1 rank img/s", "2 ranks img/s", "efficiency", "2-rank step s",
                     "all-reduce busy %", "all-reduce exposed %"], rows)
    else:
        for v in variants:
            parse_variant(v)  # refuse a typo before an hour of runs
        runs: dict[str, list] = {v: [] for v in variants}
        for r in range(args.rounds):  # interleaved: a change in the machine's load hits every variant
            one = measure("full", 1, args, args.port + 10)
            order = variants if r % 2 == 0 else variants[::-1]
            for i, v in enumerate(order):
                two = measure("full", 2, args, args.port + 11 + i, v)
                runs[v].append((two[IMAGES_PER_S] / (2 * one[IMAGES_PER_S]), one[IMAGES_PER_S], two))
                print(f"# round {r + 1} {v}: efficiency {runs[v][-1][0]:.3f}", flush=True)
        rows = []
        for v, rs in runs.items():
            effs = sorted(e for e, _, _ in rs)
            e, one_ips, two = sorted(rs, key=lambda x: x[0])[len(rs) // 2]   # the median round's figures
            rows.append([v, one_ips, two[IMAGES_PER_S], e, " ".join(f"{x:.3f}" for x in effs),
                         100 * two[BUSY], 100 * two[EXPOSED]])
        print_table(f"DDP variants, full fine-tuning, 2 ranks vs 1 rank, median of {args.rounds} interleaved rounds "
                    "(target efficiency >= 0.85)", ["variant", "1 rank img/s", "2 ranks img/s", "efficiency",
                    "efficiency per round", "all-reduce busy %", "all-reduce exposed %"], rows)
    print(machine_note().replace("at start", "at end"))


if __name__ == "__main__":
    main()
