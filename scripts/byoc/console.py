"""The console of ``byoc`` and its progress bars: rich bars on a terminal, plain lines in logs
(progress on stderr, answers and messages on stdout)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

# Wide enough for the summary table's paths when output goes to a file or a CI log.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
# Progress goes to stderr, so a command's answer on stdout (the JSON of `byoc train`, `byoc tune`,
# `byoc invoke`) can be piped into jq or a file untouched.
progress_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)


@contextmanager
def progress_bar(description: str, total: int | None = None, unit: str = "items"
                 ) -> Iterator[Callable[[int, int | None], None]]:
    """``with progress_bar("download", unit="bytes") as update: update(done, total)``."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn()]
    if unit == "bytes":
        columns += [DownloadColumn(), TransferSpeedColumn()]
    else:
        columns += [MofNCompleteColumn()]
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    if not progress_console.is_terminal:
        # Logs and CI: one plain line whenever the count moves (never for byte counters).
        last = [-1]

        def log_line(done: int, new_total: int | None = None) -> None:
            if unit != "bytes" and done != last[0]:
                last[0] = done
                progress_console.print(f"{description}: {done}/{new_total if new_total is not None else total or '?'}")

        yield log_line
        return
    with Progress(*columns, console=progress_console, transient=False) as prog:
        task = prog.add_task(description, total=total)

        def update(done: int, new_total: int | None = None) -> None:
            prog.update(task, completed=done, total=new_total if new_total is not None else total)

        yield update
