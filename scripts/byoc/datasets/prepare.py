"""Prepare an ImageFolder dataset (``train/ valid/ test/``, one folder per class) for training.

Sources, best first for the offline demo:

* ``dogimages``: Udacity's dogImages.zip (133 breeds, ~1.1 GB) downloaded from its public URL, with
  a progress bar and resume (an interrupted download continues with an HTTP Range request);
* a folder you already have, validated in place;
* ``fashion-mnist``: real images (10 clothing classes) converted from Debian's
  ``dataset-fashion-mnist`` package, so the pipeline runs with no network at all;
* ``synthetic``: generated shapes, only when even Fashion-MNIST is missing.

``auto`` picks the best available offline source and says which and why.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from byoc.datasets.fashion_mnist import FASHION_MNIST_DIR, export_imagefolder, fashion_mnist_available
from byoc.datasets.synthetic import make_dataset
from byoc.errors import ByocError
from byoc_common import durable
from container_train.contract import IMAGE_SUFFIXES, SPLIT_FOLDER_ALIASES, SPLITS

DOGIMAGES_URL = "https://s3-us-west-1.amazonaws.com/udacity-aind/dog-project/dogImages.zip"
SOURCES = ("auto", "dogimages", "fashion-mnist", "synthetic")

Progress = Callable[[int, int | None], None]  # (bytes or items done, total or None)


class DatasetError(ByocError):
    """The dataset is missing, malformed or cannot be prepared; the message says what to do."""


@dataclass
class DatasetSummary:
    root: Path
    source: str
    classes: list[str]
    counts: dict[str, int] = field(default_factory=dict)   # images per split
    note: str = ""
    location: str = ""      # where jobs read it: the folder, or its S3 copy (set by the backend)

    def describe(self) -> str:
        per = ", ".join(f"{s} {n}" for s, n in self.counts.items())
        return f"{self.source}: {len(self.classes)} classes ({per} images) at {self.root}"


# ---- validation ---------------------------------------------------------------------------------

def _images_in(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def _split_folder(root: Path, split: str) -> Path | None:
    """``root``'s folder for ``split`` under any name the trainer accepts (``valid/``, ``validation/``,
    ``val/``: ``container_train.contract.SPLIT_FOLDER_ALIASES``)."""
    return next((root / n for n in SPLIT_FOLDER_ALIASES[split] if (root / n).is_dir()), None)


def validate_imagefolder(root: str | os.PathLike, source: str = "folder",
                         optional: tuple[str, ...] = ()) -> DatasetSummary:
    """Check the dogImages layout: ``train/ valid/ test/`` with the same class folders, none empty.

    ``byoc data`` checks a folder with this, and ``byoc train`` / ``byoc tune`` check theirs with it
    before a job starts (``optional=("test",)``: the trainer skips a missing test split), so a
    malformed dataset gets the same message wherever it is given."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    folders = {s: _split_folder(root, s) for s in SPLITS}
    missing = [s for s in SPLITS if folders[s] is None and s not in optional]
    if missing:
        raise DatasetError(f"{root} is not an ImageFolder dataset: missing {', '.join(s + '/' for s in missing)} "
                           f"(expected train/ valid/ test/, each with one folder per class)")
    present = {s: f for s, f in folders.items() if f is not None}
    classes_by_split = {s: sorted(d.name for d in f.iterdir() if d.is_dir()) for s, f in present.items()}
    reference = classes_by_split["train"]
    if len(reference) < 2:
        raise DatasetError(f"{present['train']} must hold at least 2 class folders, found {len(reference)}")
    for split in present:
        if classes_by_split[split] != reference:
            only_train = sorted(set(reference) - set(classes_by_split[split]))
            extra = sorted(set(classes_by_split[split]) - set(reference))
            raise DatasetError(f"class folders differ between train/ and {present[split].name}/: "
                               f"missing in {present[split].name}/: {only_train[:5]}, extra: {extra[:5]} "
                               f"(each split needs the same class folders)")
    counts = {}
    for split, folder in present.items():
        total = 0
        for cls in reference:
            n = len(_images_in(folder / cls))
            if n == 0 and split == "train":
                raise DatasetError(f"{folder / cls} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            total += n
        if total == 0:
            raise DatasetError(f"{folder} holds no images")
        counts[split] = total
    return DatasetSummary(root=root, source=source, classes=reference, counts=counts)


# ---- dogImages download -------------------------------------------------------------------------

def download(url: str, dest: str | os.PathLike, on_progress: Progress | None = None,
             chunk_size: int = 1 << 16, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest``; an interrupted download resumes from ``dest + '.part'``.

    The partial file is renamed to ``dest`` only once its size matches the server's length, so a
    half-written file is never mistaken for a finished one.
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        resp = requests.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.RequestException as e:
        raise DatasetError(f"cannot download {url}: {e}. Re-run the same command to resume, or pass "
                           f"--source <folder> with the dataset already unpacked") from e
    with resp:
        if resp.status_code == 416:  # asked past the end: the part file is already complete
            total = have
        elif resp.status_code == 206:
            total = have + int(resp.headers.get("Content-Length", 0)) if "Content-Length" in resp.headers else None
        elif resp.status_code == 200:
            have = 0  # server ignored the Range header: start again
            total = int(resp.headers["Content-Length"]) if "Content-Length" in resp.headers else None
        else:
            raise DatasetError(f"downloading {url} failed: HTTP {resp.status_code}")
        if resp.status_code != 416:
            with open(part, "ab" if have else "wb") as fh:
                done = have
                try:
                    for chunk in resp.iter_content(chunk_size):
                        fh.write(chunk)
                        done += len(chunk)
                        if on_progress:
                            on_progress(done, total)
                except requests.RequestException as e:
                    raise DatasetError(f"download of {url} interrupted at {done} bytes ({e}); "
                                       f"re-run the same command to resume from there") from e
    size = part.stat().st_size
    if total is not None and size != total:
        raise DatasetError(f"download of {url} stopped at {size} of {total} bytes; re-run to resume")
    return durable.publish(part, dest)


def safe_extract_zip(zip_path: str | os.PathLike, dest: str | os.PathLike,
                     on_progress: Progress | None = None) -> Path:
    """Unzip, refusing members that would land outside ``dest``."""
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        raise DatasetError(f"{zip_path} is not a valid zip file ({e}); delete it and download again") from e
    with zf:
        members = zf.infolist()
        for i, m in enumerate(members):
            target = (dest / m.filename).resolve()
            if not target.is_relative_to(dest):
                raise DatasetError(f"{zip_path}: member {m.filename!r} would extract outside {dest}")
            zf.extract(m, dest)
            if on_progress:
                on_progress(i + 1, len(members))
    return dest


def find_imagefolder_root(folder: Path) -> Path:
    """The folder holding ``train/ valid/ test/`` (the zip wraps them in ``dogImages/``)."""
    for candidate in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        if all((candidate / s).is_dir() for s in SPLITS):
            return candidate
    raise DatasetError(f"no train/ valid/ test/ folders found in {folder}")


def prepare_dogimages(dest: str | os.PathLike, url: str = DOGIMAGES_URL, on_download: Progress | None = None,
                      on_extract: Progress | None = None) -> DatasetSummary:
    """Download (resumable), unzip and validate dogImages under ``dest``."""
    dest = Path(dest)
    done_marker = dest / ".extracted"
    if not done_marker.exists():
        zip_path = download(url, dest / "dogImages.zip", on_download)
        safe_extract_zip(zip_path, dest / "extracted", on_extract)
        done_marker.write_text(url + "\n")
    summary = validate_imagefolder(find_imagefolder_root(dest / "extracted"), source="dogimages")
    return summary


# ---- offline demo sources -----------------------------------------------------------------------

def prepare_fashion_mnist(dest: str | os.PathLike, per_class: int | dict[str, int] = 60, size: int = 64,
                          classes: list[str] | None = None, seed: int = 0) -> DatasetSummary:
    """Real Fashion-MNIST images converted to the dogImages layout (``byoc.datasets.fashion_mnist``)."""
    if not fashion_mnist_available():
        raise DatasetError(f"Fashion-MNIST is not installed at {FASHION_MNIST_DIR}: "
                           f"`sudo apt-get install dataset-fashion-mnist` (or use --source synthetic)")

    dest = Path(dest)
    _build_once(dest, lambda: export_imagefolder(dest, classes=classes, per_class=per_class, size=size,
                                                 seed=seed))
    return validate_imagefolder(dest, source="fashion-mnist")


def prepare_synthetic(dest: str | os.PathLike, num_classes: int = 4, per_class: int | dict[str, int] = 12,
                      size: int = 64, seed: int = 0) -> DatasetSummary:

    dest = Path(dest)
    _build_once(dest, lambda: make_dataset(dest, num_classes=num_classes, per_class=per_class, size=size,
                                           seed=seed))
    return validate_imagefolder(dest, source="synthetic")


COMPLETE_MARKER = ".complete"      # the dataset in this folder is finished
BUILDING_MARKER = ".byoc-building"  # byoc data is (or was, when interrupted) writing this folder


def _build_once(dest: Path, build) -> None:
    """Run ``build`` into ``dest`` unless a previous run finished it (``.complete``).

    ``dest`` may be missing or empty; a folder an interrupted run left (its ``.byoc-building``
    marker, written before anything else) is emptied and made again. Any other folder is refused
    and left as it is: ``--dest`` pointing at the user's own files must never delete them."""
    if (dest / COMPLETE_MARKER).exists():
        return
    if dest.exists() and not dest.is_dir():
        raise DatasetError(f"--dest {dest} exists and is not a folder")
    if dest.is_dir() and (dest / BUILDING_MARKER).exists():
        for child in dest.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    elif dest.is_dir() and any(dest.iterdir()):
        raise DatasetError(f"--dest {dest} already holds files that `byoc data` did not write (no "
                           f"{COMPLETE_MARKER} or {BUILDING_MARKER} marker), so nothing was changed: pass a "
                           f"new or empty --dest, or use that folder as the dataset with --source {dest}")
    dest.mkdir(parents=True, exist_ok=True)
    (dest / BUILDING_MARKER).write_text("byoc data is writing this folder\n")
    build()
    (dest / COMPLETE_MARKER).write_text("ok\n")
    (dest / BUILDING_MARKER).unlink()


def prepare(source: str, dest: str | os.PathLike, per_class: int | dict[str, int] = 60, size: int = 64,
            num_classes: int | None = None, seed: int = 0, url: str = DOGIMAGES_URL,
            on_download: Progress | None = None) -> DatasetSummary:
    """Prepare ``source`` (one of :data:`SOURCES` or an existing folder) and validate it.

    For ``fashion-mnist``/``synthetic``: ``per_class`` images per class per split, ``size`` pixels,
    ``num_classes`` classes (Fashion-MNIST: the first N of its 10; synthetic default 4).
    """
    dest = Path(dest)
    if source == "auto":
        if fashion_mnist_available():
            s = prepare(source="fashion-mnist", dest=dest, per_class=per_class, size=size,
                        num_classes=num_classes, seed=seed)
            s.note = f"auto: Fashion-MNIST found at {FASHION_MNIST_DIR}"
            return s
        s = prepare(source="synthetic", dest=dest, per_class=per_class, size=size, num_classes=num_classes, seed=seed)
        s.note = (f"auto: Fashion-MNIST not installed at {FASHION_MNIST_DIR}, so the generated shapes set "
                  f"was used (install dataset-fashion-mnist for real images)")
        return s
    if source == "dogimages":
        return prepare_dogimages(dest, url=url, on_download=on_download)
    if source == "fashion-mnist":
        classes = list(range(num_classes)) if num_classes else None  # the first N of its 10 classes
        return prepare_fashion_mnist(dest, per_class=per_class, size=size, classes=classes, seed=seed)
    if source == "synthetic":
        return prepare_synthetic(dest, num_classes=num_classes or 4, per_class=per_class, size=size, seed=seed)
    folder = Path(source)
    if folder.is_dir():
        return validate_imagefolder(folder, source="folder")
    raise DatasetError(f"unknown source {source!r}: use one of {', '.join(SOURCES)} or an existing folder")
