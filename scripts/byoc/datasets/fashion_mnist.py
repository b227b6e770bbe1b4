"""Real images offline: Fashion-MNIST (Debian ``dataset-fashion-mnist``) as an ImageFolder tree.

The Debian package installs the original IDX files under ``/usr/share/datasets/fashion-mnist``.
:func:`export_imagefolder` samples a few images per class, upscales the 28x28 grayscale images to
``size`` pixels as RGB JPEGs and writes the dogImages layout the trainer reads::

    dest/train/001.T-shirt_top/0000.jpg ...   (from the IDX training set)
    dest/valid/...                             (from the IDX training set, disjoint from train)
    dest/test/...                              (from the IDX test set)

Used by the transfer-learning test and the offline pipeline (``byoc data --source fashion-mnist``).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from byoc.errors import ByocError
from container_train.contract import SPLITS

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")     # Debian's dataset-fashion-mnist
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def fashion_mnist_available(directory: Path = FASHION_MNIST_DIR) -> bool:
    return all((directory / f).is_file() for f in FASHION_MNIST_FILES)


class FashionMnistError(ByocError):
    pass


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array (uint8 images or labels)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise FashionMnistError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise FashionMnistError(f"{path} is truncated: expected {int(np.prod(shape))} values, got {array.size}")
    return array.reshape(shape)


def load(source_dir: Path = FASHION_MNIST_DIR, part: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28 uint8, labels N uint8) for ``part`` = ``train`` or ``t10k``."""
    images = source_dir / f"{part}-images-idx3-ubyte.gz"
    labels = source_dir / f"{part}-labels-idx1-ubyte.gz"
    for p in (images, labels):
        if not p.is_file():
            raise FashionMnistError(f"{p} not found: install the Debian package dataset-fashion-mnist")
    x, y = read_idx(images), read_idx(labels)
    if len(x) != len(y):
        raise FashionMnistError(f"{images.name} and {labels.name} disagree on the number of samples")
    return x, y


def folder_name(index: int, name: str) -> str:
    """``001.T-shirt_top`` (dogImages style; characters unsafe in paths replaced)."""
    safe = name.replace("/", "_").replace(" ", "_")
    return f"{index + 1:03d}.{safe}"


def _class_indices(classes) -> list[int]:
    if classes is None:
        return list(range(len(CLASS_NAMES)))
    out = []
    for c in classes:
        if isinstance(c, int | np.integer):
            if not 0 <= int(c) < len(CLASS_NAMES):
                raise FashionMnistError(f"class index {c} out of range 0..{len(CLASS_NAMES) - 1}")
            out.append(int(c))
        elif c in CLASS_NAMES:
            out.append(CLASS_NAMES.index(c))
        else:
            raise FashionMnistError(f"unknown Fashion-MNIST class {c!r}; known: {', '.join(CLASS_NAMES)}")
    if len(set(out)) != len(out):
        raise FashionMnistError("classes must not repeat")
    return out


def export_imagefolder(dest: str | Path, classes=None, per_class: int | dict[str, int] = 40, size: int = 64,
                       seed: int = 0, source_dir: Path = FASHION_MNIST_DIR) -> Path:
    """Write ``per_class`` images per class and split (an int, or a dict by split name) under ``dest``.

    ``classes``: Fashion-MNIST class names or indices (default: all 10), in folder order.
    """
    dest = Path(dest)
    counts = per_class if isinstance(per_class, dict) else {s: per_class for s in SPLITS}
    chosen = _class_indices(classes)
    rng = np.random.default_rng(seed)
    train_x, train_y = load(source_dir, "train")
    test_x, test_y = load(source_dir, "t10k")
    for order, cls in enumerate(chosen):
        folder = folder_name(order, CLASS_NAMES[cls])
        pool = rng.permutation(np.flatnonzero(train_y == cls))
        n_train, n_valid = counts.get("train", 0), counts.get("valid", 0)
        if n_train + n_valid > len(pool):
            raise FashionMnistError(f"asked for {n_train + n_valid} train+valid images of {CLASS_NAMES[cls]}, "
                                    f"only {len(pool)} exist")
        picks = {"train": (train_x, pool[:n_train]), "valid": (train_x, pool[n_train:n_train + n_valid]),
                 "test": (test_x, rng.permutation(np.flatnonzero(test_y == cls))[:counts.get("test", 0)])}
        for split, (images, idx) in picks.items():
            out = dest / split / folder
            out.mkdir(parents=True, exist_ok=True)
            for k, i in enumerate(idx):
                img = Image.fromarray(images[i]).resize((size, size), Image.BICUBIC)
                img.convert("RGB").save(out / f"{k:04d}.jpg", quality=92)
    return dest
