"""The serving image under ``docker run --memory 4g`` as a multi-model endpoint with the hostile suite's
victim model loaded: the one setting of the container hostile tests (tests/containers/
test_containers_serve_hostile.py, test_containers_serve_model_checks.py), as issue 28 tried it.

The cgroup files a model load reads are the test's (``hostile.write_cgroup``), mounted with the models,
so the 507 cases do not depend on this machine's free memory; the container's real limit still bounds
the JVM and the workers.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from byoc.local.endpoint import LocalEndpoint
from byoc_common.sagemaker_paths import MULTI_MODEL_ROOT
from tests.serve import hostile

CGROUP_FOLDER = "cgroup-files"  # under the model root, so the container sees it at /opt/ml/models/...
MEMORY_LIMIT = "4g"


class LimitedEndpoint(LocalEndpoint):
    """The image under ``docker run --memory``, as a SageMaker instance's memory bounds it."""

    def _command(self) -> list[str]:
        cmd = super()._command()
        return [*cmd[:2], "--memory", MEMORY_LIMIT, *cmd[2:]]


def cgroup_folder(root: Path) -> Path:
    """The test's cgroup files under ``root``'s model root, with no limit yet."""
    folder = root / "models" / CGROUP_FOLDER
    hostile.write_cgroup(folder, "max")
    return folder


def running_endpoint(image: str, root: Path, env: Mapping[str, str] = {}) -> Iterator[LimitedEndpoint]:
    """Yield the limited multi-model endpoint over ``root/models`` with the victim loaded (for a
    module-scoped fixture); print the end of its log and hand its files back afterwards."""
    ep = LimitedEndpoint(model_root=root / "models", multi_model=True, image=image,
                         log_file=root / "endpoint.log",
                         env={"BYOC_CGROUP_DIR": f"{MULTI_MODEL_ROOT}/{CGROUP_FOLDER}", **env})
    try:
        with ep:
            hostile.load_victim(ep)
            yield ep
    finally:
        print(ep.log_text()[-4000:])
        hand_back(image, root)


def hand_back(image: str, folder) -> None:
    """The container ran as root: hand what it wrote back to this user (conftest's give_back_to_user,
    which is function-scoped, for these module-scoped endpoints)."""
    if os.getuid() != 0:
        subprocess.run(["docker", "run", "--rm", "--network", "host", "--entrypoint", "chown", "-v",
                        f"{folder}:/owned", image, "-R", f"{os.getuid()}:{os.getgid()}", "/owned"],
                       capture_output=True, timeout=120)
