"""Helpers shared by the bench scripts: demo data, tables, timing."""

from __future__ import annotations

import multiprocessing
import os
import time
from contextlib import contextmanager
from pathlib import Path


def prepare_demo_data(dest: Path, per_class: dict[str, int], size: int, num_classes: int) -> tuple[Path, str]:
    """Fashion-MNIST (real images) when installed, else the generated shapes set. Returns (root, source)."""
    from byoc.datasets.prepare import prepare

    summary = prepare("auto", dest, per_class=per_class, size=size, num_classes=num_classes)
    return Path(summary.root), summary.source


def print_table(title: str, headers: list[str], rows: list[list]) -> str:
    """Print (and return) a GitHub-markdown table."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = [f"### {title}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    text = "\n".join(lines)
    print(text + "\n", flush=True)
    return text


def machine_note() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} (1/5/15 min) at start"


MAX_BACKGROUND_S = 900   # a busy process never outlives this, whatever happens to the bench


def _spin(deadline: float) -> None:
    while time.monotonic() < deadline:
        pass


@contextmanager
def background_load(on: bool, seconds: float):
    """One busy process per core for the block (at most ``seconds``); nothing when ``on`` is false. Real
    instances are never idle: a bench's "loaded" condition is this, the same for every variant."""
    procs = []
    if on:
        deadline = time.monotonic() + min(seconds, MAX_BACKGROUND_S)
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_spin, args=(deadline,), daemon=True) for _ in range(os.cpu_count() or 1)]
        for p in procs:
            p.start()
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.join(10)
