"""Helpers shared by the bench scripts: demo data, tables, timing."""

from __future__ import annotations

import os
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
