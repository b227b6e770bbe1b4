"""HTTP client for the local endpoint: the multi-model API as SageMaker calls it, plus batch
transform over a folder (one ``<input name>.out`` per input, as a transform job writes them).

Only ever talks to the URL it is given (the local endpoint on 127.0.0.1).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from container_serve import content_types as ct

CONTENT_TYPE_BY_SUFFIX = {".jpg": ct.JPEG, ".jpeg": ct.JPEG, ".png": ct.PNG, ".npy": ct.NPY, ".json": ct.JSON}
BATCH_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".npy", ".json"}


class EndpointError(RuntimeError):
    """The endpoint answered with an error (status and its JSON message) or is unreachable."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def content_type_for(path: str | os.PathLike) -> str:
    """What a client would send for this file: by extension, ``application/x-image`` otherwise."""
    return CONTENT_TYPE_BY_SUFFIX.get(Path(path).suffix.lower(), ct.X_IMAGE)


def _error_text(resp: requests.Response) -> str:
    try:
        body = resp.json()
        return body.get("message") or body.get("error") or json.dumps(body)
    except ValueError:
        return resp.text[:500]


@dataclass
class EndpointClient:
    url: str
    timeout: float = 120.0
    session: requests.Session = field(default_factory=requests.Session)

    def _call(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            resp = self.session.request(method, self.url.rstrip("/") + path, timeout=self.timeout, **kwargs)
        except requests.ConnectionError as e:
            raise EndpointError(f"no endpoint answers at {self.url} (start one with `byoc serve`): {e}") from e
        return resp

    def ping(self) -> bool:
        try:
            return self._call("GET", "/ping").status_code == 200
        except EndpointError:
            return False

    # ---- multi-model API ----------------------------------------------------------------------
    def load_model(self, name: str, model_path: str | os.PathLike, replace: bool = False) -> None:
        """``POST /models {"model_name", "url"}``; with ``replace``, an already-loaded model is
        unloaded first (409 otherwise means it is already there, which is fine)."""
        body = {"model_name": name, "url": str(model_path)}
        resp = self._call("POST", "/models", json=body)
        if resp.status_code == 409 and replace:
            self.unload_model(name)
            resp = self._call("POST", "/models", json=body)
        if resp.status_code == 409:
            return
        if resp.status_code >= 300:
            raise EndpointError(f"loading model {name!r} failed: HTTP {resp.status_code}: {_error_text(resp)}",
                                resp.status_code)

    def unload_model(self, name: str) -> None:
        resp = self._call("DELETE", f"/models/{name}")
        if resp.status_code >= 300 and resp.status_code != 404:
            raise EndpointError(f"unloading {name!r} failed: HTTP {resp.status_code}: {_error_text(resp)}",
                                resp.status_code)

    def list_models(self) -> list[str]:
        names, token = [], None
        while True:
            resp = self._call("GET", "/models", params={"next_page_token": token} if token else None)
            if resp.status_code != 200:
                raise EndpointError(f"listing models failed: HTTP {resp.status_code}: {_error_text(resp)}")
            body = resp.json()
            names += [m.get("modelName") or m.get("model_name") for m in body.get("models", [])]
            token = body.get("nextPageToken")
            if not token:
                return names

    # ---- inference ----------------------------------------------------------------------------
    def invoke(self, body: bytes, content_type: str, accept: str = ct.JSON, target_model: str | None = None,
               custom_attributes: str | None = None) -> tuple[str, bytes]:
        """``POST /models/<name>/invoke`` (or ``/invocations`` without a target); returns
        ``(content type, body)``, raising :class:`EndpointError` on any non-2xx answer."""
        headers = {"Content-Type": content_type, "Accept": accept}
        if custom_attributes:
            headers[ct.CUSTOM_ATTRIBUTES_HEADER] = custom_attributes
        path = f"/models/{target_model}/invoke" if target_model else "/invocations"
        resp = self._call("POST", path, data=body, headers=headers)
        if resp.status_code >= 300:
            raise EndpointError(f"HTTP {resp.status_code}: {_error_text(resp)}", resp.status_code)
        return resp.headers.get("Content-Type", ""), resp.content

    def invoke_file(self, path: str | os.PathLike, target_model: str | None = None, content_type: str | None = None,
                    accept: str = ct.JSON, topk: int | None = None, explain: bool = False) -> tuple[str, bytes]:
        attrs = ct.format_custom_attributes(topk=topk, explain="gradcam" if explain else None)
        return self.invoke(Path(path).read_bytes(), content_type or content_type_for(path), accept,
                           target_model, attrs or None)

    def explain_to_png(self, image: str | os.PathLike, out: str | os.PathLike, target_model: str | None = None,
                       content_type: str | None = None) -> dict:
        """Grad-CAM of the top class written to ``out``; returns the prediction (without the PNG data)."""
        _, body = self.invoke_file(image, target_model, content_type, ct.JSON, explain=True)
        return write_gradcam_png(json.loads(body), out)

    def transform_folder(self, input_dir: str | os.PathLike, output_dir: str | os.PathLike,
                         target_model: str | None = None, content_type: str | None = None,
                         accept: str = ct.JSON, max_payload_mb: int = 6,
                         on_progress: Callable[[int, int], None] | None = None) -> BatchResult:
        """Batch transform, local edition: every input file -> ``<output_dir>/<relative path>.out``."""
        return transform_folder(self.invoke, input_dir, output_dir, target_model, content_type, accept,
                                max_payload_mb, on_progress)


def write_gradcam_png(answer: dict, out: str | os.PathLike) -> dict:
    """Decode the ``gradcam`` entry of a JSON answer into a PNG file."""
    try:
        prediction = answer["predictions"][0]
        cam = prediction["gradcam"]
    except (KeyError, IndexError, TypeError) as e:
        raise EndpointError(f"the answer holds no Grad-CAM heatmap ({e}): {json.dumps(answer)[:300]}") from e
    png = base64.b64decode(cam["data"])
    if not png.startswith(b"\x89PNG"):
        raise EndpointError("the Grad-CAM data is not a PNG image")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png)
    return {k: v for k, v in prediction.items() if k != "gradcam"} | {"gradcam_label": cam.get("label")}


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
