"""A test whose tool or data is missing skips here and fails in CI (tests/helpers/required.py)."""

from __future__ import annotations

import pytest

from tests.helpers import required


@pytest.mark.parametrize("env, outcome", [
    ({}, pytest.skip.Exception),
    ({"CI": "true"}, pytest.fail.Exception),
    ({"CI": "github-actions"}, pytest.fail.Exception),
    ({"BYOC_REQUIRE_DOCKER": "1"}, pytest.fail.Exception),
])
def test_a_missing_tool_skips_here_and_fails_in_ci(monkeypatch, env, outcome):
    for name in ("CI", "BYOC_REQUIRE_DOCKER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(outcome, match="no-such-tool-here is not installed"):
        required.tool("no-such-tool-here", "it does not exist")


def test_a_present_tool_is_found_on_path_or_in_the_venv():
    assert required.tool("python", "the venv has it").endswith("python")
