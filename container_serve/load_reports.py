"""How a model load ended, passed from the worker that tried to the process that asked for it.

A worker that cannot load a model can only die (MMS answers 500 "Failed to start workers", whatever the
reason) or raise ``MemoryError`` (507). Before it does either, the handler writes one small JSON file
``<folder>/<sha256 of the model name>.json`` = ``{"code": 400 | 507 | 500, "error": "<why>"}`` (hashed: the
file name keeps one length whatever the name's, ``<250 characters>.json`` and its temporary twin were over
NAME_MAX); the gate reads and removes it once MMS has answered, so a bad artifact gets a 400 naming the
problem and a full machine a 507.
A load that worked leaves ``{"code": 200}``: the signal ``serve.py`` waits for before it opens the port of
a single-model endpoint. The file is written before the worker reports back to MMS, so it is there when
MMS's answer arrives. The folder is private to one server (``BYOC_LOAD_REPORTS_DIR``, set by serve.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from byoc_common import durable

LOADED = 200


def _path(folder: Path, model_name: str) -> Path:
    return folder / f"{hashlib.sha256(model_name.encode('utf-8')).hexdigest()}.json"


def write(folder: Path | None, model_name: str, code: int, message: str) -> None:
    if folder is None or not model_name:
        return
    durable.write_text(_path(folder, model_name), json.dumps({"code": code, "error": message}))


def take(folder: Path, model_name: str) -> tuple[int, str] | None:
    """``(code, message)`` left by the worker for ``model_name``, removing it; None when there is none."""
    target = _path(folder, model_name)
    try:
        doc = json.loads(target.read_text())
        target.unlink()
    except (FileNotFoundError, ValueError):
        return None
    return int(doc.get("code", 500)), str(doc.get("error", "the model did not load"))


def discard(folder: Path, model_name: str) -> None:
    _path(folder, model_name).unlink(missing_ok=True)
