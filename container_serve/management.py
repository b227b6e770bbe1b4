"""The multi-model management API exactly as SageMaker calls it, and what the gate forwards of it.

"Custom Containers Contract for Multi-Model Endpoints" (SageMaker developer guide):

* ``POST /models`` with ``Content-Type: application/json`` and the body
  ``{"model_name": "<name>", "url": "/opt/ml/models/<name>/model"}``; 409 when the name is loaded, 507
  when memory (or another resource) is short;
* ``GET /models`` (``next_page_token`` from the previous page's ``nextPageToken``; MMS also takes
  ``limit``), ``GET /models/<name>``, ``DELETE /models/<name>``, ``POST /models/<name>/invoke``.

Everything else multi-model-server's management API would take is refused here with a JSON 4xx before
MMS sees it: any other body field (``handler``, ``runtime``, ``batch_size``, ``initial_workers``, ...: MMS
``RegisterModelRequest``), the query-string form of ``POST /models``, a url with a scheme (MMS downloads
``http(s)://`` urls and unzips them), and a url that is not a model directory under the model root
(:func:`container_serve.model_layout.check_model_dir`). What the gate sends on is rebuilt from the checked
values and names our handler and runtime itself, so nothing a request carries chooses code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from container_serve import content_types as ct
from container_serve.errors import BadRequestError, NotFoundError, UnsupportedMediaTypeError
from container_serve.mms_process import HANDLER_SERVICE, MMS_RUNTIME
from container_serve.model_layout import ModelDirError, check_model_dir
from container_serve.settings import ServeSettings

# SageMaker's model_name is opaque (not the TargetModel); MMS puts it in paths and thread names.
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
MODEL_NAME_RULE = "use 1-255 letters, digits, '.', '_' or '-', starting with a letter or digit"
LOAD_FIELDS = ("model_name", "url")
LIST_PARAMETERS = ("limit", "next_page_token")
MAX_LOAD_BODY_BYTES = 64 * 1024
MAX_URL_CHARS = 4096
MAX_LIST_NUMBER = 1_000_000


def check_model_name(name, what: str = "model name") -> str:
    if not isinstance(name, str) or not MODEL_NAME_RE.match(name):
        raise BadRequestError(f"{what} {str(name)[:80]!r}: {MODEL_NAME_RULE}")
    return name


@dataclass(frozen=True)
class LoadRequest:
    model_name: str
    url: str
    model_dir: Path  # resolved

    def mms_body(self, settings: ServeSettings) -> bytes:
        """The only registration the gate sends MMS: our handler, our runtime, the server's batching, and
        no workers yet (the gate starts them with :meth:`scale_target`; see container_serve.gate)."""
        return json.dumps({
            "model_name": self.model_name, "url": self.url, "handler": HANDLER_SERVICE, "runtime": MMS_RUNTIME,
            "batch_size": settings.batch_size, "max_batch_delay": settings.max_batch_delay_ms,
            "initial_workers": 0,
        }).encode()

    def scale_target(self, settings: ServeSettings) -> str:
        """MMS's ``PUT /models/<name>`` that starts the workers and answers once they loaded the model."""
        workers = settings.workers_per_model
        return f"/models/{self.model_name}?min_worker={workers}&max_worker={workers}&synchronous=true"


def _unique_object(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    duplicated = sorted({k for k in keys if keys.count(k) > 1})
    if duplicated:
        raise BadRequestError(f"duplicate field(s) in the body: {', '.join(duplicated)}")
    return dict(pairs)


def parse_load_request(body: bytes, content_type: str | None, query: str | None,
                       model_root: Path) -> LoadRequest:
    if query is not None:
        raise BadRequestError('POST /models takes a JSON body {"model_name", "url"}; '
                              "the query-string form is not accepted")
    if ct.media_type(content_type) != ct.JSON:
        raise UnsupportedMediaTypeError(f"POST /models needs Content-Type {ct.JSON}, got {content_type or '(none)'!r}")
    try:
        doc = json.loads(body.decode("utf-8"), object_pairs_hook=_unique_object)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BadRequestError(f"the body is not a JSON object: {str(e)[:200]}") from e
    if not isinstance(doc, dict):
        raise BadRequestError('the body must be a JSON object {"model_name", "url"}')
    extra = sorted(set(doc) - set(LOAD_FIELDS))
    if extra:
        raise BadRequestError(f"field(s) {', '.join(repr(k)[:80] for k in extra)} are not accepted: "
                              f"a load takes exactly {', '.join(LOAD_FIELDS)}")
    missing = [k for k in LOAD_FIELDS if k not in doc]
    if missing:
        raise BadRequestError(f"missing field(s): {', '.join(missing)}")
    name = check_model_name(doc["model_name"], "model_name")
    url = doc["url"]
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS or "\0" in url:
        raise BadRequestError("url must be a non-empty string naming a model directory")
    if not url.startswith("/"):
        raise BadRequestError(f"url {url[:200]!r} must be an absolute local path under the model root "
                              f"{model_root}; schemes (http://, s3://, file://) and relative paths are refused")
    if ".." in url.split("/"):
        raise BadRequestError(f"url {url[:200]!r} must not contain '..'")
    try:
        model_dir = check_model_dir(url, model_root)
    except ModelDirError as e:
        raise (NotFoundError if e.status == 404 else BadRequestError)(str(e)) from e
    return LoadRequest(name, url, model_dir)


def list_query(query: str | None) -> str:
    """The query to forward for ``GET /models``: only ``limit`` and ``next_page_token``, as integers."""
    if not query:
        return ""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError as e:
        raise BadRequestError(f"malformed query string: {e}") from e
    names = [k for k, _ in pairs]
    unknown = sorted(set(names) - set(LIST_PARAMETERS))
    if unknown or len(names) != len(set(names)):
        raise BadRequestError(f"GET /models takes only {', '.join(LIST_PARAMETERS)} (once each); "
                              f"got {', '.join(names)[:200]}")
    for key, value in pairs:
        if not re.fullmatch(r"[0-9]{1,7}", value) or int(value) > MAX_LIST_NUMBER:
            raise BadRequestError(f"{key}={value[:40]!r}: expected an integer 0..{MAX_LIST_NUMBER}")
    return "?" + "&".join(f"{k}={int(v)}" for k, v in pairs)
