"""Request errors the handler turns into an HTTP status and a JSON body ``{"error": ..., "code": ...}``.

Raise one of these anywhere while handling a request; :mod:`container_serve.image_classifier_handler`
catches it for that request only (the other requests of an MMS batch, and the worker, carry on).
"""

from __future__ import annotations

import json


class InferenceError(Exception):
    """A request the server refuses. ``status`` is the HTTP code, ``phrase`` its reason phrase."""

    status = 400
    phrase = "Bad Request"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def to_json_bytes(self) -> bytes:
        return json.dumps({"error": self.message, "code": self.status}).encode("utf-8")


class BadRequestError(InferenceError):
    """400: the body cannot be decoded, or decodes to something that is not an image."""


class NotFoundError(InferenceError):
    status, phrase = 404, "Not Found"


class NotAcceptableError(InferenceError):
    status, phrase = 406, "Not Acceptable"


class PayloadTooLargeError(InferenceError):
    """413: over the payload limit, too many images, or an image with too many pixels (a
    decompression bomb)."""

    status, phrase = 413, "Payload Too Large"


class UnsupportedMediaTypeError(InferenceError):
    status, phrase = 415, "Unsupported Media Type"
