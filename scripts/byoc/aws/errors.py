"""The error of the AWS package: a SageMaker job cannot be built or did not end as needed."""

from __future__ import annotations

from byoc.errors import ByocError


class LaunchError(ByocError):
    """A SageMaker job cannot be built or did not finish as needed; the message says why."""
