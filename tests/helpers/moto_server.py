"""moto in server mode on 127.0.0.1: the one AWS the tests talk to (no real AWS, ever)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
BUCKET = "byoc-test-bucket"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
REGION = "eu-west-1"
TRAIN_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/byoc-train:1"
SERVE_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/byoc-serve:1"
START_TIMEOUT_S = 30


class MotoServerError(RuntimeError):
    pass


@contextmanager
def moto_server(log: Path) -> Iterator[str]:
    """Start ``moto_server`` on a free loopback port; yields its URL; stops it afterwards."""
    if not MOTO_SERVER.exists():
        raise MotoServerError(f"{MOTO_SERVER} missing: install the dev extras (moto[server])")
    from byoc.local.endpoint import free_port  # torch comes with it: only when a server starts

    port = free_port()
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            try:
                requests.get(url + "/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise MotoServerError(f"moto_server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def reset(url: str) -> None:
    """Forget every resource the previous test created."""
    requests.post(url + "/moto-api/reset", timeout=5)
