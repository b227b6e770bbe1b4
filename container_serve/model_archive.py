"""``model.tar.gz`` <-> model directories, and placing models under a model root the way SageMaker does.

A ``model.tar.gz`` is the trainer's model directory tarred flat (``model.pth``, ``classes.json``,
``model_config.json`` at the top level; see :mod:`byoc_common.artifact`), and nothing else: the server
refuses a model directory holding anything beyond those files (:mod:`container_serve.model_layout`),
because multi-model-server would take a ``MAR-INF/MANIFEST.json`` or a ``.py`` file next to the weights
as code to run. So :func:`create_model_archive` writes only the artifact files, and unpacking refuses an
archive with any other member, and every member that could write outside the destination or is not
plain data: absolute paths, ``..`` components, symbolic and hard links, devices and FIFOs. A model
directory given instead of an archive is copied file by file, the artifact files only. SageMaker itself
unpacks a multi-model endpoint's models to ``/opt/ml/models/<id>/model/``; locally
(``byoc.local.endpoint``, the CLI) :func:`deploy_model` puts a model at ``<model root>/<name>/``.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from byoc_common import durable
from byoc_common.artifact import ARTIFACT_FILES, read_model_metadata
from container_serve.management import check_model_name

MAX_UNPACKED_BYTES = 4 * 1024**3
TOP_LEVEL = ("", ".")  # the archive's own folder entry, as `tar -C dir .` writes it


class UnsafeArchiveError(ValueError):
    """The archive holds a member that would escape the destination or is not a plain file."""


def check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path")
    if ".." in path.parts:
        raise UnsafeArchiveError(f"archive member {name!r} escapes the destination ('..')")
    if member.issym() or member.islnk():
        raise UnsafeArchiveError(f"archive member {name!r} is a link (to {member.linkname!r}); links are refused")
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"archive member {name!r} is not a regular file or directory")
    relative = path.as_posix().removeprefix("./")
    if member.isdir() and relative in TOP_LEVEL:
        return
    if not member.isfile() or relative not in ARTIFACT_FILES:
        raise UnsafeArchiveError(f"archive member {name!r} is not part of a model artifact "
                                 f"(a model.tar.gz holds only {', '.join(ARTIFACT_FILES)})")


def extract_model_archive(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack ``archive`` into ``dest`` (created) after checking every member, then check that the result
    is a loadable model artifact (:class:`byoc_common.artifact.ModelArtifactError` otherwise)."""
    dest = Path(dest)
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        total = 0
        for member in members:
            check_member(member)
            total += member.size
        if total > MAX_UNPACKED_BYTES:
            raise UnsafeArchiveError(f"archive unpacks to {total} bytes, over {MAX_UNPACKED_BYTES}")
        dest.mkdir(parents=True, exist_ok=True)
        # The "data" filter re-checks the same rules inside tarfile and drops permission bits.
        tar.extractall(dest, members=members, filter="data")
    read_model_metadata(dest)
    return dest


def create_model_archive(model_dir: str | os.PathLike, archive: str | os.PathLike) -> Path:
    """Tar a model directory flat, the layout SageMaker and :func:`extract_model_archive` expect."""
    model_dir, archive = Path(model_dir), Path(archive)
    read_model_metadata(model_dir)
    archive.parent.mkdir(parents=True, exist_ok=True)

    def write(f) -> None:
        with tarfile.open(fileobj=f, mode="w:gz") as tar:
            for name in ARTIFACT_FILES:
                tar.add(model_dir / name, arcname=name)

    durable.write_with(archive, write)
    return archive


def deploy_model(source: str | os.PathLike, model_root: str | os.PathLike, name: str,
                 overwrite: bool = False) -> Path:
    """Place a model (a ``model.tar.gz`` or a model directory) at ``<model_root>/<name>/``.

    Returns that directory: the ``url`` to pass to ``POST /models`` when the server sees the same
    filesystem (process mode)."""
    check_model_name(name, error=UnsafeArchiveError)   # safe as a folder under the model root
    source, root = Path(source), Path(model_root)
    target = root / name
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists (pass overwrite=True to replace it)")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".deploy-", dir=root))   # not the name: 250 chars + 9 > NAME_MAX
    staging.chmod(0o755)
    try:
        if source.is_dir():
            read_model_metadata(source)
            for f in ARTIFACT_FILES:  # copy only the artifact, never links or stray files
                shutil.copyfile(source / f, staging / f, follow_symlinks=True)
        else:
            extract_model_archive(source, staging)
        durable.replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
