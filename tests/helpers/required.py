"""What a test needs from the machine (a tool, a Debian data package): skipped here with the reason
when it is missing, failed in CI, where `make setup` installs all of it (scripts/install_system_deps.sh:
Chromium, shellcheck, Fashion-MNIST, PostgreSQL, docker-registry; the venv: the AWS CLI).

CI is ``CI=true`` (set by CI services and by .ci/run) or ``BYOC_REQUIRE_DOCKER=1`` (.ci/run), the rule
the container tests follow for a Docker engine (tests/containers/conftest.py).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import pytest

from byoc_common.booleans import parse_bool


def in_ci() -> bool:
    try:
        ci = parse_bool(os.environ.get("CI") or "false")
    except ValueError:
        ci = True                      # some CI services set CI to their own name
    return ci or os.environ.get("BYOC_REQUIRE_DOCKER") == "1"


def missing(message: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"{message} (required under CI / BYOC_REQUIRE_DOCKER=1: make setup installs it)", pytrace=False)
    pytest.skip(message)


def tool(name: str, hint: str) -> str:
    """The path of ``name`` on PATH or in the venv's own bin folder (where pip puts the AWS CLI)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        missing(f"{name} is not installed here ({hint})")
    return found
