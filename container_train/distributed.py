"""Data-parallel training (PyTorch DDP) across the hosts and GPUs of a job.

:mod:`container_train.launch` starts ``train.py`` under torchrun whenever the job has more than one
host or GPU; torchrun gives each process ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` (computed from ``resourceconfig.json``/``SM_HOSTS``, ``SM_CURRENT_HOST`` and
``SM_NUM_GPUS``). Without them (``python train.py``, one host and one device) :data:`SINGLE` applies
and nothing here changes the job. With them:

* the process group is NCCL on GPUs, Gloo on CPUs, with a collective timeout
  (``$BYOC_COLLECTIVE_TIMEOUT_S``): a rank that dies closes its connections and the others fail at
  once; one that stops answering fails them after the timeout (:func:`explain` gives the reason);
* each rank trains on its shard (:class:`torch.utils.data.DistributedSampler`, ``set_epoch`` every
  epoch) and DDP averages the gradients, so the **global batch is batch-size x world size**; the
  learning rate is the user's choice (nothing scales it);
* validation and test split the images across ranks without padding, and :func:`reduce_result`
  sums loss, hits and images over ranks: rank 0 prints one set of ``#metric`` lines for the job;
* rank 0 alone writes the model artifact, ``metrics.json``, checkpoints and Debugger tensors; every
  rank resumes from rank 0's checkpoint (:func:`from_rank0`);
* a stop request (SIGTERM) is agreed on after every step (:class:`AgreedStop`), so all ranks stop
  at the same step;
* with ``freeze=head`` each rank extracts the features of its shard (cached per shard) and
  :func:`gather_features` puts the whole set together on every rank: computed once, not N times.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler

from container_train.errors import TrainingError
from container_train.job_env import COLLECTIVE_TIMEOUT_ENV, DEFAULT_COLLECTIVE_TIMEOUT_S, NUM_GPUS_ENV

log = logging.getLogger(__name__)
_collectives_on = {"device": torch.device("cpu")}   # NCCL reduces CUDA tensors, Gloo CPU ones


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Ranks()


def ranks_from_env(environ: Mapping[str, str] | None = None) -> Ranks:
    """This process's place in the job, from torchrun's variables (none: :data:`SINGLE`)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return SINGLE
    return Ranks(int(env.get("RANK", 0)), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))


def cuda_problem() -> str:
    """Why torch cannot use CUDA here, in the words of torch's own CUDA initialisation."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    try:
        torch.cuda.init()
    except Exception as e:  # noqa: BLE001 - the reason is what we want
        return f"torch {torch.__version__} (built for CUDA {torch.version.cuda}) cannot start CUDA: {e}"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees {torch.cuda.device_count()} GPU(s)"


def choose_device(ranks: Ranks, environ: Mapping[str, str] | None = None) -> torch.device:
    """CUDA when it works (this rank's GPU under torchrun), else CPU; a host with GPUs
    (``SM_NUM_GPUS`` > 0) whose CUDA cannot be used fails instead of training on CPU."""
    env = os.environ if environ is None else environ
    wanted = int(env.get(NUM_GPUS_ENV) or 0)
    if not torch.cuda.is_available():
        if wanted > 0:
            raise TrainingError(
                f"this host has {wanted} GPU(s) ({NUM_GPUS_ENV}={wanted}) but CUDA is unusable: {cuda_problem()}; "
                "build the training image with a TORCH_INDEX_URL whose CUDA the host driver supports "
                "(README: multi-host training), or use a CPU instance type")
        return torch.device("cpu")
    if ranks.enabled or "LOCAL_RANK" in env:
        torch.cuda.set_device(ranks.local_rank)
        return torch.device("cuda", ranks.local_rank)
    return torch.device("cuda")


def start(ranks: Ranks, device: torch.device, environ: Mapping[str, str] | None = None) -> None:
    """Join the job's process group (torchrun's ``env://`` rendezvous); no-op for one process."""
    if not ranks.enabled:
        return
    env = os.environ if environ is None else environ
    timeout_s = float(env.get(COLLECTIVE_TIMEOUT_ENV) or DEFAULT_COLLECTIVE_TIMEOUT_S)
    backend = "nccl" if device.type == "cuda" else "gloo"
    _collectives_on["device"] = device
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                            **({"device_id": device} if device.type == "cuda" else {}))
    log.info("rank %d of %d (local rank %d): %s process group via %s:%s, collective timeout %g s",
             ranks.rank, ranks.world_size, ranks.local_rank, backend, env.get("MASTER_ADDR"),
             env.get("MASTER_PORT"), timeout_s)


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def quiet_other_ranks(ranks: Ranks) -> None:
    """Ranks other than 0 log warnings and errors only: the job's log reads as one job."""
    if not ranks.is_main:
        logging.getLogger().setLevel(logging.WARNING)


def explain(exc: BaseException, ranks: Ranks) -> str | None:
    """A failure reason for an error that came from the other ranks (a dead peer, a timeout)."""
    if not ranks.enabled:
        return None
    text = str(exc)
    if isinstance(exc, dist.DistError) or re.search(r"gloo|nccl|connection|timed? ?out|peer|socket", text, re.I):
        first = text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
        return (f"rank {ranks.rank} of {ranks.world_size}: another rank of this distributed job failed, was "
                f"stopped or stopped answering ({type(exc).__name__}: {first}); the first host's failure "
                f"reason or log says why (collective timeout ${COLLECTIVE_TIMEOUT_ENV})")
    return None


# ---- data ---------------------------------------------------------------------------------------

class Shard(Sampler):
    """Every ``world_size``-th index from ``rank``, in order, no padding: evaluation splits."""

    def __init__(self, n: int, ranks: Ranks):
        self.indices = list(range(ranks.rank, n, ranks.world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def sampler(dataset, ranks: Ranks, *, train: bool, seed: int) -> Sampler | None:
    """None for one process (the loader shuffles as before), else this rank's shard."""
    if not ranks.enabled:
        return None
    if train:
        return DistributedSampler(dataset, num_replicas=ranks.world_size, rank=ranks.rank, shuffle=True,
                                  seed=seed, drop_last=False)
    return Shard(len(dataset), ranks)


def set_epoch(loader, epoch: int) -> None:
    """Reseed the training shard's order for ``epoch`` (a no-op without a DistributedSampler)."""
    inner = getattr(loader, "loader", loader)
    sampler_ = getattr(inner, "sampler", None)
    if isinstance(sampler_, DistributedSampler):
        sampler_.set_epoch(epoch)


def shard_split(split, ranks: Ranks):
    """This rank's part of a :class:`container_train.data.Split` (feature extraction)."""
    return split if not ranks.enabled else replace(split, samples=split.samples[ranks.rank::ranks.world_size])


def gather_features(local, ranks: Ranks):
    """Every rank's :class:`~container_train.feature_extraction.FeatureSet` of its shard -> the whole
    split's on every rank, in the split's order when no image was skipped (shard r holds r, r+W, ...)."""
    if not ranks.enabled:
        return local
    parts = [None] * ranks.world_size
    dist.all_gather_object(parts, (local.features, local.labels, local.skipped_files))
    skipped = [s for _, _, files in parts for s in files]
    if skipped:
        features, labels = torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts])
    else:
        total = sum(len(p[1]) for p in parts)
        # where each shard-concatenated sample sits in the split
        order = torch.tensor([i for start in range(ranks.world_size) for i in range(start, total, ranks.world_size)])
        cat_f, cat_l = torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts])
        features, labels = torch.empty_like(cat_f), torch.empty_like(cat_l)
        features[:, order], labels[order] = cat_f, cat_l
    return type(local)(features, labels, skipped)


# ---- model, metrics, agreement --------------------------------------------------------------------

DDP_COMPRESSIONS = ("none", "bf16", "fp16")


@dataclass(frozen=True)
class DdpOptions:
    """The all-reduce levers of issue 27 (``bench/bench_ddp_scaling.py --variants`` measures them side by
    side; ``tests/bench/test_bench_ddp_variants.py`` checks every one trains to the same weights):

    * ``bucket_cap_mb``: gradients are all-reduced in buckets of this size as the backward pass fills
      them; smaller buckets start the first all-reduce sooner, larger ones pay fewer per-call costs
      (DDP's default 25);
    * ``gradient_as_bucket_view``: ``.grad`` tensors are views into the buckets (no copy in or out);
    * ``compression``: ``bf16`` / ``fp16`` all-reduce the buckets in 16 bits (half the bytes) and
      divide by the world size before the cast (torch's ``default_hooks.bf16_compress_hook`` /
      ``fp16_compress_hook``); the optimizer still steps in float32."""

    bucket_cap_mb: float = 25.0
    gradient_as_bucket_view: bool = False
    compression: str = "none"

    def __post_init__(self):
        if self.compression not in DDP_COMPRESSIONS:
            raise ValueError(f"DDP compression {self.compression!r}: expected one of {DDP_COMPRESSIONS}")
        if not self.bucket_cap_mb > 0:
            raise ValueError(f"DDP bucket size {self.bucket_cap_mb} MB: must be > 0")


def compression_hook(compression: str):
    """The DDP communication hook for ``compression`` (None: DDP's own float32 all-reduce)."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    return {"none": None, "bf16": default_hooks.bf16_compress_hook,
            "fp16": default_hooks.fp16_compress_hook}[compression]


def wrap(module: torch.nn.Module, ranks: Ranks, device: torch.device,
         options: DdpOptions = DdpOptions()) -> torch.nn.Module:
    """DDP around ``module`` (rank 0's weights are broadcast to all); the module itself for one process."""
    if not ranks.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ddp = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                  bucket_cap_mb=options.bucket_cap_mb,
                                  gradient_as_bucket_view=options.gradient_as_bucket_view)
    hook = compression_hook(options.compression)
    if hook is not None:
        ddp.register_comm_hook(dist.group.WORLD, hook)
    return ddp


def reduce_result(result, ranks: Ranks):
    """An :class:`~container_train.engine.EpochResult` over all ranks: images, loss and accuracy summed
    image-weighted, the slowest rank's seconds, the most steps."""
    if not ranks.enabled:
        return result
    sums = _tensor([result.loss * result.images, result.accuracy * result.images, result.images])
    dist.all_reduce(sums)
    most = _tensor([result.seconds, result.steps])
    dist.all_reduce(most, op=dist.ReduceOp.MAX)
    images = int(round(sums[2].item()))
    return replace(result, loss=sums[0].item() / max(images, 1), accuracy=sums[1].item() / max(images, 1),
                   images=images, seconds=most[0].item(), steps=int(most[1].item()))


def _tensor(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, device=_collectives_on["device"])


def from_rank0(make, ranks: Ranks):
    """``make()`` on rank 0, its result on every rank (a checkpoint all ranks resume from)."""
    if not ranks.enabled:
        return make()
    box = [make() if ranks.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class AgreedStop:
    """The job's stop flag as every rank sees it: set on all ranks when it is set on any. Each
    ``bool()`` is a collective, so the loops (which check it after every step, the same number of
    times on every rank) stop together. ``local`` is this process's own flag."""

    def __init__(self, local, ranks: Ranks):
        self.local, self.ranks = local, ranks
        self._agreed = False

    @property
    def reason(self) -> str:
        return self.local.reason or "SIGTERM (on another host)"

    def __bool__(self) -> bool:
        if not self._agreed:
            flag = _tensor([1 if self.local else 0])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self._agreed = bool(flag.item())
        return self._agreed


def agreed_stop(local, ranks: Ranks):
    return AgreedStop(local, ranks) if ranks.enabled else local


def local_stop(stop):
    """The flag a rank checks on its own (feature extraction, whose batch counts differ per rank)."""
    return getattr(stop, "local", stop)
