"""Fixtures every test folder may use. Shared code lives in tests/helpers/, imported from there."""

from __future__ import annotations

import shutil
import tempfile

import pytest

from tests.helpers.moto_server import MotoServerError, moto_server


def pytest_report_header(config):
    """The suite needs several GB of scratch space (images pushed to a test registry, artifacts)."""
    where = tempfile.gettempdir()
    return f"free disk for temporary files: {shutil.disk_usage(where).free / 2**30:.1f} GiB in {where}"


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory):
    """One moto server for the whole session (tests reset it; see tests.helpers.moto_server.reset)."""
    try:
        with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
            yield url
    except MotoServerError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def rules_dataset(tmp_path_factory):
    """4 classes of generated shapes, 8 images per class and split (tests/helpers/training_jobs.py)."""
    from tests.helpers.training_jobs import make_rules_dataset

    return make_rules_dataset(tmp_path_factory.mktemp("rules-data"))


@pytest.fixture(scope="session")
def healthy_job(tmp_path_factory, rules_dataset):
    """One healthy real training job for the whole session: the rules and the report read it."""
    from tests.helpers.training_jobs import run_healthy_job

    return run_healthy_job(tmp_path_factory.mktemp("healthy-job"), rules_dataset)
