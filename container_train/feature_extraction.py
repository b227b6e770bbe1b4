"""Backbone features of a dataset, computed pass by pass, and how a stopped extraction carries on.

:func:`compute_features` runs a frozen feature extractor over an image dataset once per view and
returns a :class:`FeatureSet`; :mod:`container_train.feature_cache` decides which features to
compute and stores them.

Stopping: the extraction checks the job's stop flag (SIGTERM) after every batch. When it is set,
:class:`ExtractionStopped` carries the :class:`Extraction` done so far (the cache keeps it on disk)
and the trainer stops like a job stopped mid-epoch; the restarted job passes that progress back
and carries on instead of starting over. An evaluation view resumes at the next image (its
transform is deterministic); an augmented view restarts from its first image, so its random crops
stay those of an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from container_train.contract import EXTRACT_PROGRESS_INTERVAL_S, format_extract_progress
from container_train.data import Batch, make_loader
from container_train.loader_limits import LoaderPlan
from container_train.profiling import StepTimings

IN_MAIN_PROCESS = LoaderPlan(0)
# The backbone runs channels-last on a CPU: oneDNN's convolutions want NHWC and otherwise spend much of
# the pass reordering (issue 27's profile of the served form). Same float32 arithmetic, so the features
# equal the NCHW ones up to summation order (tests/train/test_train_extract_progress.py checks it);
# the extraction's img/s against the bare forward pass is bench/bench_extraction.py's.
EXTRACTION_MEMORY_FORMAT = {"cpu": torch.channels_last}


class FeatureCacheError(RuntimeError):
    """The cache cannot be built or a stored cache file does not match what was asked for."""


@dataclass
class FeatureSet:
    """Pooled backbone features of one split: ``features[v, i]`` is view v of sample i."""

    features: torch.Tensor   # float32 [views, N, D]
    labels: torch.Tensor     # int64 [N]
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) not decodable

    @property
    def skipped(self) -> int:
        return len(self.skipped_files)

    def __post_init__(self):
        if self.features.dim() != 3 or self.features.shape[1] != self.labels.shape[0]:
            raise FeatureCacheError(
                f"features {tuple(self.features.shape)} do not match labels {tuple(self.labels.shape)}"
            )

    @property
    def num_views(self) -> int:
        return self.features.shape[0]

    def __len__(self) -> int:
        return self.labels.shape[0]

    def view(self, epoch_index: int) -> torch.Tensor:
        """The view trained on in 0-based epoch ``epoch_index`` (views are cycled)."""
        return self.features[epoch_index % self.num_views]


@dataclass
class Extraction:
    """Features computed so far: whole views, plus the first ``next_index`` images of the next."""

    views: list[torch.Tensor] = field(default_factory=list)      # [N, D] each
    labels: torch.Tensor | None = None                            # [N], from the whole views
    features: list[torch.Tensor] = field(default_factory=list)   # batches of the current view
    batch_labels: list[torch.Tensor] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # the current view's unreadable files
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # a whole view's
    next_index: int = 0                                           # dataset index the view resumes at

    def images_done(self, dataset_len: int) -> int:
        return len(self.views) * dataset_len + self.next_index

    def add(self, batch: Batch, features: torch.Tensor | None) -> None:
        if features is not None:
            self.features.append(features)
            self.batch_labels.append(batch.labels.to(torch.int64).cpu())
        self.skipped.extend((str(p), str(r)) for p, r in batch.skipped)
        self.next_index += len(batch) + len(batch.skipped)

    def finish_view(self) -> None:
        if not self.features:
            raise FeatureCacheError("the dataset produced no readable images")
        labels = torch.cat(self.batch_labels)
        if self.labels is not None and not torch.equal(self.labels, labels):
            raise FeatureCacheError("passes over the dataset returned different samples")
        self.views.append(torch.cat(self.features))
        self.labels, self.skipped_files = labels, self.skipped
        self.restart_view()

    def restart_view(self) -> None:
        self.features, self.batch_labels, self.skipped, self.next_index = [], [], [], 0

    def result(self) -> FeatureSet:
        return FeatureSet(torch.stack(self.views), self.labels, self.skipped_files)

    def to_state(self) -> dict:
        """Plain containers and tensors (loads with ``torch.load(weights_only=True)``)."""
        return {"views": self.views, "labels": self.labels, "features": self.features,
                "batch_labels": self.batch_labels, "skipped": [list(x) for x in self.skipped],
                "skipped_files": [list(x) for x in self.skipped_files], "next_index": self.next_index}

    @classmethod
    def from_state(cls, d: dict) -> Extraction:
        return cls(list(d["views"]), d["labels"], list(d["features"]), list(d["batch_labels"]),
                   [(str(p), str(r)) for p, r in d["skipped"]],
                   [(str(p), str(r)) for p, r in d["skipped_files"]], int(d["next_index"]))


class ExtractionStopped(Exception):
    """The stop flag was set while features were computed; ``progress`` is the work done."""

    def __init__(self, progress: Extraction, dataset_len: int, passes: int):
        super().__init__(f"stopped after {progress.images_done(dataset_len)} of {passes * dataset_len} "
                         "images' features")
        self.progress = progress
        self.kept_in: Path | None = None      # set by the cache once the progress is on disk


@torch.inference_mode()
def compute_features(extractor: nn.Module, dataset: Dataset, *, passes: int = 1, batch_size: int = 64,
                     plan: LoaderPlan = IN_MAIN_PROCESS, seed: int = 0, device: str | torch.device = "cpu",
                     log: Callable[[str], None] | None = print, stop=None, progress: Extraction | None = None,
                     exact_resume: bool = True, timings: StepTimings | None = None,
                     autocast_dtype: torch.dtype | None = None) -> FeatureSet:
    """Run ``extractor`` (eval mode) over ``dataset`` ``passes`` times; each pass is one view.

    ``dataset`` yields items as :class:`container_train.data.ImageFolderDataset` does (unreadable
    files are skipped, the same ones on every pass); with a random (training) transform each pass
    is a different augmentation. Each pass is seeded (``seed + pass``), so views are reproducible,
    and the caller's global RNG state is left as it was. ``stop`` (the job's stop flag) is checked
    after every batch: when set, :class:`ExtractionStopped` carries the work done, which
    ``progress`` resumes (mid-view only when ``exact_resume``: a deterministic transform).
    ``timings`` records each batch as an ``EXTRACT`` step (data wait vs backbone forward).
    ``autocast_dtype``: run the backbone under ``torch.autocast`` with it (features are returned float32).
    """
    done = progress or Extraction()
    if not exact_resume:
        done.restart_view()
    was_training = extractor.training
    device = torch.device(device)
    memory_format = EXTRACTION_MEMORY_FORMAT.get(device.type, torch.contiguous_format)
    extractor.eval().to(device, memory_format=memory_format)
    started = time.monotonic()
    # what this call has to do (a resumed extraction starts where it stopped)
    total_images = (passes - len(done.views)) * len(dataset) - done.next_index
    counted, last_line = 0, -math.inf
    try:
        with torch.random.fork_rng(devices=[]):
            for v in range(len(done.views), passes):
                torch.manual_seed(seed + v)   # main-process transforms draw from the global RNG
                todo = dataset if done.next_index == 0 else Subset(dataset, range(done.next_index, len(dataset)))
                if timings:
                    timings.start()
                for step, batch in enumerate(make_loader(todo, batch_size, False, plan, seed + v), 1):
                    if timings:
                        timings.data_ready()
                    out = None
                    if len(batch):     # a batch of only unreadable files has no 4-d images to convert
                        images = batch.images.to(device, non_blocking=True, memory_format=memory_format)
                        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                            out = extractor(images)
                    done.add(batch, None if out is None else out.reshape(out.shape[0], -1).float().cpu())
                    if timings:
                        timings.step_done(0, step, "EXTRACT", len(batch))
                    counted += len(batch) + len(batch.skipped)   # as next_index counts
                    if log and time.monotonic() - last_line >= EXTRACT_PROGRESS_INTERVAL_S:
                        last_line = time.monotonic()    # first batch, then every interval: bars and logs
                        log(format_extract_progress(counted, total_images, last_line - started))
                    if stop:
                        raise ExtractionStopped(done, len(dataset), passes)
                done.finish_view()
                if log:
                    log(format_extract_progress(counted, total_images, time.monotonic() - started))
                    log(f"feature cache: view {v + 1}/{passes}: {len(done.labels)} images, "
                        f"dim {done.views[-1].shape[1]}, {time.monotonic() - started:.1f}s")
    finally:   # the model goes on training and is saved as it came
        extractor.train(was_training).to(memory_format=torch.contiguous_format)
    return done.result()
