"""The one definition of what the endpoint accepts and produces, and of the custom attributes it reads.

Operator scripts import these names instead of spelling MIME types themselves.

Request ``Content-Type`` (parameters such as ``; charset=utf-8`` are ignored):

* ``image/jpeg``, ``image/png``, ``application/x-image`` - one encoded image in one of
  :data:`IMAGE_FORMATS` (JPEG, PNG, BMP, GIF or WebP; the bytes decide, not the header). Not TIFF: its
  tiles and strips size the decoder's buffers apart from the image's pixels (a 64x64 image in one
  32768x32768 tile allocates a gigabyte), and libtiff is a large surface for a format cameras and
  browsers do not send.
* ``application/octet-stream`` and no ``Content-Type`` at all - read the same way, as one encoded image.
  This is what the SageMaker Python SDK sends by default: ``Predictor`` (and the predictor
  ``MultiDataModel.deploy()`` returns) serializes with ``IdentitySerializer``, whose content type is
  ``application/octet-stream`` (sagemaker-python-sdk ``base_predictor.py``, ``base_serializers.py``).
* ``application/x-npy`` - one ``numpy.save`` array, never unpickled: ``uint8`` HWC / NHWC pixels in
  0..255, or ``float32``/``float64`` CHW / NCHW pixels in [0, 1]. Channels 3 (RGB) or 1 (grey). The
  header alone decides the image count and must describe exactly the bytes that follow it.
* ``application/json`` - a base64 image string, a list of them, nested lists of numbers (an integer
  array follows the ``uint8`` HWC rules, a float array the CHW rules), or ``{"instances": [...]}`` whose
  items are each a base64 string or one nested-list image. At most 8 levels of nesting; numbers of at
  most 32 characters, finite.

Response ``Accept``: ``application/json`` (default, also for ``*/*``), ``text/csv``, or
``application/x-npy``: the ``[images, classes]`` probability array, ``float32``, written by
``numpy.save(allow_pickle=False)``; what the SDK's ``PyTorchPredictor`` asks for by default
(``NumpyDeserializer``, sagemaker-python-sdk ``pytorch/model.py``, ``base_deserializers.py``). See
:mod:`container_serve.responses` for the schemas. Anything else gets a JSON 406 naming these three.

``X-Amzn-SageMaker-Custom-Attributes``: comma- or semicolon-separated ``key=value`` pairs; unknown keys are
ignored (SageMaker lets clients put their own data there):

* ``topk=N`` - how many classes to return per image (default 5, capped at the number of classes)
* ``probabilities=all`` - also return the full probability vector
* ``explain=gradcam`` - also return a Grad-CAM heatmap (PNG, base64) for the top class, for the first
  image of the request only (one backward pass per request, whatever the image count)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from container_serve.errors import BadRequestError, NotAcceptableError

JPEG = "image/jpeg"
PNG = "image/png"
X_IMAGE = "application/x-image"
NPY = "application/x-npy"
JSON = "application/json"
CSV = "text/csv"
ANY = "*/*"

OCTET_STREAM = "application/octet-stream"
NO_CONTENT_TYPE = ""  # media_type() of a missing header

IMAGE_TYPES = (JPEG, PNG, X_IMAGE, OCTET_STREAM, NO_CONTENT_TYPE)
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP")  # Pillow format names an encoded image may be in
ACCEPTED_CONTENT_TYPES = (*IMAGE_TYPES, NPY, JSON)
PRODUCED_CONTENT_TYPES = (JSON, CSV, NPY)

CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
DEFAULT_TOPK = 5
EXPLAIN_METHODS = ("gradcam",)
GRADCAM_IMAGES_PER_REQUEST = 1
PROBABILITIES_CHOICES = ("all", "topk")


def media_type(header_value: str | None) -> str:
    """``'Image/JPEG; q=1'`` -> ``'image/jpeg'``; missing -> ``''``."""
    if not header_value:
        return ""
    return header_value.split(";", 1)[0].strip().lower()


def negotiate_accept(accept: str | None, default: str = JSON) -> str:
    """The response type for an ``Accept`` header: the first listed type we produce (``*/*`` and
    a missing header mean ``default``). Raises :class:`NotAcceptableError` when none fits."""
    if not accept or not accept.strip():
        return default
    for part in accept.split(","):
        kind = media_type(part)
        if kind in (ANY, "application/*", ""):
            return default
        if kind == "text/*":
            return CSV
        if kind in PRODUCED_CONTENT_TYPES:
            return kind
    raise NotAcceptableError(
        f"cannot produce {accept!r}; this endpoint produces {', '.join(PRODUCED_CONTENT_TYPES)}"
    )


@dataclass(frozen=True)
class InferenceOptions:
    """What the client asked for through the custom attributes header."""

    topk: int = DEFAULT_TOPK
    all_probabilities: bool = False
    explain: str | None = None


def parse_custom_attributes(header_value: str | None) -> InferenceOptions:
    """``"explain=gradcam, topk=3; probabilities=all"`` -> InferenceOptions. Raises BadRequestError on a
    known key with a bad value."""
    values: dict[str, str] = {}
    for item in (header_value or "").replace(";", ",").split(","):
        if "=" not in item:
            continue
        key, value = item.split("=", 1)
        values[key.strip().lower()] = value.strip()

    topk = DEFAULT_TOPK
    if "topk" in values:
        try:
            topk = int(values["topk"])
        except ValueError:
            topk = 0
        if topk < 1:
            raise BadRequestError(f"custom attribute topk={values['topk']!r}: expected a positive integer")

    probabilities = values.get("probabilities", "topk").lower()
    if probabilities not in PROBABILITIES_CHOICES:
        raise BadRequestError(
            f"custom attribute probabilities={probabilities!r}: expected one of {PROBABILITIES_CHOICES}"
        )

    explain = values.get("explain", "").lower() or None
    if explain is not None and explain not in EXPLAIN_METHODS:
        raise BadRequestError(f"custom attribute explain={explain!r}: supported: {', '.join(EXPLAIN_METHODS)}")
    return InferenceOptions(topk=topk, all_probabilities=probabilities == "all", explain=explain)


def format_custom_attributes(topk: int | None = None, all_probabilities: bool = False,
                             explain: str | None = None) -> str:
    """The header value a client sends for these options (used by the operator scripts and tests)."""
    parts = []
    if topk is not None:
        parts.append(f"topk={topk}")
    if all_probabilities:
        parts.append("probabilities=all")
    if explain:
        parts.append(f"explain={explain}")
    return ", ".join(parts)


# What a client sends for a file it reads (the operator's ``byoc invoke``/``batch``, either backend):
# by suffix, and SageMaker's generic ``application/x-image`` otherwise (the handler sniffs the bytes).
CONTENT_TYPE_BY_SUFFIX = {".jpg": JPEG, ".jpeg": JPEG, ".png": PNG, ".npy": NPY, ".json": JSON}


def content_type_for(path) -> str:
    """The Content-Type a client sends for the file at ``path``."""
    return CONTENT_TYPE_BY_SUFFIX.get(os.path.splitext(os.fspath(path))[1].lower(), X_IMAGE)
