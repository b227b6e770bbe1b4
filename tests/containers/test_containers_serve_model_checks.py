"""The decoder bombs and the model checks of issue 28 (items 7-12) against the serving image under
``docker run --network host --memory 4g IMAGE serve`` (the issue's setting), model root mounted at
/opt/ml/models: the process-mode tests (tests/serve/test_serve_bombs.py, test_serve_model_checks.py)
run here on fixtures of the same names backed by the container. The worker's memory is measured from the
host (its processes are visible there); the cgroup files a load reads are the test's, mounted with the
models, so the 507 cases do not depend on this machine's free memory.
"""

from __future__ import annotations

import pytest

from tests.containers.limited_endpoint import cgroup_folder, running_endpoint
from tests.serve.test_serve_bombs import test_bomb_is_refused_before_work_and_the_worker_keeps_serving  # noqa: F401
from tests.serve.test_serve_model_checks import (  # noqa: F401 - collected here, on this module's fixtures
    test_a_model_whose_outputs_overflow_answers_a_json_500_and_keeps_serving,
    test_a_stride0_head_is_counted_by_its_elements_and_refused,
    test_config_figures_out_of_bounds_are_400,
    test_nan_weights_are_refused_at_load,
    test_the_warm_up_pass_is_counted,
)

pytestmark = [pytest.mark.container, pytest.mark.slow]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("model-checks-image")


@pytest.fixture(scope="module")
def cgroup(root):
    return cgroup_folder(root)


@pytest.fixture(scope="module")
def endpoint(serve_image, root, cgroup):
    yield from running_endpoint(serve_image, root)
