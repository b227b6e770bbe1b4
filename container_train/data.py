"""Image data from the job's channels: layout discovery, checks, datasets and loaders.

Two channel layouts are accepted:

* separate channels ``training``, ``validation`` and (optional) ``test``, each an ImageFolder
  tree ``<channel>/<class folder>/<image>``;
* one ``training`` channel holding ``train/``, ``valid/`` (or ``validation/``) and ``test/``
  sub-folders, as the dogImages archive unpacks.

Class names come from the folder names with a numeric prefix dropped (``001.Affenpinscher`` ->
``Affenpinscher``); the class order is the sorted folder order, the same in every split.

Unreadable images: a file with an image extension that PIL cannot decode (truncated JPEG, a text
file named ``.jpg``) is skipped where it is loaded. :class:`ImageFolderDataset` returns ``None``
for it and :func:`collate_skipping` drops it from the batch and passes its path on, so the
training loop counts and logs skipped files even when DataLoader workers run in other processes.
No up-front scan is needed, so an 8k-image dataset starts training at once.

Loaders: :func:`make_loader` runs every loader the way a :class:`~container_train.loader_limits.LoaderPlan`
says (workers, prefetch depth, timeout; see :mod:`container_train.loader_limits` for why) and
returns it guarded, so a dead or stuck worker fails the job with a reason instead of hanging it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, get_worker_info
from torchvision.transforms import v2 as T

from byoc_common.artifact import ModelConfig
from byoc_common.preprocessing import to_rgb
from container_train.contract import IMAGE_SUFFIXES, SPLIT_FOLDER_ALIASES, class_name_from_folder, quote_path
from container_train.errors import DataError
from container_train.loader_limits import GuardedLoader, LoaderPlan

log = logging.getLogger(__name__)

def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


@dataclass(frozen=True)
class Split:
    """One ImageFolder split: its root, class folders (sorted) and (path, label) samples."""
    name: str
    root: Path
    class_folders: tuple[str, ...]
    samples: tuple[tuple[Path, int], ...]

    @property
    def class_names(self) -> list[str]:
        return [class_name_from_folder(f) for f in self.class_folders]


def scan_split(name: str, root: Path) -> Split:
    """List class folders that hold at least one image file, and their images."""
    if not root.is_dir():
        raise DataError(f"{name} data not found: {quote_path(root)} is not a directory")
    folders: list[str] = []
    files_by_folder: dict[str, list[Path]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(p for p in d.rglob("*") if _is_image(p))
        if images:
            folders.append(d.name)
            files_by_folder[d.name] = images
    if not folders:
        loose = [p.name for p in root.iterdir() if _is_image(p)][:3]
        hint = (f" (found images directly in it, e.g. {', '.join(loose)}: put each class in its own folder)"
                if loose else "")
        raise DataError(
            f"{name} split has no images: {quote_path(root)} must contain one folder per class with "
            f"{'/'.join(e.lstrip('.') for e in IMAGE_SUFFIXES[:3])} files inside{hint}"
        )
    samples = tuple((path, label) for label, f in enumerate(folders) for path in files_by_folder[f])
    return Split(name, root, tuple(folders), samples)


def _find_subfolder(root: Path, names: tuple[str, ...]) -> Path | None:
    for n in names:
        if (root / n).is_dir():
            return root / n
    return None


def resolve_split_roots(channels: dict[str, Path]) -> dict[str, Path]:
    """Channel paths -> {"train": path, "valid": path, "test": path (optional)}."""
    training = channels.get("training")
    if training is None:
        raise DataError("the 'training' channel is missing: give the job a training input "
                        "(an ImageFolder tree, or a folder holding train/ valid/ test/)")
    if not training.is_dir() or not any(training.iterdir()):
        raise DataError(f"the 'training' channel is empty: nothing found in {quote_path(training)}")
    nested_train = _find_subfolder(training, SPLIT_FOLDER_ALIASES["train"])
    if nested_train is not None and any(p.is_dir() for p in nested_train.iterdir()):
        roots = {"train": nested_train}
        for split in ("valid", "test"):
            sub = _find_subfolder(training, SPLIT_FOLDER_ALIASES[split])
            if sub is not None:
                roots[split] = sub
    else:
        roots = {"train": training}
    for split, channel in (("valid", "validation"), ("test", "test")):
        path = channels.get(channel)
        if path is not None:
            if not path.is_dir() or not any(path.iterdir()):
                raise DataError(f"the '{channel}' channel is empty: nothing found in {quote_path(path)}")
            roots[split] = path   # an explicit channel wins over a nested folder
    if "valid" not in roots:
        raise DataError("no validation data: give the job a 'validation' channel, or a 'training' "
                        "channel holding train/ and valid/ folders")
    return roots


def check_same_classes(splits: dict[str, Split]) -> None:
    reference = splits["train"]
    expected = set(reference.class_folders)
    for split in splits.values():
        got = set(split.class_folders)
        if got != expected:
            parts = []
            if expected - got:
                parts.append(f"missing from {split.name}: {', '.join(sorted(expected - got))}")
            if got - expected:
                parts.append(f"only in {split.name}: {', '.join(sorted(got - expected))}")
            raise DataError(
                "class folders differ between train and " + split.name + " (" + "; ".join(parts)
                + "); every split needs the same class folders, each with at least one image"
            )


def load_splits(channels: dict[str, Path]) -> dict[str, Split]:
    """Find and check the train/valid(/test) splits. Raises :class:`DataError` with a clear message."""
    roots = resolve_split_roots(channels)
    splits = {name: scan_split(name, root) for name, root in roots.items()}
    if len(splits["train"].class_folders) < 2:
        raise DataError(f"train split has {len(splits['train'].class_folders)} class folder(s) in "
                        f"{quote_path(splits['train'].root)}; a classifier needs at least 2")
    check_same_classes(splits)
    names = splits["train"].class_names
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"two class folders map to the same class name: {', '.join(duplicates)}")
    return splits


# ---- transforms ---------------------------------------------------------------------------------

def train_transform(config: ModelConfig) -> T.Compose:
    """Augmentation for training: random crop of most of the image, horizontal flip."""
    return T.Compose([
        T.ToImage(),
        T.RandomResizedCrop(config.image_size, scale=(0.25, 1.0), antialias=True),
        T.RandomHorizontalFlip(),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean=list(config.mean), std=list(config.std)),
    ])


# ---- dataset and loader -------------------------------------------------------------------------

class ImageFolderDataset(Dataset):
    """``(tensor, label, path)`` per sample, or ``None`` when the file cannot be decoded."""

    def __init__(self, split: Split, transform):
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split.samples)

    def __getitem__(self, index: int):
        path, label = self.split.samples[index]
        try:
            with Image.open(path) as img:
                img.load()    # decode now: truncated files fail here, not later
                rgb = to_rgb(img)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            return None, str(path), f"{type(e).__name__}: {e}"
        return (self.transform(rgb), label), str(path), None


@dataclass
class Batch:
    images: torch.Tensor
    labels: torch.Tensor
    skipped: list[tuple[str, str]]   # (path, reason) of files in this batch that could not be read

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _in_worker_shared_memory(tensor: torch.Tensor) -> torch.Tensor:
    """In a DataLoader worker, move ``tensor`` to shared memory now (as PyTorch's default_collate
    allocates its batches): a full /dev/shm then raises here, in the worker's own loop, and reaches
    the trainer, instead of failing later in the queue's feeder thread, which drops the batch."""
    return tensor.share_memory_() if get_worker_info() is not None else tensor


def collate_skipping(items) -> Batch:
    good = [sample for sample, _, _ in items if sample is not None]
    skipped = [(path, reason) for sample, path, reason in items if sample is None]
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), skipped)
    images = _in_worker_shared_memory(torch.stack([g[0] for g in good]))
    labels = _in_worker_shared_memory(torch.tensor([g[1] for g in good], dtype=torch.long))
    return Batch(images, labels, skipped)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, plan: LoaderPlan, seed: int,
                pin_memory: bool = False, sampler=None) -> GuardedLoader:
    """A DataLoader of :class:`Batch` over ``dataset`` (items as :class:`ImageFolderDataset` gives
    them), run as ``plan`` says, seeded by ``seed``; a ``sampler`` (a distributed job's shard,
    :func:`container_train.distributed.sampler`) replaces ``shuffle``."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                        collate_fn=collate_skipping,
                        pin_memory=pin_memory, generator=generator, drop_last=False, **plan.loader_kwargs())
    return GuardedLoader(loader, plan)


class SkipCounter:
    """Collects unreadable files across batches and epochs; logs each file once."""

    def __init__(self, max_logged: int = 20):
        self.files: dict[str, str] = {}
        self.max_logged = max_logged

    def add(self, skipped: list[tuple[str, str]]) -> None:
        for path, reason in skipped:
            if path not in self.files:
                self.files[path] = reason
                if len(self.files) <= self.max_logged:
                    log.warning("skipping unreadable image %s (%s)", quote_path(path), reason)
                elif len(self.files) == self.max_logged + 1:
                    log.warning("more unreadable images; not logging each one")

    @property
    def count(self) -> int:
        return len(self.files)
