"""How DataLoader workers hand batches to the trainer without hanging it.

A worker process passes every batch through shared memory (``/dev/shm``). Docker gives a container
64 MB there unless told otherwise (``docker run --shm-size``); one 32-image batch at 224 px is
18 MiB of float32, and with 2 workers, 2 prefetched batches each and the batch in use, one loader
holds 5 of them. A loader cut short (``max-steps-per-epoch``, a stop request) keeps its prefetched
batches until its next epoch, so the train, validation and test loaders can all hold theirs at
once. When the space runs out, PyTorch's worker fails inside the multiprocessing queue's feeder
thread, which prints the error and drops the batch; the main process then waits for it forever.

Three defences, in order:

1. :func:`plan_loading` compares the free space of ``/dev/shm`` with what the loaders may hold and
   lowers the prefetch depth, then the number of workers, down to loading in the main process,
   with one warning line saying what it did and how to avoid it;
2. inside a worker, :func:`container_train.data.collate_skipping` allocates the batch in shared
   memory itself, so a full ``/dev/shm`` raises in the worker and reaches the trainer as an error
   instead of being dropped;
3. every loader gets a timeout (``loader-timeout-s``), and :class:`GuardedLoader` turns a timeout, a
   dead worker or a shared-memory error into a :class:`~container_train.errors.DataLoadingError`
   whose message says what happened and what to change: the job fails with that reason in the
   failure file instead of hanging.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from container_train.errors import DataLoadingError

SHM_PATH = "/dev/shm"
DEFAULT_PREFETCH = 2              # torch.utils.data.DataLoader's prefetch_factor default
SHM_HEADROOM = 0.9                # leave a tenth of /dev/shm for labels and anything else there
MiB = 2**20


@dataclass(frozen=True)
class LoaderPlan:
    """How every loader of the job runs: worker processes, batches each prefetches, timeout."""

    workers: int
    prefetch_factor: int | None = None      # None with workers=0 (DataLoader requires it)
    timeout_s: float = 0.0                  # 0 = wait forever; only used with workers > 0
    shm_free_bytes: int | None = None       # measured when the plan was made (None = unknown)
    note: str | None = None                 # the warning, when the plan differs from what was asked

    def loader_kwargs(self) -> dict:
        if self.workers == 0:
            return {"num_workers": 0}
        return {"num_workers": self.workers, "prefetch_factor": self.prefetch_factor,
                "timeout": self.timeout_s, "persistent_workers": True}

    def describe(self) -> dict:
        """What metrics.json records about data loading."""
        return {"workers": self.workers, "prefetch_factor": self.prefetch_factor,
                "timeout_s": self.timeout_s,
                "shm_free_mb": None if self.shm_free_bytes is None else round(self.shm_free_bytes / MiB, 1)}


def shm_free_bytes(path: str = SHM_PATH) -> int | None:
    """Free bytes in ``path``, or None where there is no such filesystem."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def batch_bytes(batch_size: int, image_size: int) -> int:
    """Shared memory one batch of float32 RGB images takes."""
    return batch_size * 3 * image_size * image_size * 4


def plan_loading(workers: int, batch_size: int, image_size: int, *, timeout_s: float, loaders: int = 3,
                 free_bytes: int | None = -1) -> LoaderPlan:
    """The most parallel loading that fits in ``/dev/shm`` for ``loaders`` loaders at once.

    One loader holds ``workers * prefetch + 1`` batches (queued, plus the one in use). ``free_bytes``
    -1 (default) measures ``/dev/shm``; None means unknown (no adaptation)."""
    free = shm_free_bytes() if free_bytes == -1 else free_bytes
    if workers == 0:
        return LoaderPlan(0, shm_free_bytes=free)
    if free is None:
        return LoaderPlan(workers, DEFAULT_PREFETCH, timeout_s)
    one = batch_bytes(batch_size, image_size)
    budget = free * SHM_HEADROOM

    def fits(w: int, prefetch: int) -> bool:
        return loaders * (w * prefetch + 1) * one <= budget

    if fits(workers, DEFAULT_PREFETCH):
        return LoaderPlan(workers, DEFAULT_PREFETCH, timeout_s, free)
    chosen = next(((w, 1) for w in range(workers, 0, -1) if fits(w, 1)), (0, None))
    w, prefetch = chosen
    what = (f"{w} worker(s) prefetching 1 batch each" if w else
            "loading in the main process (workers=0)")
    note = (f"/dev/shm has {free / MiB:.0f} MiB free, too little for {workers} DataLoader worker(s) "
            f"x {DEFAULT_PREFETCH} prefetched batches of {one / MiB:.0f} MiB in {loaders} loaders: {what}; "
            "give the container more shared memory (docker run --shm-size=2g) to load in parallel")
    return LoaderPlan(w, prefetch, timeout_s if w else 0.0, free, note)


def _loader_failure(exc: Exception, plan: LoaderPlan) -> DataLoadingError | None:
    """The reason to report for a DataLoader failure, or None for an error that is not about loading."""
    text = str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    shm = (f"; /dev/shm had {plan.shm_free_bytes / MiB:.0f} MiB free at the start"
           if plan.shm_free_bytes is not None else "")
    remedy = ("give the container more shared memory (docker run --shm-size=2g) or set workers=0 "
              "to load in the main process")
    if "timed out" in text and "DataLoader" in text:
        return DataLoadingError(f"data loading stalled: no batch within loader-timeout-s={plan.timeout_s:g} s "
                                f"(a DataLoader worker is stuck or lost a batch){shm}; {remedy}")
    if "shared memory" in text:
        detail = next(line.strip() for line in text.splitlines() if "shared memory" in line)
        return DataLoadingError(f"data loading ran out of shared memory ({detail}){shm}; {remedy}")
    if "DataLoader worker" in text and ("exited unexpectedly" in text or "killed by signal" in text):
        return DataLoadingError(f"a data loading worker died ({first}){shm}; if it was killed for memory or "
                                f"by a bus error, {remedy}")
    return None


class GuardedLoader:
    """A DataLoader whose failures become :class:`DataLoadingError` (see the module docstring).
    Iterates and has ``len()`` like the loader it wraps."""

    def __init__(self, loader: Iterable, plan: LoaderPlan):
        self.loader, self.plan = loader, plan

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        iterator = iter(self.loader)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except RuntimeError as e:
                reason = _loader_failure(e, self.plan)
                if reason is None:
                    raise
                raise reason from e
            yield batch
