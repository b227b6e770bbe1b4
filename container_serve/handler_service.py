"""The MMS handler service: the module multi-model-server loads in every python worker.

MMS (``mms/model_loader.py``) accepts a handler module with exactly one class, or a module-level
``handle(data, context)`` function. We use the function form on purpose: MMS calls it once with
``data=None`` to load the model and lets exceptions from that call reach the frontend, so

* a model that cannot be loaded fails ``POST /models`` and is unregistered again (by the gate, see
  :mod:`container_serve.gate`), and
* a ``MemoryError`` while loading (ours, from the memory check, or torch's allocation failure mapped to
  it) answers 507, which tells SageMaker to evict other models and retry.

Before the exception leaves, the reason is written for the gate (:mod:`container_serve.load_reports`):
400 for a model directory or artifact that is not loadable, 507 for memory, 500 for anything else.
(With the class form MMS calls ``initialize`` inside a ``try`` that only logs, and a broken model would
look loaded.) The per-model state lives in the one class, :class:`HandlerService`.

Per request, an unexpected exception becomes a JSON 500 for the requests of that batch; ``MemoryError``
during inference is re-raised so MMS answers 507.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback

from byoc_common.artifact import ModelArtifactError
from container_serve import content_types as ct
from container_serve import load_reports
from container_serve.errors import BadRequestError, InsufficientStorageError, InternalServerError
from container_serve.image_classifier_handler import ImageClassifierHandler
from container_serve.model_layout import ModelDirError

logger = logging.getLogger(__name__)


class HandlerService:
    """One model in one worker process: owns the TorchServe-style handler."""

    def __init__(self):
        self.handler = ImageClassifierHandler()

    def initialize(self, context) -> None:
        self.handler.initialize(context)

    def handle(self, data: list[dict], context) -> list[bytes]:
        try:
            return self.handler.handle(data, context)
        except MemoryError:
            raise  # MMS answers 507 Out of resources
        except Exception as e:  # noqa: BLE001 - a bug or an unexpected input must not kill the worker
            logger.error("inference failed for model %s:\n%s", self.handler.model_name, traceback.format_exc())
            body = json.dumps({"error": f"internal error: {type(e).__name__}: {e}", "code": 500}).encode()
            for idx in range(len(data)):
                context.set_response_status(code=500, phrase="Internal Server Error", idx=idx)
                context.set_response_content_type(idx, ct.JSON)
            return [body for _ in data]


_service: HandlerService | None = None


def load_failure_status(error: BaseException) -> int:
    if isinstance(error, MemoryError):
        return InsufficientStorageError.status
    if isinstance(error, ModelDirError | ModelArtifactError):
        return BadRequestError.status
    return InternalServerError.status


def handle(data, context):
    """MMS entry point. ``data is None``: load the model (exceptions propagate to MMS on purpose)."""
    global _service
    if data is None:
        service = HandlerService()
        name = getattr(context, "model_name", "") or ""
        try:
            service.initialize(context)
        except Exception as e:
            # Say why in one line first: MMS stops reading the worker's output as soon as the worker
            # dies, so the traceback that follows may reach the log only in part.
            logger.error("cannot load model %s: %s: %s", name or "?", type(e).__name__, e)
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            load_reports.write(service.handler.settings.load_reports_dir, name, load_failure_status(e), str(e))
            raise
        load_reports.write(service.handler.settings.load_reports_dir, name, load_reports.LOADED, "loaded")
        _service = service
        return None
    return _service.handle(data, context)
