"""The SageMaker Python SDK's local mode on a Docker engine without a bridge network, S3 on moto.

The SDK's local mode (``sagemaker.local``) runs a job or an endpoint as ``docker-compose up`` of a file
it generates (``_SageMakerContainer._generate_compose_file``): every container on a bridge network
``sagemaker-local``, reached by its network alias ``algo-<n>-<suffix>``, the endpoint published as
``<serving_port>:8080``. This machine's engine and CI's have no bridge network, so
:func:`host_network_compose` adapts *only that generated file*, nothing of the SDK's requests and
nothing in the images:

* ``network_mode: host`` instead of ``networks`` (and no ``ports``: there is nothing to publish);
* ``extra_hosts``: every ``algo-<n>-<suffix>`` of the job at 127.0.0.1, what the alias resolved to;
* serving only: ``SAGEMAKER_BIND_TO_PORT`` = the session's ``local.serving_port`` (the port the SDK
  would have published 8080 on) and ``BYOC_BIND_ADDRESS=127.0.0.1`` (loopback only, as the bridge kept it).

:func:`local_session` is a ``LocalSession`` whose S3 is a moto server on 127.0.0.1, telemetry off
(nothing leaves this machine).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import yaml

TELEMETRY_OFF = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
COMPOSE_FILE = "docker-compose.yaml"   # sagemaker.local.image.DOCKER_COMPOSE_FILENAME


def adapt_compose(content: dict, serving_port: int) -> dict:
    """The SDK's compose document, moved to the host network (see the module docstring)."""
    content = dict(content)
    content.pop("networks", None)
    hosts = list(content["services"])
    for service in content["services"].values():
        service.pop("networks", None)
        serving = service.pop("ports", None) is not None or service.get("command") == "serve"
        service["network_mode"] = "host"
        service["extra_hosts"] = [f"{host}:127.0.0.1" for host in hosts]
        if serving:
            service["environment"] = [*service["environment"], f"SAGEMAKER_BIND_TO_PORT={serving_port}",
                                      "BYOC_BIND_ADDRESS=127.0.0.1"]
    return content


@contextlib.contextmanager
def host_network_compose(serving_port: int) -> Iterator[None]:
    """While active, every compose file the SDK writes is rewritten by :func:`adapt_compose`."""
    from sagemaker.local.image import _SageMakerContainer

    original = _SageMakerContainer._generate_compose_file

    def generate(self, command, additional_volumes=None, additional_env_vars=None):
        content = adapt_compose(original(self, command, additional_volumes, additional_env_vars), serving_port)
        Path(self.container_root, COMPOSE_FILE).write_text(yaml.dump(content, default_flow_style=False))
        return content

    _SageMakerContainer._generate_compose_file = generate
    try:
        yield
    finally:
        _SageMakerContainer._generate_compose_file = original


def local_session(moto_url: str, region: str, serving_port: int, container_root: Path):
    """A LocalSession on moto's S3 that may also read and write ``file://`` locations."""
    from boto3.session import Session
    from sagemaker.local import LocalSession

    session = LocalSession(boto_session=Session(region_name=region), s3_endpoint_url=moto_url,
                           sagemaker_config=TELEMETRY_OFF)
    session.config = {"local": {"local_code": True, "serving_port": serving_port,
                                "container_root": str(container_root)}}
    return session


AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
