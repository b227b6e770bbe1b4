"""What a model directory may hold before the server lets multi-model-server near it.

multi-model-server decides *which code runs* from the model directory itself: a
``MAR-INF/MANIFEST.json`` (or any ``MANIFEST.json`` below it) names a handler module and a runtime, and the
worker runs with the model directory both as its working directory and on ``PYTHONPATH``, ahead of
site-packages, so a ``torch.py`` or an ``mms/`` folder next to the weights would be imported instead of the
real package (MMS ``WorkerLifeCycle.getEnvString`` / ``startBackendServer``). A model is therefore
accepted only when its directory holds exactly the artifact files of :mod:`byoc_common.artifact_files`,
each a regular file (no symbolic links, no sub-folders, no hidden files), and lies under the model root
once every symbolic link on the way is resolved.

Torch-free on purpose: the gate runs it on every ``POST /models`` and the serve entry point on the
single-model directory, both before MMS starts a worker; the handler runs it again in the worker.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from byoc_common.artifact_files import ARTIFACT_FILES

MAX_ENTRIES_LISTED = 2 * len(ARTIFACT_FILES)


class ModelDirError(ValueError):
    """The directory is not something the server loads. ``status`` is the HTTP code to answer."""

    status = 400


class ModelOutsideRootError(ModelDirError):
    """The directory does not resolve to a place under the model root."""


class ModelDirNotFoundError(ModelDirError):
    status = 404


def check_inside_root(model_dir: str | os.PathLike, model_root: str | os.PathLike) -> Path:
    """Resolve ``model_dir`` (following symlinks) and refuse it unless it lies in ``model_root``."""
    resolved, root = Path(model_dir).resolve(), Path(model_root).resolve()
    if resolved != root and not resolved.is_relative_to(root):
        raise ModelOutsideRootError(f"model directory {model_dir} is outside the model root {root}; refused")
    return resolved


def check_model_dir(model_dir: str | os.PathLike, model_root: str | os.PathLike) -> Path:
    """The resolved model directory, or :class:`ModelDirError` saying what is wrong with it."""
    resolved = check_inside_root(model_dir, model_root)
    try:
        mode = os.stat(resolved).st_mode
    except FileNotFoundError as e:
        raise ModelDirNotFoundError(f"model directory {model_dir} does not exist") from e
    if not stat.S_ISDIR(mode):
        # MMS would unzip a file here as a .mar archive, with its own handler inside.
        raise ModelDirError(f"{model_dir} is not a directory; a model is a directory holding "
                            f"{', '.join(ARTIFACT_FILES)}")
    found: dict[str, os.DirEntry] = {}
    with os.scandir(resolved) as entries:
        for entry in entries:
            found[entry.name] = entry
            if len(found) > MAX_ENTRIES_LISTED:  # enough to refuse it; do not list a million files
                break
    extra = sorted(set(found) - set(ARTIFACT_FILES))
    if extra:
        shown = ", ".join(extra[:10]) + (f" and {len(extra) - 10} more" if len(extra) > 10 else "")
        raise ModelDirError(f"model directory {model_dir} holds more than the model artifact ({shown}); "
                            f"only {', '.join(ARTIFACT_FILES)} are accepted")
    missing = [name for name in ARTIFACT_FILES if name not in found]
    if missing:
        raise ModelDirError(f"model directory {model_dir} is not a model artifact: missing {', '.join(missing)}")
    links = [name for name, entry in found.items() if not entry.is_file(follow_symlinks=False)]
    if links:
        raise ModelDirError(f"model directory {model_dir}: {', '.join(sorted(links))} must be regular files "
                            "(symbolic links and other kinds are refused)")
    return resolved
