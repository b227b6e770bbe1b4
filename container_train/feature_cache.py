"""Frozen-backbone feature cache: with ``freeze=head`` run the backbone once, then train the head alone.

When only the classification head learns, every epoch pushes every image through the same frozen
backbone and gets the same pooled features back (up to augmentation). This module computes those
features once per image, stores them on disk, and trains the head on the stored tensors, which
turns an epoch from "decode + resize + a full ResNet forward per image" into a few matrix
multiplies. Tuning trials that share the data and the backbone share the cache: the first trial
computes it under a file lock, the others wait for it and load it.

Views (the one trade-off):

* ``views=0`` (default): each image is seen once through the *evaluation* transform (resize,
  centre crop). Cheapest (one backbone pass per image) and deterministic, but the head sees no
  augmentation, so this is a linear probe on fixed features. For head-only fine-tuning on a
  pretrained backbone that usually costs little or nothing; on tiny data sets it can overfit a
  little sooner than augmented training.
* ``views=n`` (n >= 1): each training image goes through the *training* transform (random
  crop/flip...) n times; epoch e trains on view ``e % n``. Costs n backbone passes per image
  up front and n times the disk/memory; with n >= epochs it reproduces the augmented loop's
  input distribution exactly. Validation always uses one evaluation view.

The cache key is a fingerprint of everything that decides the features: the split's files
(relative path, size, mtime, label), the architecture, a hash of the backbone weights, image
size and resize size, the transform (its ``repr``), the number of views, the torch version and
this module's format version. Change any of them and a new file is computed; stale files are
never reused. Files are written atomically (:mod:`byoc_common.durable`) under an exclusive
``fcntl.flock`` so concurrent processes compute a given cache once.

A split the cache has not seen may still hold images it has: on a miss, the evaluation view of
each image another cache file of the same spec holds is copied from there, matched by the SHA-256
of the image's bytes, and only the others are computed (:mod:`container_train.feature_reuse`).

Stopping: the extraction honours the job's stop flag and keeps what it computed
(:mod:`container_train.feature_extraction`); the cache stores that progress as
``<split>-<key>.partial.pt`` until a restarted job completes it (an extraction that reused rows
keeps none: see :mod:`container_train.feature_reuse`).

A process that waits for another's lock reports the wait (``on_wait``): the trainer records it as
its own ``waiting`` phase, so the time a trial idles is not taken for extraction.

The head trains as the model's own head module (:func:`head_module`), so the trainer saves the
normal full classifier and serving needs nothing special.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from byoc_common import durable
from byoc_common.architectures import head_name, split_backbone_head
from byoc_common.preprocessing import eval_transform
from container_train import feature_reuse
from container_train.contract import (
    FEATURE_CACHE_DIR,
    FEATURE_CACHE_DIR_ENV,
    FEATURE_FORMAT_VERSION,
    quote_path,
)
from container_train.data import Batch, ImageFolderDataset, train_transform
from container_train.feature_extraction import (
    Extraction,
    ExtractionStopped,
    FeatureCacheError,
    FeatureSet,
    compute_features,
)

# ---- fingerprints -----------------------------------------------------------------------------

def files_fingerprint(samples: Sequence[tuple[str | os.PathLike, int]], root: str | os.PathLike) -> str:
    """SHA-256 over (path relative to ``root``, size, mtime_ns, label) of every sample, in order.

    Paths are relative so the same data mounted at different places (each tuning trial has its own
    ``/opt/ml/input/data/training``) gives the same fingerprint. A file that is replaced, touched,
    resized, relabelled, added or removed changes it.
    """
    root = Path(root)
    h = hashlib.sha256()
    for path, label in samples:
        p = Path(path)
        st = p.stat()
        try:
            rel = p.relative_to(root).as_posix()
        except ValueError:
            rel = p.as_posix()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{int(label)}\n".encode())
    return h.hexdigest()


def weights_fingerprint(module: nn.Module, exclude_prefix: str | None = None) -> str:
    """SHA-256 of a module's state_dict (names, dtypes, shapes and bytes), optionally skipping one
    sub-module (the head, which does not influence the features)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        if exclude_prefix and (name == exclude_prefix or name.startswith(exclude_prefix + ".")):
            continue
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class FeatureSpec:
    """Everything besides the files that decides which features a backbone produces."""

    arch: str
    weights_sha256: str
    image_size: int
    resize_size: int
    transform: str          # repr() of the transform the dataset applies
    views: int = 0          # 0 = one evaluation view; n >= 1 = n training-transform views
    autocast: str = "none"  # the dtype the backbone ran in (container_train.precision.extraction_autocast)
    torch_version: str = torch.__version__
    format_version: int = FEATURE_FORMAT_VERSION

    def digest(self) -> str:
        """SHA-256 of the spec alone: cache files with equal digests hold interchangeable rows."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def key(self, split: str, files_sha256: str) -> str:
        payload = json.dumps({"spec": asdict(self), "split": split, "files": files_sha256}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


class FeatureCache:
    """A directory of ``<split>-<key>.pt`` files, each written once under an exclusive lock.
    ``on_wait(start_unix_s, seconds)`` hears of every wait for another process's lock over 0.5 s."""

    def __init__(self, cache_dir: str | os.PathLike, on_wait: Callable[[float, float], None] | None = None):
        self.dir = Path(cache_dir)
        self.on_wait = on_wait

    def path(self, split: str, key: str) -> Path:
        return self.dir / f"{split}-{key[:24]}.pt"

    def get_or_compute(self, split: str, key: str, compute: Callable[[Extraction | None], FeatureSet],
                       log: Callable[[str], None] | None = print,
                       on_ready: Callable[[Path, FeatureSet], None] | None = None) -> tuple[FeatureSet, bool]:
        """(features, computed_here). Holds ``<file>.lock`` while checking and computing, so a
        second process asking for the same key blocks until the first has written the file,
        then loads it. ``compute(progress)`` resumes a stopped extraction's ``progress`` (None:
        from the start); when it raises :class:`ExtractionStopped`, the progress is kept for next
        time unless it is empty. ``on_ready(file, features)`` runs, still under the lock, once the
        file is loaded or written (the sidecar of :mod:`container_train.feature_reuse`)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        target = self.path(split, key)
        partial = target.with_suffix(".partial.pt")
        with open(target.with_suffix(".lock"), "a+") as lock:
            start, waited = time.time(), time.monotonic()
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                waited = time.monotonic() - waited
                if waited > 0.5 and self.on_wait:
                    self.on_wait(start, waited)
                if target.exists():
                    try:
                        fs = self._load(target, key)
                        if log:
                            extra = f" after waiting {waited:.1f}s" if waited > 0.5 else ""
                            log(f"feature cache: hit {target.name} ({len(fs)} images){extra}")
                        if on_ready:
                            on_ready(target, fs)
                        return fs, False
                    except FeatureCacheError as e:
                        if log:
                            log(f"feature cache: ignoring unusable {target.name}: {e}; recomputing")
                progress = self._load_partial(partial, key, log)
                try:
                    fs = compute(progress)
                except ExtractionStopped as stopped:
                    stopped.kept_in = self.dir        # an empty progress (reused rows) stores nothing
                    if stopped.progress.views or stopped.progress.next_index:
                        self._store(partial, key, split, stopped.progress.to_state())
                        stopped.kept_in = partial
                    raise
                self._store(target, key, split, {"features": fs.features.contiguous(), "labels": fs.labels,
                                                 "skipped_files": [list(x) for x in fs.skipped_files]})
                partial.unlink(missing_ok=True)
                if log:
                    log(f"feature cache: wrote {quote_path(target)}")
                if on_ready:
                    on_ready(target, fs)
                return fs, True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _store(target: Path, key: str, split: str, content: dict) -> None:
        record = {"format_version": FEATURE_FORMAT_VERSION, "key": key, "split": split, **content}
        durable.write_with(target, lambda f: torch.save(record, f))

    @staticmethod
    def _read(target: Path, key: str) -> dict:
        try:
            d = torch.load(target, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - truncated/garbled file: report and recompute
            raise FeatureCacheError(f"cannot read: {e}") from e
        if not isinstance(d, dict) or d.get("key") != key or d.get("format_version") != FEATURE_FORMAT_VERSION:
            raise FeatureCacheError("key or format version does not match")
        return d

    @classmethod
    def _load(cls, target: Path, key: str) -> FeatureSet:
        d = cls._read(target, key)
        return FeatureSet(d["features"], d["labels"], [(str(p), str(r)) for p, r in d.get("skipped_files", [])])

    @classmethod
    def _load_partial(cls, partial: Path, key: str, log: Callable[[str], None] | None) -> Extraction | None:
        if not partial.exists():
            return None
        try:
            progress = Extraction.from_state(cls._read(partial, key))
        except (FeatureCacheError, KeyError, TypeError, ValueError) as e:
            if log:
                log(f"feature cache: ignoring unusable {partial.name}: {e}; starting over")
            return None
        if log:
            log(f"feature cache: resuming a stopped extraction from {partial.name} ({len(progress.views)} "
                f"whole view(s), {progress.next_index} images of the next)")
        return progress


def default_cache_dir(checkpoint_dir: str | os.PathLike | None, hp_value: str = "") -> Path:
    """Where the cache lives: the ``feature-cache-dir`` hyperparameter, else ``$BYOC_FEATURE_CACHE_DIR``
    (the local tuner points all trials at one directory), else ``<checkpoint dir>/feature-cache``
    (survives a spot restart; on SageMaker it is synced to S3 with the checkpoints)."""
    if hp_value:
        return Path(hp_value)
    if os.environ.get(FEATURE_CACHE_DIR_ENV):
        return Path(os.environ[FEATURE_CACHE_DIR_ENV])
    if checkpoint_dir is None:
        raise FeatureCacheError(f"no feature cache directory: set feature-cache-dir or ${FEATURE_CACHE_DIR_ENV}")
    return Path(checkpoint_dir) / FEATURE_CACHE_DIR


def cached_split_features(cache: FeatureCache, split: str, *, extractor: nn.Module, dataset: Dataset,
                          samples: Sequence[tuple[str | os.PathLike, int]], root: str | os.PathLike,
                          spec: FeatureSpec, log: Callable[[str], None] | None = print, **extraction
                          ) -> FeatureSet:
    """Features of one split from the cache, computing them (``max(1, spec.views)`` passes of
    ``dataset``) when absent; with ``views=0``, images other cache files of this spec hold are
    reused, not computed (:mod:`container_train.feature_reuse`). ``dataset[i]`` must be
    ``samples[i]`` through the transform ``spec.transform`` describes; ``extraction`` holds
    :func:`compute_features`' loading options (batch_size, plan, seed, device, stop, timings)."""
    key = spec.key(split, files_fingerprint(samples, root))
    identities = feature_reuse.Identities(samples) if spec.views == 0 else None

    def compute(progress: Extraction | None) -> FeatureSet:
        if identities is not None and progress is None:
            fs = feature_reuse.compute_reusing(cache.dir, spec.digest(), identities, extractor=extractor,
                                               dataset=dataset, log=log, **extraction)
            if fs is not None:
                return fs
        return compute_features(extractor, dataset, passes=max(1, spec.views), log=log, progress=progress,
                                exact_resume=spec.views == 0, **extraction)

    def record_rows(target: Path, fs: FeatureSet) -> None:
        rows = identities.rows(fs) if not feature_reuse.sidecar_path(target).exists() else None
        if rows is not None:
            feature_reuse.write_sidecar(target, key, spec.digest(), rows)

    fs, _ = cache.get_or_compute(split, key, compute, log=log,
                                 on_ready=None if identities is None else record_rows)
    return fs


def enabled(freeze: str, feature_cache: str = "auto") -> bool:
    """Whether a run uses the cache: ``feature-cache`` auto (default: on exactly when
    ``freeze=head``), true (requires ``freeze=head``) or false."""
    value = str(feature_cache).strip().lower()
    if value not in ("auto", "true", "false"):
        raise ValueError(f"feature-cache must be auto, true or false, got {feature_cache!r}")
    if value == "true" and freeze != "head":
        raise ValueError(f"feature-cache=true needs freeze=head (freeze={freeze} trains backbone layers, "
                         "whose features change every step)")
    return freeze == "head" and value != "false"


def dtype_name(dtype: torch.dtype | None) -> str:
    """``bfloat16`` for ``torch.bfloat16``, ``none`` for float32 (no autocast)."""
    return "none" if dtype is None else str(dtype).removeprefix("torch.")


def head_module(model: nn.Module, arch: str) -> nn.Module:
    """The model's own head module: what trains (and what the loops call) when the cache is on."""
    return getattr(model, head_name(arch))


def split_specs(model: nn.Module, arch: str, config, names: Sequence[str], *, views: int = 0,
                autocast_dtype: torch.dtype | None = None) -> dict[str, tuple[FeatureSpec, Callable]]:
    """Split name -> (its :class:`FeatureSpec`, the transform it applies) for ``model``'s backbone:
    ``train`` one evaluation view (``views=0``) or ``views`` passes of the training transform, every
    other split one evaluation view. The one place that decides what a split's features are, for
    the cache and for a features channel (:mod:`container_train.features_dataset`)."""
    weights = weights_fingerprint(model, exclude_prefix=head_name(arch))
    out = {}
    for name in names:
        if name == "train" and views > 0:
            transform, n = train_transform(config), views
        else:
            transform, n = eval_transform(config), 0
        out[name] = (FeatureSpec(arch=arch, weights_sha256=weights, image_size=config.image_size,
                                 resize_size=config.resize_size, transform=repr(transform), views=n,
                                 autocast=dtype_name(autocast_dtype)), transform)
    return out


def features_for_splits(cache_dir: str | os.PathLike, splits: dict, model: nn.Module, arch: str,
                        config, *, views: int = 0, names: Sequence[str] = ("train", "valid"),
                        autocast_dtype: torch.dtype | None = None, log: Callable[[str], None] | None = print,
                        on_wait: Callable[[float, float], None] | None = None, **extraction) -> dict[str, FeatureSet]:
    """Cached features of the splits ``names`` (``container_train.data.Split``; default ``train`` and
    ``valid``) for ``model``'s backbone: the trainer's one call. Views as :func:`split_specs` says.

    ``config`` is the run's ``ModelConfig`` (image size, resize size, normalisation). Unreadable
    images are skipped as in the image loop.
    ``autocast_dtype``: the backbone runs under ``torch.autocast`` with it (None: float32); recorded in the spec.
    ``on_wait``: as :class:`FeatureCache`'s.
    ``extraction``: :func:`compute_features`' batch_size, plan, seed, device, stop and timings.
    """
    extractor, _ = split_backbone_head(model, arch)
    cache = FeatureCache(cache_dir, on_wait)
    out = {}
    specs = split_specs(model, arch, config, names, views=views, autocast_dtype=autocast_dtype)
    for name, (spec, transform) in specs.items():
        split = splits[name]
        out[name] = cached_split_features(
            cache, name, extractor=extractor, dataset=ImageFolderDataset(split, transform),
            samples=split.samples, root=split.root, spec=spec, log=log, autocast_dtype=autocast_dtype, **extraction)
    return out


# ---- head training on cached tensors ----------------------------------------------------------

class FeatureBatches:
    """Cached features as the trainer's loops want their data: an iterable of
    ``container_train.data.Batch(features, labels, skipped)`` with ``len()`` = steps per epoch.

    Like a DataLoader it can be iterated once per epoch. Epoch k (counting from ``first_epoch``,
    0-based) uses view ``k % views`` and, when ``shuffle``, the order ``randperm(seed + k)``, so a
    resumed job (``first_epoch`` = epochs already done) replays exactly the order it would have
    seen. Batches are split like ``DataLoader(drop_last=False)``: ``ceil(N / batch_size)`` steps.
    """

    def __init__(self, fs: FeatureSet, batch_size: int, *, shuffle: bool, seed: int = 0, first_epoch: int = 0,
                 rank: int = 0, world_size: int = 1):
        if len(fs) == 0:
            raise FeatureCacheError("no cached features to iterate")
        self.fs, self.batch_size, self.shuffle, self.seed = fs, batch_size, shuffle, seed
        self.epoch_index = first_epoch
        self.rank, self.world_size = rank, world_size

    def _order(self, k: int) -> torch.Tensor:
        """This rank's sample indices in epoch ``k``. A distributed job's ranks take every
        ``world_size``-th of the epoch's order (as DistributedSampler): training pads it to a
        multiple of the world size, so every rank takes as many steps; evaluation does not."""
        n = len(self.fs)
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + k))
                 if self.shuffle else torch.arange(n))
        if self.world_size > 1 and self.shuffle:
            order = torch.cat([order, order[:(-n) % self.world_size]])
        return order[self.rank::self.world_size]

    def __len__(self) -> int:
        n, w = len(self.fs), self.world_size
        per_rank = -(-n // w) if self.shuffle else len(range(self.rank, n, w))
        return math.ceil(per_rank / self.batch_size)

    def __iter__(self):
        k = self.epoch_index
        self.epoch_index += 1
        feats = self.fs.view(k) if self.shuffle else self.fs.view(0)
        order = self._order(k)
        for i in range(0, len(order), self.batch_size):
            idx = order[i:i + self.batch_size]
            # Files that could not be decoded when the cache was built ride along with the first
            # batch, so the trainer's SkipCounter reports them as the image loop would.
            yield Batch(feats[idx], self.fs.labels[idx], list(self.fs.skipped_files) if i == 0 else [])
