"""Errors the trainer expects, and how a failed job reports itself to SageMaker.

SageMaker shows the first 1024 characters of ``<base>/output/failure`` as the job's
``FailureReason``. The toolkit writes that file too, but only when it does not exist yet, so the
trainer writes its own one-line message first and that is what the user sees. The file is written
atomically (:mod:`byoc_common.durable`): on a full disk it is complete or absent, never empty.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from byoc_common import durable

FAILURE_REASON_LIMIT = 1024


class TrainingError(Exception):
    """A problem with the job's inputs or configuration, explained in one line for the user."""


class DataError(TrainingError):
    """A channel is missing, empty or inconsistent."""


class DivergedError(TrainingError):
    """The loss became NaN or infinite."""


class PretrainedWeightsError(TrainingError):
    """Pretrained weights were requested but cannot be obtained or do not fit the architecture."""


class DataLoadingError(TrainingError):
    """A DataLoader worker died, lost a batch or ran out of shared memory."""


def write_failure_file(path: Path, message: str) -> None:
    """Write the failure reason (never raises: failing to report must not hide the real error)."""
    try:
        data = (message.strip() + "\n").encode()
        durable.write_with(path, lambda f: f.write(data))
    except OSError:
        pass


def describe_unexpected(exc: BaseException, limit: int = FAILURE_REASON_LIMIT) -> str:
    """A failure reason for a bug: the exception first, then as much traceback tail as fits."""
    head = f"Unexpected error: {type(exc).__name__}: {exc}"
    tb = "".join(traceback.format_exception(exc))
    room = limit - len(head) - 2
    if room <= 0:
        return head[:limit]
    return f"{head}\n\n{tb[-room:]}"
