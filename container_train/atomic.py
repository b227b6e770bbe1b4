"""Files that are either complete or absent: written beside their target, fsynced, renamed over it.

Everything the trainer leaves for someone else goes through :func:`write_atomically`: the failure
file (SageMaker's ``FailureReason``; the toolkit writes its own only when none exists, so an empty
file left by a full disk would hide both), ``metrics.json``, checkpoints (SageMaker syncs the
checkpoint dir to S3 while the job runs, and a spot restart must never find half a file) and the
feature cache. A kill or a full disk during the write leaves the previous content in place.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``
    (and fsync the folder, so the rename survives a crash). Raises what the write raises (OSError
    on a full disk); the temporary file never stays behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def fsync_dir(folder: Path) -> None:
    """Persist renames in ``folder`` (best effort: some filesystems refuse to fsync a directory)."""
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


def _finite_or_none(x):
    """Strict JSON: NaN/inf (e.g. a skipped evaluation) become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite_or_none(v) for v in x]
    return x


def write_json_atomically(path: Path, content) -> Path:
    """``content`` as strict, indented JSON (non-finite floats as null), written atomically."""
    data = json.dumps(_finite_or_none(content), indent=1, allow_nan=False).encode()
    return write_atomically(path, lambda f: f.write(data))
