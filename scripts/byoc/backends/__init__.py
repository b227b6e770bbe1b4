"""Where a ``byoc`` command runs: :func:`backend_for` picks the :class:`~byoc.backends.base.Backend`
that ``settings.backend`` names. Each backend module is imported only when chosen, so ``byoc --help``
never imports torch or boto3.
"""

from __future__ import annotations

from byoc.backends.base import Backend
from byoc.settings import Settings


def backend_for(settings: Settings) -> Backend:
    if settings.backend == "sagemaker":
        from byoc.backends.sagemaker import SageMakerBackend

        return SageMakerBackend(settings)
    from byoc.backends.local import LocalBackend

    return LocalBackend(settings)
