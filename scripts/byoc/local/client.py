"""The one HTTP client of the local endpoint: the SageMaker serving contract as SageMaker calls it.

Two layers on one class:

* the wire: :meth:`EndpointClient.request` and one method per route of the contract (``/ping``,
  the multi-model API ``POST/GET/DELETE /models``, ``/invocations``, ``/models/<name>/invoke``),
  each returning the :class:`Reply` whatever its status, for tests and benchmarks that look at
  statuses;
* the operator's verbs, which raise :class:`EndpointError` with the server's message on any error:
  :meth:`deploy`, :meth:`model_names`, :meth:`classify_file`, :meth:`explain_to_png` and
  :meth:`transform_folder` (batch transform over a folder, one ``<input name>.out`` per input, as a
  transform job writes them).

Only ever talks to the URL it is given (the local endpoint on 127.0.0.1).
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from byoc.errors import EndpointError
from byoc.gradcam import write_gradcam_png
from container_serve import content_types as ct
from container_serve.content_types import content_type_for
from container_train.contract import IMAGE_SUFFIXES

BATCH_SUFFIXES = frozenset(IMAGE_SUFFIXES) | {".npy", ".json"}
DEFAULT_TIMEOUT_S = 120.0


class Reply(NamedTuple):
    """One HTTP answer: ``status, headers, body = client.invoke(...)``; header names lower-case."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        """The body as JSON, or as text when it is not JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return self.body.decode("utf-8", errors="replace")

    def message(self) -> str:
        body = self.json()
        if isinstance(body, dict):
            return str(body.get("message") or body.get("error") or json.dumps(body))
        return str(body)[:500]

    def check(self, what: str) -> Reply:
        """``self`` when 2xx; else :class:`EndpointError` naming ``what`` and the server's message."""
        if self.status >= 300:
            raise EndpointError(f"{what} failed: HTTP {self.status}: {self.message()}", self.status)
        return self


@dataclass
class EndpointClient:
    url: str
    timeout: float = DEFAULT_TIMEOUT_S

    # ---- the wire -----------------------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                headers: dict[str, str] | None = None, timeout: float | None = None) -> Reply:
        """One request; a Content-Type header only when ``content_type`` is given."""
        parts = urllib.parse.urlsplit(self.url)
        headers = dict(headers or {})
        if content_type is not None:
            headers["Content-Type"] = content_type
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout or self.timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            raise EndpointError(f"no endpoint answers at {self.url} (start one with `byoc serve`): {e}") from e
        finally:
            conn.close()

    def ping(self) -> bool:
        try:
            return self.request("GET", "/ping", timeout=2).status == 200
        except EndpointError:
            return False

    def load_model(self, name: str, url: str | os.PathLike) -> Reply:
        """``POST /models {"model_name", "url"}``: the request a SageMaker multi-model endpoint sends."""
        return self.request("POST", "/models", json.dumps({"model_name": name, "url": str(url)}).encode(), ct.JSON)

    def list_models(self, limit: int | None = None, next_page_token: str | None = None) -> Reply:
        query = {k: v for k, v in (("limit", limit), ("next_page_token", next_page_token)) if v is not None}
        return self.request("GET", "/models" + (f"?{urllib.parse.urlencode(query)}" if query else ""))

    def describe_model(self, name: str) -> Reply:
        return self.request("GET", f"/models/{urllib.parse.quote(name)}")

    def unload_model(self, name: str) -> Reply:
        return self.request("DELETE", f"/models/{urllib.parse.quote(name)}")

    def invoke(self, body: bytes, content_type: str | None, accept: str | None = ct.JSON,
               target_model: str | None = None, custom_attributes: str | None = None,
               timeout: float | None = None) -> Reply:
        """``POST /models/<name>/invoke`` (or ``/invocations`` without a target)."""
        headers = {"Accept": accept} if accept else {}
        if custom_attributes:
            headers[ct.CUSTOM_ATTRIBUTES_HEADER] = custom_attributes
        path = f"/models/{urllib.parse.quote(target_model)}/invoke" if target_model else "/invocations"
        return self.request("POST", path, body, content_type, headers, timeout)

    # ---- the operator's verbs -----------------------------------------------------------------
    def deploy(self, name: str, url: str | os.PathLike, replace: bool = False) -> None:
        """Load a model; with ``replace``, one already loaded under ``name`` is unloaded first
        (otherwise 409, already loaded, is fine)."""
        reply = self.load_model(name, url)
        if reply.status == 409 and replace:
            unload = self.unload_model(name)
            if unload.status != 404:
                unload.check(f"unloading {name!r}")
            reply = self.load_model(name, url)
        if reply.status != 409:
            reply.check(f"loading model {name!r}")

    def model_names(self) -> list[str]:
        """Every loaded model, following the pagination."""
        names, token = [], None
        while True:
            body = self.list_models(next_page_token=token).check("listing models").json()
            names += [m.get("modelName") or m.get("model_name") for m in body.get("models", [])]
            token = body.get("nextPageToken")
            if not token:
                return names

    def classify_file(self, path: str | os.PathLike, target_model: str | None = None,
                      content_type: str | None = None, accept: str = ct.JSON, topk: int | None = None,
                      explain: bool = False) -> tuple[str, bytes]:
        """One image file -> ``(content type, body)`` of a 2xx answer."""
        attrs = ct.format_custom_attributes(topk=topk, explain="gradcam" if explain else None)
        reply = self.invoke(Path(path).read_bytes(), content_type or content_type_for(path), accept,
                            target_model, attrs or None).check(f"invoking {target_model or 'the model'}")
        return reply.headers.get("content-type", ""), reply.body

    def explain_to_png(self, image: str | os.PathLike, out: str | os.PathLike, target_model: str | None = None,
                       content_type: str | None = None) -> dict:
        """Grad-CAM of the top class written to ``out``; returns the prediction (without the PNG data)."""
        _, body = self.classify_file(image, target_model, content_type, ct.JSON, explain=True)
        return write_gradcam_png(json.loads(body), out, image)

    def transform_folder(self, input_dir: str | os.PathLike, output_dir: str | os.PathLike,
                         target_model: str | None = None, content_type: str | None = None,
                         accept: str = ct.JSON, max_payload_mb: int = 6,
                         on_progress: Callable[[int, int], None] | None = None) -> BatchResult:
        """Batch transform, local edition: every input file -> ``<output_dir>/<relative path>.out``."""
        def invoke(body: bytes, ctype: str, accept: str, target: str | None) -> tuple[str, bytes]:
            reply = self.invoke(body, ctype, accept, target).check("invocation")
            return reply.headers.get("content-type", ""), reply.body

        return transform_folder(invoke, input_dir, output_dir, target_model, content_type, accept,
                                max_payload_mb, on_progress)


@dataclass
class BatchResult:
    outputs: list[Path] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)   # input path -> error


def batch_inputs(input_dir: Path) -> list[Path]:
    if not input_dir.is_dir():
        raise FileNotFoundError(f"batch input {input_dir} is not a folder")
    return sorted(p for p in input_dir.rglob("*") if p.is_file() and p.suffix.lower() in BATCH_SUFFIXES)


def transform_folder(invoke: Callable[..., tuple[str, bytes]], input_dir: str | os.PathLike,
                     output_dir: str | os.PathLike, target_model: str | None, content_type: str | None,
                     accept: str, max_payload_mb: int,
                     on_progress: Callable[[int, int], None] | None = None) -> BatchResult:
    """SageMaker batch semantics with ``SplitType=None`` and ``BatchStrategy=SingleRecord``: each file
    is one request; its answer goes to ``<name>.out`` at the same relative path. A file over
    ``max_payload_mb`` or an error answer is recorded as a failure (no ``.out`` written)."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    files = batch_inputs(input_dir)
    if not files:
        raise FileNotFoundError(f"no input files ({', '.join(sorted(BATCH_SUFFIXES))}) under {input_dir}")
    result = BatchResult()
    limit = max_payload_mb * 1024 * 1024
    for i, path in enumerate(files, 1):
        rel = path.relative_to(input_dir)
        if path.stat().st_size > limit:
            result.failures[str(rel)] = f"{path.stat().st_size} bytes is over MaxPayloadInMB={max_payload_mb}"
        else:
            try:
                _, body = invoke(path.read_bytes(), content_type or content_type_for(path), accept, target_model)
                out = output_dir / (rel.as_posix() + ".out")
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(body)
                result.outputs.append(out)
            except EndpointError as e:
                result.failures[str(rel)] = str(e)
        if on_progress:
            on_progress(i, len(files))
    return result
