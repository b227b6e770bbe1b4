"""The one reading of a true/false value, for hyperparameters, settings (byoc.yaml, BYOC_* and flags)
and the serving image's environment.

SageMaker passes every hyperparameter as a string; the SageMaker Python SDK's tuner writes a Python bool
as ``str(True)`` = ``"True"`` (tests/sdk/test_sdk_moto.py), while YAML, JSON and shells say ``true``,
``1``, ``yes`` or ``on``. Before, four parsers accepted four different sets of these words.
"""

from __future__ import annotations

from typing import Any

TRUE_WORDS = ("true", "1", "yes", "y", "on")
FALSE_WORDS = ("false", "0", "no", "n", "off")


def parse_bool(value: Any) -> bool:
    """``value`` (a bool, or a word above in any case, spaces around allowed) as a bool; ValueError
    naming the accepted words otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError(f"expected true or false ({'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)}), got {value!r}")
