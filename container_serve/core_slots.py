"""Intra-op threads per forward pass: all the cores no other worker is computing on, at least the minimum.

Workers are processes (one per core on a single-model endpoint, one per model on a multi-model one);
with one torch thread each, a lone request uses one core and leaves the rest idle, and with one thread
per core each, concurrent requests ask for more threads than there are cores (measured in
``bench/RESULTS.md`` section 3: both lose). So every worker of one server shares a folder of slot files,
one per core (``BYOC_CORE_SLOTS_DIR``, made by :mod:`container_serve.mms_process`), and before each
forward pass takes as many as it can without waiting (``flock(LOCK_NB)``), starting at a slot of its own
so that two workers arriving together split the cores. It runs that pass with that many threads
(``torch.set_num_threads``), never fewer than ``BYOC_TORCH_THREADS`` nor more than
``BYOC_MAX_TORCH_THREADS``, and releases the slots afterwards. A worker that finds no slot free still runs
its minimum, so a busy server briefly runs one thread more than it has cores instead of queueing.

Only cores the whole host leaves free: the slots know this server's workers, not the OS, log shipping or
another model server on the same instance. Under such load a pass split over two threads waits at every
barrier for the thread whose core is taken (OpenMP's static split): measured on 2 cores at a load of 9-12,
a ResNet50 pass with 2 threads took 1.5-2.1x the wall time of 1 thread and 1.2-1.45x its CPU time
(``bench/RESULTS.md`` section 10a). So before taking more than the minimum it reads the host's runnable
count (``/proc/loadavg``'s fourth field, this process included) and takes at most the cores nothing else
is running on; on an idle host that is all of them, as before.

The locks are advisory, on files in the server's private run folder; nothing a request carries reaches
this module.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SLOT_FILE = "core-{}.lock"
LOADAVG = Path("/proc/loadavg")


def runnable_elsewhere(loadavg: Path = LOADAVG) -> int:
    """Threads runnable on the host right now other than the caller (0 where it cannot be read)."""
    try:
        running = loadavg.read_text().split()[3].split("/")[0]
        return max(0, int(running) - 1)
    except (OSError, IndexError, ValueError):
        return 0


def make_slot_files(folder: Path, cores: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(cores):
        (folder / SLOT_FILE.format(i)).touch()


class CoreSlots:
    def __init__(self, folder: Path | None, minimum: int, maximum: int, loadavg: Path = LOADAVG):
        self.loadavg = loadavg
        self.minimum = max(1, minimum)
        self.maximum = max(self.minimum, maximum)
        self._fds: list[int] = []
        if folder is not None and self.maximum > self.minimum:
            names = sorted(p for p in folder.glob(SLOT_FILE.format("*")) if p.is_file())
            self._fds = [os.open(p, os.O_RDWR | os.O_CLOEXEC) for p in names]
        self._start = os.getpid() % len(self._fds) if self._fds else 0
        self._threads = 0

    @property
    def adaptive(self) -> bool:
        return bool(self._fds)

    def _take(self) -> list[int]:
        taken = []
        n = len(self._fds)
        free = n - runnable_elsewhere(self.loadavg)
        if free <= self.minimum:
            return taken  # the host is busy: the minimum, no slot (a slot held would mislead the others)
        for k in range(n):
            if len(taken) >= min(self.maximum, free):
                break
            fd = self._fds[(self._start + k) % n]
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            taken.append(fd)
        return taken

    def _set(self, threads: int) -> None:
        if threads != self._threads:
            import torch  # here, not at the top: the gate's process imports this module and no torch

            torch.set_num_threads(threads)
            self._threads = threads

    @contextmanager
    def threads(self) -> Iterator[int]:
        """Hold the free cores for one forward pass; yields the thread count it runs with."""
        taken = self._take() if self._fds else []
        threads = min(self.maximum, max(self.minimum, len(taken)))
        self._set(threads)
        try:
            yield threads
        finally:
            for fd in taken:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []
