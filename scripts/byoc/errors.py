"""The one base of every error ``byoc`` reports to its user as a single line, without a traceback.

Each package raises its own subclass (``DatasetError``, ``SpecError``, ``EndpointError``, ...); the
CLI catches :class:`ByocError` alone and prints ``byoc <command>: error: <message>``. Errors of the
images' packages that the operator side surfaces as they are (``ModelArtifactError``,
``UnsafeArchiveError``) and botocore's are listed once in :data:`byoc.cli.REPORTED_AS_IS`.
"""

from __future__ import annotations


class ByocError(Exception):
    """A command failed for a reason the user can act on; the message says which and what to do."""


class EndpointError(ByocError):
    """The endpoint answered with an error (status and its JSON message), is unreachable, or its answer
    is not what was asked for. Here, below both backends, because both talk to endpoints."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status
