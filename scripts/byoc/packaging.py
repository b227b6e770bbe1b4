"""``byoc package``: a trained model directory -> ``model.tar.gz`` as SageMaker expects it.

SageMaker unpacks ``ModelDataUrl`` into ``/opt/ml/model`` (single model) or under
``/opt/ml/models/`` (multi-model), so the archive is *flat*: the artifact files at the top level,
no enclosing folder, and only the files of the artifact contract
(:data:`byoc_common.artifact.ARTIFACT_FILES`), never checkpoints or logs. The archive format itself
is defined once, next to the code that unpacks it (:mod:`container_serve.model_archive`).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from byoc_common import durable
from container_serve.model_archive import create_model_archive


def package_model(model_dir: str | os.PathLike, output: str | os.PathLike | None = None) -> Path:
    """Validate ``model_dir`` and write the archive (default ``<model_dir>/../model.tar.gz``).

    Raises :class:`byoc_common.artifact.ModelArtifactError` naming what is missing."""
    model_dir = Path(model_dir)
    out = Path(output) if output else model_dir.parent / "model.tar.gz"
    return create_model_archive(model_dir, out)   # written durably


def package_job_output(model_dir: str | os.PathLike, output: str | os.PathLike) -> Path:
    """What SageMaker does with a training job's ``/opt/ml/model`` when the job ends: every file in it,
    flat, in ``model.tar.gz`` (whatever the job wrote; :func:`package_model` is for model artifacts).

    gzip level 1: a feature extraction's output is float32 tensors, which no level shrinks much (the demo's 60 MB ->
    31 MB at 1 in 1.1 s, 28 MB at 9), and level 9 took 25 s of the demo pipeline's tuning step (issue 25)."""
    model_dir, out = Path(model_dir), Path(output)

    def write(f) -> None:
        with tarfile.open(fileobj=f, mode="w:gz", compresslevel=1) as tar:
            for path in sorted(model_dir.iterdir()):
                tar.add(path, arcname=path.name)

    return durable.write_with(out, write)


def archive_members(path: str | os.PathLike) -> list[str]:
    with tarfile.open(path, "r:gz") as tar:
        return sorted(tar.getnames())
