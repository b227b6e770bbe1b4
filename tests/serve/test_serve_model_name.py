"""One model-name rule (container_serve.management.check_model_name) for a load request's model_name
(400), a /models/<name> path at the gate (404) and a folder deployed under the model root."""

from __future__ import annotations

import json

import pytest

from byoc_common.artifact_files import ARTIFACT_FILES
from container_serve import http1
from container_serve.errors import BadRequestError, NotFoundError
from container_serve.gate import Gate
from container_serve.management import MAX_MODEL_NAME_CHARS, MODEL_NAME_RULE, parse_load_request
from container_serve.model_archive import UnsafeArchiveError, deploy_model
from container_serve.settings import ServeSettings

GOOD = ["m", "m-1", "fashion.v2", "A_b", "7" * MAX_MODEL_NAME_CHARS]
BAD = ["-m", ".hidden", "a" * (MAX_MODEL_NAME_CHARS + 1), "a b", "a%2Fb", "é"]


def _verdicts(name: str, tmp_path) -> list[str]:
    """What each of the three places says about ``name``: "ok" or the refusal's message."""
    out = []
    (tmp_path / "m").mkdir(exist_ok=True)
    for f in ARTIFACT_FILES:                  # the load request's url must be a model folder
        (tmp_path / "m" / f).write_text("{}")
    try:
        parse_load_request(json.dumps({"model_name": name, "url": str(tmp_path / "m")}).encode(), "application/json", None,
                           tmp_path)
        out.append("ok")
    except BadRequestError as e:
        out.append(str(e))
    settings = ServeSettings.from_env({"SAGEMAKER_MULTI_MODEL": "true", "BYOC_MODEL_ROOT": str(tmp_path)})
    gate = Gate(settings, tmp_path / "i", tmp_path / "m", tmp_path)
    try:
        gate.route(http1.Message([], method="POST", target=f"/models/{name}/invoke"))
        out.append("ok")
    except NotFoundError as e:
        out.append(str(e))
    try:
        deploy_model(tmp_path / "no-such-model", tmp_path / "root", name)
    except FileNotFoundError:
        out.append("ok")                      # the name passed; the source (absent here) did not
    except UnsafeArchiveError as e:
        out.append(str(e))
    return out


@pytest.mark.parametrize("name", GOOD)
def test_a_good_name_passes_everywhere(name, tmp_path):
    assert _verdicts(name, tmp_path) == ["ok"] * 3


@pytest.mark.parametrize("name", BAD)
def test_a_bad_name_is_refused_everywhere_with_the_one_rule(name, tmp_path):
    verdicts = _verdicts(name, tmp_path)
    assert all(v != "ok" and v.endswith(MODEL_NAME_RULE) for v in verdicts), verdicts
