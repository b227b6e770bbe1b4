"""``model.tar.gz`` <-> model directories, and placing models under a model root the way SageMaker does.

A ``model.tar.gz`` is the trainer's model directory tarred flat (``model.pth``, ``classes.json``,
``model_config.json`` at the top level; see :mod:`byoc_common.artifact`), and nothing else. The server
ignores inert extra files beside them but refuses whatever could choose code or a location
(:mod:`container_serve.model_layout` states the rule), because multi-model-server would take a
``MAR-INF/MANIFEST.json`` or a ``.py`` file next to the weights as code to run. Our own archives carry
nothing to ignore: :func:`create_model_archive` writes only the artifact files, and unpacking
(:mod:`container_serve.tar_unpack`, on every Python the project allows) refuses an archive with any other
member, more members than the artifact has, and every member that could write outside the destination or
is not plain data: absolute paths, ``..`` components, symbolic and hard links, devices and FIFOs. A model
directory given instead of an archive is copied file by file, the artifact files only. SageMaker itself
unpacks a multi-model endpoint's models to ``/opt/ml/models/<id>/model/``; locally
(``byoc.local.endpoint``, the CLI) :func:`deploy_model` puts a model at ``<model root>/<name>/``.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from byoc_common import durable
from byoc_common.artifact import ARTIFACT_FILES, read_model_metadata
from container_serve.management import check_model_name
from container_serve.tar_unpack import UnsafeArchiveError, unpack_flat

MAX_UNPACKED_BYTES = 4 * 1024**3


def extract_model_archive(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack ``archive`` into ``dest`` (absent or empty; created), checking each member as it is read,
    then check that the result is a loadable model artifact
    (:class:`byoc_common.artifact.ModelArtifactError` otherwise)."""
    dest = Path(dest)
    unpack_flat(archive, dest, ARTIFACT_FILES, MAX_UNPACKED_BYTES)
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
