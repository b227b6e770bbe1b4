"""DataLoader workers and /dev/shm: the plan fits the shared memory there is, and a worker that dies
or never answers fails the job with a reason instead of hanging it (container_train.loader_limits)."""

from __future__ import annotations

import os
import threading

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from container_train.data import collate_skipping, make_loader
from container_train.errors import DataLoadingError
from container_train.loader_limits import LoaderPlan, MiB, batch_bytes, plan_loading

DEFAULTS = dict(workers=2, batch_size=32, image_size=224, timeout_s=600.0)   # the trainer's defaults


def test_docker_default_shm_means_loading_in_the_main_process():
    """64 MB (docker's default) cannot hold even one worker's batches for three loaders."""
    assert batch_bytes(32, 224) == 32 * 3 * 224 * 224 * 4
    plan = plan_loading(**DEFAULTS, loaders=3, free_bytes=64 * MiB)
    assert (plan.workers, plan.prefetch_factor, plan.timeout_s) == (0, None, 0.0)
    assert plan.note.startswith("/dev/shm has 64 MiB free, too little for 2 DataLoader worker(s)")
    assert "loading in the main process (workers=0)" in plan.note and "--shm-size" in plan.note
    assert plan.loader_kwargs() == {"num_workers": 0}


def test_enough_shm_keeps_the_workers_and_a_little_less_prefetches_one_batch():
    roomy = plan_loading(**DEFAULTS, loaders=3, free_bytes=16 * 1024 * MiB)
    assert (roomy.workers, roomy.prefetch_factor, roomy.timeout_s, roomy.note) == (2, 2, 600.0, None)
    assert roomy.loader_kwargs() == {"num_workers": 2, "prefetch_factor": 2, "timeout": 600.0,
                                     "persistent_workers": True}
    one_batch = batch_bytes(32, 224)
    tight = plan_loading(**DEFAULTS, loaders=3, free_bytes=int(3 * 3 * one_batch / 0.9) + 1)  # 2 x 1 + 1 each
    assert (tight.workers, tight.prefetch_factor) == (2, 1)
    assert "2 worker(s) prefetching 1 batch each" in tight.note
    fewer = plan_loading(**DEFAULTS, loaders=3, free_bytes=int(3 * 2 * one_batch / 0.9) + 1)  # 1 x 1 + 1 each
    assert (fewer.workers, fewer.prefetch_factor) == (1, 1)


def test_no_shm_filesystem_or_no_workers_leaves_the_plan_alone():
    assert plan_loading(**DEFAULTS, free_bytes=None) == LoaderPlan(2, 2, 600.0)
    assert plan_loading(**{**DEFAULTS, "workers": 0}, free_bytes=64 * MiB).workers == 0


class _Items(Dataset):
    """Items as ImageFolderDataset yields them; ``misbehave(index)`` runs in the worker first."""

    def __init__(self, misbehave=None, n: int = 8):
        self.misbehave, self.n = misbehave, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        if self.misbehave is not None:
            self.misbehave(index)
        return (torch.full((3, 4, 4), float(index)), index % 2), f"item-{index}", None


def _exit_on_third(index: int) -> None:
    if index == 2:
        os._exit(3)                 # the worker dies without a word, as a SIGKILLed one would


_NEVER = threading.Event()          # never set: a worker waiting on it is stuck for good


def _stuck_on_third(index: int) -> None:
    if index == 2:
        _NEVER.wait()


def test_a_dead_worker_fails_with_its_reason():
    loader = make_loader(_Items(_exit_on_third), 2, False, LoaderPlan(1, 1, timeout_s=600.0), seed=0)
    with pytest.raises(DataLoadingError, match=r"a data loading worker died \(DataLoader worker \(pid"):
        list(loader)


def test_a_stuck_worker_fails_after_the_loader_timeout_instead_of_hanging():
    loader = make_loader(_Items(_stuck_on_third), 2, False, LoaderPlan(1, 1, timeout_s=1.0), seed=0)
    with pytest.raises(DataLoadingError, match=r"no batch within loader-timeout-s=1 s .* --shm-size"):
        list(loader)


def _collated_in_shared_memory(items) -> torch.Tensor:
    batch = collate_skipping(items)
    return torch.tensor([batch.images.is_shared(), batch.labels.is_shared()])


def test_batches_are_allocated_in_shared_memory_inside_the_worker():
    """So that a full /dev/shm raises in the worker, not in the queue's feeder thread (which drops
    the batch and leaves the trainer waiting)."""
    in_worker = DataLoader(_Items(), batch_size=4, num_workers=1, collate_fn=_collated_in_shared_memory)
    assert [flags.tolist() for flags in in_worker] == [[True, True], [True, True]]
    in_main = collate_skipping([_Items()[i] for i in range(2)])
    assert not in_main.images.is_shared()            # the main process keeps ordinary memory
    batches = list(make_loader(_Items(), 4, False, LoaderPlan(1, 1, timeout_s=600.0), seed=0))
    assert [b.labels.tolist() for b in batches] == [[0, 1, 0, 1], [0, 1, 0, 1]]
