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
never reused. Files are written atomically (temporary file + ``os.replace``) under an exclusive
``fcntl.flock`` so concurrent processes compute a given cache once.

After training, the head is the model's own head module (``split_backbone_head`` shares
parameters), so the trainer saves the normal full classifier and serving needs nothing special;
:func:`install_head` copies weights back explicitly when a separate head object was trained.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from byoc_common.architectures import head_name

CACHE_FORMAT_VERSION = 1
CACHE_DIR_ENV = "BYOC_FEATURE_CACHE_DIR"
CACHE_SUBDIR = "feature-cache"


class FeatureCacheError(RuntimeError):
    """The cache cannot be built or a stored cache file does not match what was asked for."""


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
    torch_version: str = torch.__version__
    format_version: int = CACHE_FORMAT_VERSION

    def key(self, split: str, files_sha256: str) -> str:
        payload = json.dumps({"spec": asdict(self), "split": split, "files": files_sha256}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


# ---- the stored tensors -----------------------------------------------------------------------

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


def _one_pass(extractor: nn.Module, loader: DataLoader, device
              ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, str]]]:
    feats, labs, skipped = [], [], []
    for batch in loader:
        # container_train.data.collate_skipping yields Batch objects; plain datasets yield tuples.
        if hasattr(batch, "images"):
            images, targets = batch.images, batch.labels
            skipped.extend((str(p), str(r)) for p, r in batch.skipped)
        else:
            images, targets = batch
        if len(targets) == 0:   # a batch of only unreadable images
            continue
        out = extractor(images.to(device, non_blocking=True))
        feats.append(out.reshape(out.shape[0], -1).float().cpu())
        labs.append(torch.as_tensor(targets, dtype=torch.int64).cpu())
    if not feats:
        raise FeatureCacheError("the dataset produced no readable images")
    return torch.cat(feats), torch.cat(labs), skipped


@torch.inference_mode()
def compute_features(extractor: nn.Module, dataset: Dataset, *, passes: int = 1, batch_size: int = 64,
                     workers: int = 0, collate_fn: Callable | None = None, seed: int = 0,
                     device: str | torch.device = "cpu", log: Callable[[str], None] | None = print
                     ) -> FeatureSet:
    """Run ``extractor`` (eval mode) over ``dataset`` ``passes`` times; each pass is one view.

    The dataset yields ``(image_tensor, label)``; with a random (training) transform each pass
    is a different augmentation. ``collate_fn`` may drop unreadable samples; it must drop the
    same ones on every pass. Each pass is seeded (``seed + pass``), so views are reproducible,
    and the caller's global RNG state is left as it was.
    """
    was_training = extractor.training
    extractor.eval().to(device)
    views, labels, skipped = [], None, []
    started = time.monotonic()
    try:
        with torch.random.fork_rng(devices=[]):
            for v in range(passes):
                torch.manual_seed(seed + v)   # main-process transforms draw from the global RNG
                loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                    collate_fn=collate_fn, generator=torch.Generator().manual_seed(seed + v))
                feats, view_labels, skipped = _one_pass(extractor, loader, device)
                if labels is not None and not torch.equal(labels, view_labels):
                    raise FeatureCacheError("passes over the dataset returned different samples")
                labels = view_labels
                views.append(feats)
                if log:
                    log(f"feature cache: view {v + 1}/{passes}: {len(labels)} images, dim {feats.shape[1]}, "
                        f"{time.monotonic() - started:.1f}s")
    finally:
        extractor.train(was_training)
    return FeatureSet(torch.stack(views), labels, skipped)


class FeatureCache:
    """A directory of ``<split>-<key>.pt`` files, each written once under an exclusive lock."""

    def __init__(self, cache_dir: str | os.PathLike):
        self.dir = Path(cache_dir)

    def path(self, split: str, key: str) -> Path:
        return self.dir / f"{split}-{key[:24]}.pt"

    def get_or_compute(self, split: str, key: str, compute: Callable[[], FeatureSet],
                       log: Callable[[str], None] | None = print) -> tuple[FeatureSet, bool]:
        """(features, computed_here). Holds ``<file>.lock`` while checking and computing, so a
        second process asking for the same key blocks until the first has written the file,
        then loads it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        target = self.path(split, key)
        with open(target.with_suffix(".lock"), "a+") as lock:
            waited = time.monotonic()
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                waited = time.monotonic() - waited
                if target.exists():
                    try:
                        fs = self._load(target, key)
                        if log:
                            extra = f" after waiting {waited:.1f}s" if waited > 0.5 else ""
                            log(f"feature cache: hit {target.name} ({len(fs)} images){extra}")
                        return fs, False
                    except FeatureCacheError as e:
                        if log:
                            log(f"feature cache: ignoring unusable {target.name}: {e}; recomputing")
                fs = compute()
                self._save(target, key, split, fs)
                if log:
                    log(f"feature cache: wrote {target}")
                return fs, True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _save(target: Path, key: str, split: str, fs: FeatureSet) -> None:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save({"format_version": CACHE_FORMAT_VERSION, "key": key, "split": split,
                            "features": fs.features.contiguous(), "labels": fs.labels,
                            "skipped_files": [list(x) for x in fs.skipped_files]}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _load(target: Path, key: str) -> FeatureSet:
        try:
            d = torch.load(target, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - truncated/garbled file: report and recompute
            raise FeatureCacheError(f"cannot read: {e}") from e
        if not isinstance(d, dict) or d.get("key") != key or d.get("format_version") != CACHE_FORMAT_VERSION:
            raise FeatureCacheError("key or format version does not match")
        return FeatureSet(d["features"], d["labels"], [(str(p), str(r)) for p, r in d.get("skipped_files", [])])


def default_cache_dir(checkpoint_dir: str | os.PathLike | None, hp_value: str = "") -> Path:
    """Where the cache lives: the ``feature-cache-dir`` hyperparameter, else ``$BYOC_FEATURE_CACHE_DIR``
    (the local tuner points all trials at one directory), else ``<checkpoint dir>/feature-cache``
    (survives a spot restart; on SageMaker it is synced to S3 with the checkpoints)."""
    if hp_value:
        return Path(hp_value)
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    if checkpoint_dir is None:
        raise FeatureCacheError(f"no feature cache directory: set feature-cache-dir or ${CACHE_DIR_ENV}")
    return Path(checkpoint_dir) / CACHE_SUBDIR


def cached_split_features(cache: FeatureCache, split: str, *, extractor: nn.Module, dataset: Dataset,
                          samples: Sequence[tuple[str | os.PathLike, int]], root: str | os.PathLike,
                          spec: FeatureSpec, batch_size: int = 64, workers: int = 0,
                          collate_fn: Callable | None = None, seed: int = 0,
                          device: str | torch.device = "cpu", log: Callable[[str], None] | None = print
                          ) -> FeatureSet:
    """Features of one split from the cache, computing them (``max(1, spec.views)`` passes of
    ``dataset``) when absent. ``dataset`` must apply the transform ``spec.transform`` describes."""
    key = spec.key(split, files_fingerprint(samples, root))

    def compute() -> FeatureSet:
        return compute_features(extractor, dataset, passes=max(1, spec.views), batch_size=batch_size,
                                workers=workers, collate_fn=collate_fn, seed=seed, device=device, log=log)

    fs, _ = cache.get_or_compute(split, key, compute, log=log)
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


def head_module(model: nn.Module, arch: str) -> nn.Module:
    """The model's own head module: what trains (and what the loops call) when the cache is on."""
    return getattr(model, head_name(arch))


def features_for_splits(cache_dir: str | os.PathLike, splits: dict, model: nn.Module, arch: str,
                        config, *, views: int = 0, batch_size: int = 64, workers: int = 0, seed: int = 0,
                        device: str | torch.device = "cpu", log: Callable[[str], None] | None = print
                        ) -> dict[str, FeatureSet]:
    """Cached features of the ``train`` and ``valid`` splits (``container_train.data.Split``) for
    ``model``'s backbone: the trainer's one call.

    ``train`` uses one evaluation view (``views=0``) or ``views`` passes of the training transform;
    ``valid`` always one evaluation view. ``config`` is the run's ``ModelConfig`` (image size,
    resize size, normalisation). Unreadable images are skipped as in the image loop.
    """
    from byoc_common.architectures import split_backbone_head
    from byoc_common.preprocessing import eval_transform
    from container_train.data import ImageFolderDataset, collate_skipping, train_transform

    extractor, _ = split_backbone_head(model, arch)
    weights = weights_fingerprint(model, exclude_prefix=head_name(arch))
    cache = FeatureCache(cache_dir)
    out = {}
    for name in ("train", "valid"):
        if name == "train" and views > 0:
            transform, n = train_transform(config), views
        else:
            transform, n = eval_transform(config), 0
        spec = FeatureSpec(arch=arch, weights_sha256=weights, image_size=config.image_size,
                           resize_size=config.resize_size, transform=repr(transform), views=n)
        split = splits[name]
        out[name] = cached_split_features(
            cache, name, extractor=extractor, dataset=ImageFolderDataset(split, transform),
            samples=split.samples, root=split.root, spec=spec, batch_size=batch_size, workers=workers,
            collate_fn=collate_skipping, seed=seed, device=device, log=log)
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

    def __init__(self, fs: FeatureSet, batch_size: int, *, shuffle: bool, seed: int = 0, first_epoch: int = 0):
        if len(fs) == 0:
            raise FeatureCacheError("no cached features to iterate")
        self.fs, self.batch_size, self.shuffle, self.seed = fs, batch_size, shuffle, seed
        self.epoch_index = first_epoch

    def __len__(self) -> int:
        return math.ceil(len(self.fs) / self.batch_size)

    def __iter__(self):
        from container_train.data import Batch

        k = self.epoch_index
        self.epoch_index += 1
        feats = self.fs.view(k) if self.shuffle else self.fs.view(0)
        order = (torch.randperm(len(self.fs), generator=torch.Generator().manual_seed(self.seed + k))
                 if self.shuffle else torch.arange(len(self.fs)))
        for i in range(0, len(self.fs), self.batch_size):
            idx = order[i:i + self.batch_size]
            # Files that could not be decoded when the cache was built ride along with the first
            # batch, so the trainer's SkipCounter reports them as the image loop would.
            yield Batch(feats[idx], self.fs.labels[idx], list(self.fs.skipped_files) if i == 0 else [])


@dataclass
class HeadEpoch:
    epoch: int               # 1-based, as in the metric lines
    train_loss: float
    train_acc: float
    valid_loss: float | None
    valid_acc: float | None
    view: int
    seconds: float
    images: int


def train_head_on_features(head: nn.Module, train: FeatureSet, valid: FeatureSet | None, *, epochs: int,
                           batch_size: int, optimizer: torch.optim.Optimizer, criterion: nn.Module,
                           scheduler=None, seed: int = 0, start_epoch: int = 0, max_steps_per_epoch: int = 0,
                           on_epoch_end: Callable[[HeadEpoch], bool | None] | None = None,
                           device: str | torch.device = "cpu", log_interval_s: float = 30.0
                           ) -> list[HeadEpoch]:
    """Train ``head`` on cached features for epochs ``start_epoch+1 .. epochs`` with the trainer's own
    step code (:func:`container_train.engine.train_one_epoch` / :func:`~container_train.engine.evaluate`:
    same loss/NaN checks, per-step scheduler, progress lines).

    ``optimizer``, ``scheduler`` (stepped once per step; None = constant) and ``criterion`` are
    built by the caller over the head's parameters exactly as for ``freeze=head`` (e.g.
    ``engine.make_optimizer`` / ``engine.make_scheduler``). ``on_epoch_end`` gets each
    :class:`HeadEpoch` (print metric lines, checkpoint there); returning True stops (early stopping).
    The trainer itself can instead pass :class:`FeatureBatches` to its own epoch loop.
    """
    from container_train import engine
    from container_train.data import SkipCounter

    device = torch.device(device)
    head.to(device)
    train_batches = FeatureBatches(train, batch_size, shuffle=True, seed=seed, first_epoch=start_epoch)
    valid_batches = FeatureBatches(valid, 1024, shuffle=False) if valid is not None and len(valid) else None
    steps = engine.steps_in(len(train_batches), max_steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    sched = scheduler if scheduler is not None else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    skipped, never = SkipCounter(), engine.StopFlag()
    results = []
    for epoch in range(start_epoch + 1, epochs + 1):
        tr = engine.train_one_epoch(
            head, train_batches, criterion=criterion, optimizer=optimizer, scheduler=sched, scaler=scaler,
            device=device, amp=False, epoch=epoch, epochs=epochs, total_steps=steps,
            set_train_mode=lambda m: m.train(), timings=None, skipped=skipped, stop=never,
            log_interval_s=log_interval_s)
        va = None
        if valid_batches is not None:
            va = engine.evaluate(head, valid_batches, criterion=criterion, device=device, amp=False,
                                 epoch=epoch, total_steps=len(valid_batches), timings=None, skipped=skipped,
                                 stop=never, split="valid")
        result = HeadEpoch(epoch, tr.loss, tr.accuracy, va.loss if va else None, va.accuracy if va else None,
                           (epoch - 1) % train.num_views, tr.seconds, tr.images)
        results.append(result)
        if on_epoch_end is not None and on_epoch_end(result):
            break
    return results


def install_head(model: nn.Module, arch: str, head: nn.Module) -> nn.Module:
    """Put trained head weights into ``model``'s own head (a no-op when ``head`` *is* that module,
    as returned by ``split_backbone_head``). The model is then the normal full classifier."""
    own = getattr(model, head_name(arch))
    if own is not head:
        own.load_state_dict({k: v.to(next(own.parameters()).device) for k, v in head.state_dict().items()})
    return model
