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

Every check is linear in the body and bounded: at most ``MAX_LOAD_KEYS`` keys in the whole body (the
duplicate-key check was quadratic: ~7,800 keys in 64 KB stalled the event loop for seconds), path
components of at most ``NAME_MAX`` bytes, and a url that fails to resolve on the file system (through a
file, too long, a loop) is a 4xx. The gate runs :func:`parse_load_request` in a thread, never on its loop.
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

# SageMaker's model_name is opaque (not the TargetModel); MMS puts it in paths and thread names. 250, not
# 255: MMS 1.1.11 and the worker put the name into file names with a few characters around it, and the
# file system's NAME_MAX is 255 bytes (a 251-character name got no HTTP answer at all).
MAX_MODEL_NAME_CHARS = 250
MODEL_NAME_RE = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_MODEL_NAME_CHARS - 1}}}$")
MODEL_NAME_RULE = (f"use 1-{MAX_MODEL_NAME_CHARS} letters, digits, '.', '_' or '-', starting with a letter "
                   "or digit")
NAME_MAX = 255  # bytes in one path component (Linux)
MAX_LOAD_KEYS = 16  # in the whole body: a load has two
LOAD_FIELDS = ("model_name", "url")
LIST_PARAMETERS = ("limit", "next_page_token")
MAX_LOAD_BODY_BYTES = 64 * 1024
MAX_URL_CHARS = 4096
MAX_LIST_NUMBER = 1_000_000


def check_model_name(name, what: str = "model name", error: type[Exception] = BadRequestError) -> str:
    """The one model-name rule: a load request's name (400), a path's (404 from the gate) and a folder
    under the model root (``model_archive.deploy_model``) are checked here alike."""
    if not isinstance(name, str) or not MODEL_NAME_RE.match(name):
        raise error(f"{what} {str(name)[:80]!r}: {MODEL_NAME_RULE}")
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


class _KeyCounter:
    """``object_pairs_hook`` for json.loads: refuses duplicate keys (one set, linear) and a body with
    more than MAX_LOAD_KEYS keys in all its objects."""

    def __init__(self):
        self.keys = 0

    def __call__(self, pairs: list[tuple[str, object]]) -> dict:
        self.keys += len(pairs)
        if self.keys > MAX_LOAD_KEYS:
            raise BadRequestError(f"the body has more than {MAX_LOAD_KEYS} keys; a load takes "
                                  f"{', '.join(LOAD_FIELDS)}")
        doc = dict(pairs)
        if len(doc) != len(pairs):
            seen: set[str] = set()
            duplicated = sorted({k for k, _ in pairs if k in seen or seen.add(k)})
            raise BadRequestError(f"duplicate field(s) in the body: {', '.join(d[:80] for d in duplicated)}")
        return doc


def parse_load_request(body: bytes, content_type: str | None, query: str | None,
                       model_root: Path) -> LoadRequest:
    if query is not None:
        raise BadRequestError('POST /models takes a JSON body {"model_name", "url"}; '
                              "the query-string form is not accepted")
    if ct.media_type(content_type) != ct.JSON:
        raise UnsupportedMediaTypeError(f"POST /models needs Content-Type {ct.JSON}, got {content_type or '(none)'!r}")
    try:
        doc = json.loads(body.decode("utf-8"), object_pairs_hook=_KeyCounter())
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
    if any(len(part.encode("utf-8", "surrogatepass")) > NAME_MAX for part in url.split("/")):
        raise BadRequestError(f"url {url[:200]!r} has a path component over {NAME_MAX} bytes")
    try:
        model_dir = check_model_dir(url, model_root)
    except ModelDirError as e:
        raise (NotFoundError if e.status == 404 else BadRequestError)(str(e)) from e
    except OSError as e:  # through a file (ENOTDIR), a symlink loop, a name too long, ...
        raise BadRequestError(f"url {url[:200]!r} is not a model directory: {e.strerror or e}") from e
    except RuntimeError as e:  # Path.resolve's symlink loop on Python < 3.13
        raise BadRequestError(f"url {url[:200]!r} is not a model directory: {e}") from e
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
