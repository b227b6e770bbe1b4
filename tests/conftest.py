"""Fixtures every test folder may use. Shared code lives in tests/helpers/, imported from there."""

from __future__ import annotations

import pytest

from tests.helpers.moto_server import MotoServerError, moto_server


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory):
    """One moto server for the whole session (tests reset it; see tests.helpers.moto_server.reset)."""
    try:
        with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
            yield url
    except MotoServerError as e:
        pytest.fail(str(e))
