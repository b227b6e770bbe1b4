"""The hostile client's pass against the serving image (``docker run --network host --memory 4g IMAGE serve``,
started through ``byoc.local.endpoint.LocalEndpoint`` in container mode, model root mounted at
/opt/ml/models). The 4 GiB limit is the issue's: two 6 MB form bodies parsed by MMS's Netty once grew
its JVM (heap sized from the host with ``-XX:-UseContainerSupport``) past it and the kernel killed the
container; now the gate answers them 415, the container stays up, and the JVM's heap is a quarter of
the container's limit.

The multi-model tests are the process-mode suite's own (tests/serve/test_serve_hostile.py), run here on
fixtures of the same names backed by the container: every attack answered 4xx with no marker written,
the count bombs refused within a second with the worker (a process inside the container, measured from
the host) growing less than 100 MB, the 507 and its retry (the cgroup files the load reads are the
test's, mounted with the models), octet-stream and no Content-Type answered 200, the server healthy after
it all. Then what only the image can show: a single-model container loads nothing over HTTP and refuses
a model directory with a manifest, and the load-time memory check reads the container's real cgroup limit.
"""

from __future__ import annotations

import json

import pytest

from byoc.errors import EndpointError
from byoc.local.endpoint import LocalEndpoint
from container_serve.settings import DEFAULT_JVM_ARGS
from tests.containers.limited_endpoint import MEMORY_LIMIT, cgroup_folder, running_endpoint
from tests.serve import hostile
from tests.serve.hostile import attacks_fixture, mar_host_fixture, stage_fixture  # noqa: F401 - fixtures
from tests.serve.test_serve_hostile import (  # noqa: F401 - collected here, on this module's fixtures
    test_attack_is_refused_and_runs_nothing,
    test_count_bomb_is_refused_before_work,
    test_form_bodies_never_reach_the_model_server,
    test_gradcam_explains_the_first_image_only,
    test_invalid_artifact_is_a_400_naming_the_problem,
    test_invocations_pending_at_an_unload_are_answered,
    test_load_refused_for_memory_is_507_and_the_retry_succeeds,
    test_octet_stream_and_no_content_type_are_read_as_images,
    test_ping_answers_while_a_model_loads,
    test_server_is_healthy_after_all_of_it,
    test_stalled_and_idle_connections_are_closed,
    test_the_memory_probe_sees_what_a_request_allocates,
)

pytestmark = [pytest.mark.container, pytest.mark.slow]

@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile-image")


@pytest.fixture(scope="module")
def cgroup(root):
    return cgroup_folder(root)


@pytest.fixture(scope="module")
def endpoint(serve_image, root, cgroup):
    yield from running_endpoint(serve_image, root, hostile.GATE_ENV)


def test_serve_image_single_model_loads_no_model_over_http(serve_image, tmp_path, give_back_to_user):
    hostile.write_model(tmp_path / "model")
    give_back_to_user(serve_image, tmp_path)
    with LocalEndpoint(model_root=tmp_path / "model", multi_model=False, image=serve_image,
                       log_file=tmp_path / "endpoint.log") as ep:
        load = json.dumps({"model_name": "x", "url": "/opt/ml/model", "handler": "os:system"}).encode()
        for method, path, body in [("POST", "/models", load), ("GET", "/models", None),
                                   ("POST", "/models/model/invoke", hostile.jpeg())]:
            reply = ep.client.request(method, path, body, "application/json" if body else None)
            assert reply.status == 404, (method, path, reply.body)
        for content_type in ("application/octet-stream", None):
            assert ep.client.invoke(hostile.jpeg(), content_type).status == 200


def test_serve_image_refuses_a_model_directory_with_a_manifest(serve_image, tmp_path, give_back_to_user):
    stage = hostile.Stage(tmp_path, lambda rel: f"/opt/ml/{rel}")
    stage.model_with("model", {"MAR-INF/MANIFEST.json": hostile.manifest("single-code:handle"),
                               "single-code.py": "{code}"})
    give_back_to_user(serve_image, tmp_path)
    ep = LocalEndpoint(model_root=tmp_path / "model", multi_model=False, image=serve_image,
                       log_file=tmp_path / "endpoint.log")
    with pytest.raises(EndpointError, match="exited with code 2"):
        ep.start()
    ep.stop()
    assert "holds more than the model artifact" in ep.log_text()
    assert stage.markers_found() == []


def test_serve_image_memory_check_reads_the_container_limit(serve_image, docker):
    probe = docker("run", "--rm", "--network", "host", "--memory", "1536m", "--entrypoint", "python", serve_image,
                   "-c", "from pathlib import Path; from container_serve.memory import available_bytes; "
                         "print(available_bytes(Path('/sys/fs/cgroup')).source)")
    assert "cgroup" in probe.stdout and "limit 1536 MiB" in probe.stdout, probe.stdout


def test_serve_image_jvm_heap_follows_the_container_limit(serve_image, docker):
    """The default JVM arguments size MMS's heap from the cgroup limit, not the host's memory."""
    probe = docker("run", "--rm", "--network", "host", "--memory", MEMORY_LIMIT, "--entrypoint", "java",
                   serve_image, *DEFAULT_JVM_ARGS.split(), "-XX:+PrintFlagsFinal", "-version")
    (line,) = [ln for ln in probe.stdout.splitlines() if " MaxHeapSize " in ln]
    heap = int(line.split("=")[1].split()[0])
    assert heap <= 4 * 2**30 // 4 + 64 * 2**20, line   # a quarter of the limit (the host here has 24 GiB)
