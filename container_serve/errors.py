"""Request errors turned into an HTTP status and a JSON body ``{"error": ..., "code": ...}``.

Raise one of these anywhere while handling a request; :mod:`container_serve.image_classifier_handler`
catches it for that request only (the other requests of an MMS batch, and the worker, carry on), and the
gate (:mod:`container_serve.gate`) answers it before the request reaches multi-model-server.
"""

from __future__ import annotations

import json


class InferenceError(Exception):
    """A request the server refuses. ``status`` is the HTTP code, ``phrase`` its reason phrase."""

    status = 400
    phrase = "Bad Request"
    close = False  # the gate drops the connection after answering (the stream cannot be trusted)

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def to_json_bytes(self) -> bytes:
        return json.dumps({"error": self.message, "code": self.status}).encode("utf-8")


class BadRequestError(InferenceError):
    """400: the body cannot be decoded, or decodes to something that is not an image."""


class NotFoundError(InferenceError):
    status, phrase = 404, "Not Found"


class MethodNotAllowedError(InferenceError):
    status, phrase = 405, "Method Not Allowed"

    def __init__(self, message: str, allow: tuple[str, ...]):
        super().__init__(message)
        self.allow = allow


class NotAcceptableError(InferenceError):
    status, phrase = 406, "Not Acceptable"


class PayloadTooLargeError(InferenceError):
    """413: over the payload limit, too many images, or an image with too many pixels (a
    decompression bomb)."""

    status, phrase = 413, "Payload Too Large"


class UnsupportedMediaTypeError(InferenceError):
    status, phrase = 415, "Unsupported Media Type"


class InternalServerError(InferenceError):
    """500 for one request: a bug met while handling it (logged); the other requests carry on."""

    status, phrase = 500, "Internal Server Error"


class InsufficientStorageError(InferenceError):
    """507: SageMaker's signal to unload other models and retry the load."""

    status, phrase = 507, "Insufficient Storage"


class ServiceUnavailableError(InferenceError):
    status, phrase = 503, "Service Unavailable"


class GatewayTimeoutError(InferenceError):
    """504: the model server did not answer within the gate's deadline (``BYOC_UPSTREAM_TIMEOUT_S``)."""

    status, phrase = 504, "Gateway Timeout"
