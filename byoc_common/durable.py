"""Durable writes: after a crash, a file holds its old content or its new content, whole, never a mix.

Every file the project leaves for someone else to read goes through here: the model artifact,
checkpoints (SageMaker syncs the checkpoint folder to S3 while the job runs, and a spot restart must
never find half a file), the failure file and ``metrics.json``, the feature cache, the serving image's
load reports and MMS plugin jar, and on the operator side ``model.tar.gz``, pipeline state, the best
hyperparameters, the AWS resource manifest and finished downloads.

The one recipe (what SQLite and ``rename(2)``'s POSIX guarantee ask for):

1. write to a temporary file beside the target, ``.<name>.<pid>.<random>.tmp``: same folder, so the
   rename cannot cross filesystems; unique, so two writers of one target (concurrent first starts,
   tuning trials) never share it; hidden, so globbing readers skip it;
2. flush and ``fsync`` it, so its bytes are on disk before its name is;
3. ``os.replace`` it over the target (atomic: a reader sees the old file or the new one);
4. ``fsync`` the folder, so the rename itself survives a power cut.

A write that raises (a full disk, a failing serialiser) removes its temporary file and leaves the
target as it was. A process killed mid-write may leave a temporary file behind; no reader looks at it
and the next write picks a new name (``tests/common/test_durable.py`` kills a writer at each step).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

NAME_MAX = 255   # bytes in one path component (Linux)


def temporary_name(path: Path) -> Path:
    """A fresh, hidden name beside ``path``: ``.<name>.<pid>.<random>.tmp``, the name cut short where the
    whole would pass ``NAME_MAX`` (a 250-character model name is a valid target)."""
    suffix = f".{os.getpid()}.{secrets.token_hex(4)}.tmp"
    room = NAME_MAX - 1 - len(suffix)
    stem = path.name.encode()[:room].decode(errors="ignore")
    return path.with_name(f".{stem}{suffix}")


def _reserve(path: Path) -> tuple[Path, int]:
    """Create a temporary file beside ``path`` exclusively (mode 0o666 less the umask, as a plain
    ``open`` would give the target), returning its name and descriptor."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = temporary_name(path)
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Persist the renames in ``folder`` (best effort: some filesystems refuse to fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(done: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Move a finished file ``done`` (same folder or filesystem as ``path``) into place durably:
    fsync it, rename it over ``path``, fsync the folder. For files that are written in more than one
    go, such as a resumable download."""
    done, path = Path(done), Path(path)
    _fsync_file(done)
    os.replace(done, path)
    fsync_dir(path.parent)
    return path


def write_with(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a binary file that becomes ``path`` durably once it returns
    (``torch.save(obj, f)``, ``tarfile.open(fileobj=f, mode="w:gz")``...). Returns ``path``;
    raises what ``write`` raises, leaving ``path`` as it was."""
    path = Path(path)
    tmp, fd = _reserve(path)
    try:
        with open(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_to_path(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """For writers that take a file name, not a file: ``write(tmp)`` writes the file at ``tmp`` (it
    exists, empty, and may be replaced), which then becomes ``path`` durably."""
    path = Path(path)
    tmp, fd = _reserve(path)
    os.close(fd)
    try:
        write(tmp)
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return write_with(path, lambda f: f.write(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode())


def finite_or_none(value: Any) -> Any:
    """Strict JSON: NaN and infinities (an evaluation that was skipped) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def write_json(path: str | os.PathLike, content: Any, *, indent: int = 1,
               default: Callable[[Any], Any] | None = None) -> Path:
    """``content`` as strict, indented JSON (non-finite floats as null: a file others parse, browsers
    and ``jq`` included, must not hold ``NaN``), ending in a newline, written durably."""
    text = json.dumps(finite_or_none(content), indent=indent, allow_nan=False, default=default)
    return write_text(path, text + "\n")


def replace_dir(staging: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Put the finished folder ``staging`` (beside ``target``) in ``target``'s place.

    Its files are fsynced before the rename. A folder cannot be renamed over a non-empty one, so an
    existing ``target`` is first renamed aside (atomic) and removed once the new one is in place: a
    crash leaves ``target`` whole, old or new, or absent between the two renames, never half of one."""
    staging, target = Path(staging), Path(target)
    for f in staging.rglob("*"):
        if f.is_file() and not f.is_symlink():
            _fsync_file(f)
    fsync_dir(staging)
    old = None
    if target.exists():
        old = temporary_name(target)
        os.replace(target, old)
    os.replace(staging, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target
