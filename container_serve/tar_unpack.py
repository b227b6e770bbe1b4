"""Unpack a flat tar archive of named regular files, checking each member as it is read.

The refusals are the ones ``tarfile``'s ``filter="data"`` makes and more (absolute paths, ``..``, links,
devices, FIFOs, sparse files, anything but a top-level folder entry and the allowed file names), done
here and not by ``tarfile``: the extraction filters exist only from Python 3.11.4 (PEP 706), and Debian
bookworm's ``python3`` is 3.11.2, where ``extractall(..., filter="data")`` is a ``TypeError`` for every
archive. Each member is checked the moment its header is read and written by this code (``O_EXCL |
O_NOFOLLOW``, mode 0644), so an archive of half a million members is refused after the first few headers,
not after listing them all (``getmembers()`` took 24 s and 887 MB for one). Nothing here imports torch,
so the same code runs, and is tested, on the oldest Python the project allows
(``tests/containers/test_containers_archive_python.py``).
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
from pathlib import Path, PurePosixPath

TOP_LEVEL = ("", ".")  # the archive's own folder entry, as `tar -C dir .` writes it
COPY_CHUNK = 1024 * 1024


class UnsafeArchiveError(ValueError):
    """The archive holds a member that would escape the destination or is not a plain file."""


def check_member(member: tarfile.TarInfo, allowed: tuple[str, ...]) -> str | None:
    """The file name to write for ``member``, None for the archive's own folder entry; raises
    :class:`UnsafeArchiveError` for anything else."""
    name = member.name
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path")
    if ".." in path.parts:
        raise UnsafeArchiveError(f"archive member {name!r} escapes the destination ('..')")
    if member.issym() or member.islnk():
        raise UnsafeArchiveError(f"archive member {name!r} is a link (to {member.linkname!r}); links are refused")
    if member.issparse() or not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"archive member {name!r} is not a regular file or directory")
    relative = path.as_posix().removeprefix("./")
    if member.isdir() and relative in TOP_LEVEL:
        return None
    if not member.isfile() or relative not in allowed:
        raise UnsafeArchiveError(f"archive member {name!r} is not part of a model artifact "
                                 f"(a model.tar.gz holds only {', '.join(allowed)})")
    return relative


def unpack_flat(archive: str | os.PathLike, dest: str | os.PathLike, allowed: tuple[str, ...],
                max_bytes: int) -> list[str]:
    """Unpack ``archive`` into ``dest`` (absent or empty; created), each of the ``allowed`` file names at
    most once, ``max_bytes`` in all; returns the names written. On any refusal or error nothing it wrote
    stays behind (and ``dest`` is removed if this call created it)."""
    dest = Path(dest)
    created = not dest.exists()
    if not created and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty; unpack into a new folder")
    dest.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            _unpack_members(tar, dest, allowed, max_bytes, written)
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        else:
            for name in written:
                (dest / name).unlink(missing_ok=True)
        raise
    return written


def _unpack_members(tar: tarfile.TarFile, dest: Path, allowed: tuple[str, ...], max_bytes: int,
                    written: list[str]) -> None:
    max_members, total = len(allowed) + 1, 0  # the files and one folder entry
    for count, member in enumerate(tar, start=1):  # tarfile reads one header per step
        if count > max_members:
            raise UnsafeArchiveError(f"archive holds more than {max_members} members; a flat archive of "
                                     f"{', '.join(allowed)} has at most that many")
        name = check_member(member, allowed)
        if name is None:
            continue
        if name in written:
            raise UnsafeArchiveError(f"archive holds {name!r} twice")
        total += member.size
        if total > max_bytes:
            raise UnsafeArchiveError(f"archive unpacks to more than {max_bytes} bytes")
        written.append(name)
        _write_member(tar, member, dest / name)


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> None:
    source = tar.extractfile(member)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        remaining = member.size
        while remaining > 0:
            chunk = source.read(min(COPY_CHUNK, remaining))
            if not chunk:
                raise tarfile.ReadError(f"archive member {member.name!r} ends early")
            out.write(chunk)
            remaining -= len(chunk)
