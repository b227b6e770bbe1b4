"""Profiling records for the profiler report: per-step timings and periodic system samples.

Both are JSON lines under ``SM_OUTPUT_DATA_DIR`` (file names and record fields are defined in
:mod:`container_train.contract`):

* :class:`StepTimings` -> ``profiler/step_timings.jsonl``: for every training/evaluation step,
  how long the loop waited for the DataLoader (``data_wait_s``) and how long the forward/backward
  pass took (``compute_s``; on a GPU measured after ``cuda.synchronize``).
* :class:`SystemSampler` -> ``profiler/system_metrics.jsonl``: a background thread sampling CPU
  (total and per core), memory, this job's resident memory (trainer + DataLoader workers) and,
  when present, each GPU's utilisation and memory via ``nvidia-smi``. The interval adapts to the
  job's length (:func:`sample_interval`): every 0.25 s at first, so even a 10-second job has a
  real utilisation curve, growing to every 10 s for long jobs, which keeps the file small.
* :class:`Phases` -> ``profiler/phases.jsonl``: wall time by phase of the job (``contract.PHASES``:
  start-up, data preparation, model setup, feature extraction, training, validation, checkpoint,
  test, artifact save), one record per timed interval.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import torch

from container_train.contract import PHASES, PHASES_FILE, STEP_TIMINGS_FILE, SYSTEM_METRICS_FILE

MIN_SAMPLE_INTERVAL_S = 0.25
MAX_SAMPLE_INTERVAL_S = 10.0
INTERVAL_GROWTH = 1 / 120          # the interval is elapsed/120 s between those bounds


class _JsonLines:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", buffering=1)   # line-buffered: readable while the job runs
        self._lock = threading.Lock()

    def write(self, record: dict) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        with self._lock:
            self._file.close()


class StepTimings:
    """Usage per step: ``t.data_ready()`` after the batch arrives, ``t.step_done(...)`` after compute."""

    def __init__(self, output_data_dir: Path):
        self._out = _JsonLines(output_data_dir / STEP_TIMINGS_FILE)
        self._sync = torch.cuda.is_available()
        self._start = time.perf_counter()
        self._ready = self._start

    def start(self) -> None:
        """Call before asking the loader for the next batch."""
        self._start = time.perf_counter()

    def data_ready(self) -> None:
        self._ready = time.perf_counter()

    def step_done(self, epoch: int, step: int, mode: str, batch_size: int) -> dict:
        if self._sync:
            torch.cuda.synchronize()
        end = time.perf_counter()
        record = {
            "ts": time.time(), "epoch": epoch, "step": step, "mode": mode, "batch_size": batch_size,
            "data_wait_s": round(self._ready - self._start, 6),
            "compute_s": round(end - self._ready, 6),
            "step_s": round(end - self._start, 6),
        }
        self._out.write(record)
        self._start = end
        return record

    def close(self) -> None:
        self._out.close()


def _gpu_samples() -> list[dict]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used,memory.total",
             "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        try:
            index, util, used, total = (x.strip() for x in line.split(","))
            gpus.append({"index": int(index), "util_percent": float(util),
                         "mem_used_mb": float(used), "mem_total_mb": float(total)})
        except ValueError:
            continue
    return gpus


class ProcessTree:
    """The job's own processes (this one and its loader workers). :meth:`cpu_percent` is the CPU time
    they used since the last reading as a share of the whole machine (``cpu_percent``'s 0-100 scale),
    so the report can set the job's CPU beside the machine's: on a shared host the machine can be
    busy with other work while the job waits (issue 25)."""

    def __init__(self, root: psutil.Process):
        self.root = root
        self._known: dict[int, psutil.Process] = {}     # psutil keeps each process's last reading

    def cpu_percent(self) -> float:
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            processes = [self.root]
        total, seen = 0.0, {}
        for p in processes:
            p = self._known.get(p.pid, p)
            try:
                total += p.cpu_percent(interval=None)     # 0.0 at a process's first reading
            except psutil.Error:
                continue
            seen[p.pid] = p
        self._known = seen
        return round(total / (psutil.cpu_count() or 1), 1)


def sample_system(process: psutil.Process, tree: ProcessTree | None = None) -> dict:
    mem = psutil.virtual_memory()
    rss = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            rss += p.memory_info().rss
        except psutil.Error:
            pass
    return {
        "ts": time.time(),
        "cpu_percent": psutil.cpu_percent(interval=None),
        "cpu_per_core": psutil.cpu_percent(interval=None, percpu=True),
        "mem_percent": mem.percent,
        "mem_used_mb": round(mem.used / 2**20, 1),
        "proc_rss_mb": round(rss / 2**20, 1),
        "proc_cpu_percent": (tree or ProcessTree(process)).cpu_percent(),
        "gpu": _gpu_samples(),
    }


def sample_interval(elapsed_s: float) -> float:
    """Seconds to the next system sample after ``elapsed_s`` seconds of sampling: 0.25 s for the
    first 30 s, then elapsed/120 (so any job up to 20 minutes has at least ~120 samples), at most 10 s."""
    return min(MAX_SAMPLE_INTERVAL_S, max(MIN_SAMPLE_INTERVAL_S, elapsed_s * INTERVAL_GROWTH))


class SystemSampler:
    """Background thread writing system samples at :func:`sample_interval` (``interval_s`` fixes it)."""

    def __init__(self, output_data_dir: Path, interval_s: float | None = None):
        self._out = _JsonLines(output_data_dir / SYSTEM_METRICS_FILE)
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="system-sampler", daemon=True)
        self._process = psutil.Process()
        self._tree = ProcessTree(self._process)

    def __enter__(self) -> SystemSampler:
        psutil.cpu_percent(interval=None)                 # prime: the first reading is since this call
        psutil.cpu_percent(interval=None, percpu=True)
        self._tree.cpu_percent()
        self._thread.start()
        return self

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.wait(self._interval or sample_interval(time.monotonic() - start)):
            self._out.write(sample_system(self._process, self._tree))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._out.write(sample_system(self._process, self._tree))     # always at least one sample
        self._out.close()


class Phases:
    """Wall time by phase: ``with phases.phase("training", epoch=3): ...`` writes one record
    ``{"phase", "start", "seconds", **fields}`` when the block ends (also when it raises).

    A record made inside an open block (``waiting`` for another process's cache lock, inside
    ``feature extraction``) is taken out of that block's seconds, so every second of the job is in
    exactly one phase and the records still sum to its wall time."""

    def __init__(self, output_data_dir: Path):
        self._out = _JsonLines(output_data_dir / PHASES_FILE)
        self._inside: list[float] = []       # seconds recorded inside each open block, innermost last

    def record(self, name: str, start: float, seconds: float, **fields) -> None:
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}; phases: {', '.join(PHASES)}")
        self._out.write({"phase": name, "start": round(start, 3), "seconds": round(seconds, 4), **fields})
        if self._inside:
            self._inside[-1] += seconds

    @contextmanager
    def phase(self, name: str, **fields) -> Iterator[None]:
        start, began = time.time(), time.perf_counter()
        self._inside.append(0.0)
        try:
            yield
        finally:
            inside = self._inside.pop()
            self.record(name, start, max(0.0, time.perf_counter() - began - inside), **fields)

    def close(self) -> None:
        self._out.close()
