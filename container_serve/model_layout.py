"""What a model directory may hold before the server lets multi-model-server near it.

One rule, for the single-model endpoint (``/opt/ml/model``, checked by the serve entry point before Java
starts) and for every multi-model load (``POST /models``, checked by the gate), checked again by the
handler in the worker:

* the directory lies under the model root once every symbolic link on the way is resolved;
* it holds the artifact files of :mod:`byoc_common.artifact_files`, each a regular file;
* anything else in it is **ignored, with one log line**, when it is an inert regular file, and the load
  is **refused, with the reason**, when it could choose code or a location.

Why those refusals: multi-model-server decides *which code runs* from the model directory itself. A
``MAR-INF/MANIFEST.json``, or a ``MANIFEST.json`` (any case) at the top or one folder down, names a handler
module and a runtime (MMS ``ModelArchive.load``/``findFile``), and the worker runs with the model directory
as its working directory and first on ``PYTHONPATH``, ahead of site-packages (MMS
``WorkerLifeCycle.getEnvString``), so whatever Python can import from there replaces the real package:
a ``torch.py``, a ``torch.pyc``, a ``torch.cpython-311-x86_64-linux-gnu.so``, or a folder ``torch/`` (a
namespace package needs no ``__init__.py``). So these are refused:

* a ``MANIFEST.json`` file;
* a name ending in one of :func:`importlib.machinery.all_suffixes` (``.py``, ``.pyc``, ``.so``,
  ``.abi3.so``, the interpreter's own extension suffix): Python or native code;
* any sub-folder (a package, or ``MAR-INF/``), any symbolic link (one that leaves the root would let the
  directory choose a location; one inside it is never needed), device files, FIFOs and sockets.

``.pth`` files are not code here: Python runs them only from site directories, never from a
``PYTHONPATH`` entry, and the weights themselves are ``model.pth`` (read with ``weights_only=True``).

Inert extras are what SageMaker tooling leaves beside the artifact: the SageMaker Python SDK's local mode
extracts ``model.tar.gz`` into the folder that holds it and mounts that folder at ``/opt/ml/model``
(sagemaker-python-sdk ``sagemaker/local/image.py`` ``_prepare_serving_volumes``), so the server sees
``model.tar.gz`` (and, after ``estimator.fit``, ``output.tar.gz``) next to the three files.

Torch-free on purpose: the gate runs it on every ``POST /models``, in its event loop.
"""

from __future__ import annotations

import importlib.machinery
import logging
import os
import stat
from pathlib import Path

from byoc_common.artifact_files import ARTIFACT_FILES

logger = logging.getLogger(__name__)

# A model directory with more entries than this is refused without reading further: the check runs in
# the gate's event loop, and no artifact comes with a thousand extra files.
MAX_ENTRIES = 1000
MAX_NAMES_SHOWN = 10
CODE_SUFFIXES = tuple(sorted({s.lower() for s in importlib.machinery.all_suffixes()}))
MANIFEST_NAME = "manifest.json"  # compared in lower case, as MMS's findFile does (equalsIgnoreCase)


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


def refusal(entry: os.DirEntry) -> str | None:
    """Why ``entry`` (not one of the artifact files) could choose code or a location, or None if inert."""
    name = entry.name.lower()
    if entry.is_symlink():
        return "a symbolic link"
    if entry.is_dir(follow_symlinks=False):
        return "a folder (a Python package or an MMS manifest folder)"
    if not entry.is_file(follow_symlinks=False):
        return "not a regular file"
    if name == MANIFEST_NAME:
        return "an MMS manifest"
    if name.endswith(CODE_SUFFIXES):
        return "Python or native code"
    return None


def _shown(names: list[str]) -> str:
    more = len(names) - MAX_NAMES_SHOWN
    return ", ".join(names[:MAX_NAMES_SHOWN]) + (f" and {more} more" if more > 0 else "")


def check_model_dir(model_dir: str | os.PathLike, model_root: str | os.PathLike, *,
                    log_ignored: bool = True) -> Path:
    """The resolved model directory, or :class:`ModelDirError` saying what is wrong with it.

    Inert extra files are left alone; ``log_ignored`` says so in one log line (the handler, which checks
    again after the entry point or the gate did, passes False so a load logs it once)."""
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
            if len(found) > MAX_ENTRIES:
                raise ModelDirError(f"model directory {model_dir} holds more than {MAX_ENTRIES} entries; "
                                    f"a model is {', '.join(ARTIFACT_FILES)}")
    refused = {name: why for name, entry in found.items()
               if name not in ARTIFACT_FILES and (why := refusal(entry)) is not None}
    if refused:
        shown = _shown([f"{name} ({why})" for name, why in sorted(refused.items())])
        raise ModelDirError(f"model directory {model_dir} holds more than the model artifact: {shown}; "
                            "code, manifests, folders and links are refused")
    missing = [name for name in ARTIFACT_FILES if name not in found]
    if missing:
        raise ModelDirError(f"model directory {model_dir} is not a model artifact: missing {', '.join(missing)}")
    links = [name for name in ARTIFACT_FILES if not found[name].is_file(follow_symlinks=False)]
    if links:
        raise ModelDirError(f"model directory {model_dir}: {', '.join(sorted(links))} must be regular files "
                            "(symbolic links and other kinds are refused)")
    ignored = sorted(set(found) - set(ARTIFACT_FILES))
    if ignored and log_ignored:
        logger.info("model directory %s: ignoring %d file(s) beside the model artifact: %s",
                    model_dir, len(ignored), _shown(ignored))
    return resolved
