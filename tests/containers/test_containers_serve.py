"""The serving image run the way a SageMaker multi-model endpoint runs it:

    docker run --network host -e SAGEMAKER_BIND_TO_PORT=<port> -e SAGEMAKER_MULTI_MODEL=true \
        -v <models>:/opt/ml/models IMAGE serve

(started through byoc.local.endpoint in container mode). The model is a real artifact in the
project's format (random resnet18 weights, 32 px) -- serving does not care how well it was trained.
"""

from __future__ import annotations

import io
import json
import re

import pytest
from PIL import Image

from byoc.local.endpoint import LocalEndpoint
from byoc_common.architectures import build_classifier
from byoc_common.artifact import ModelConfig, save_model_artifact

pytestmark = [pytest.mark.container, pytest.mark.slow]

CLASSES = ["cat", "dog", "fox"]


def write_model(model_dir):
    config = ModelConfig(arch="resnet18", num_classes=len(CLASSES), image_size=32,
                         resize_size=ModelConfig.default_resize(32))
    save_model_artifact(model_dir, build_classifier("resnet18", len(CLASSES)), CLASSES, config)


def jpeg(color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(buf, format="JPEG")
    return buf.getvalue()


def test_serve_image_multi_model_endpoint(serve_image, tmp_path, give_back_to_user, docker):
    models = tmp_path / "models"
    write_model(models / "pets")
    give_back_to_user(serve_image, tmp_path)

    endpoint = LocalEndpoint(model_root=models, multi_model=True, image=serve_image,
                             log_file=tmp_path / "endpoint.log")
    endpoint.start()
    try:
        status, _, _ = endpoint.client.request("GET", "/ping")
        assert status == 200

        reply = endpoint.client.load_model("pets", endpoint.model_url("pets"))  # url /opt/ml/models/pets, as SageMaker sends
        status, body = reply.status, reply.json()
        assert status == 200, body

        status, headers, raw = endpoint.client.invoke(jpeg(), "image/jpeg", accept="application/json", target_model="pets")
        assert status == 200, raw[:500]
        prediction = json.loads(raw)["predictions"][0]
        assert prediction["label"] in CLASSES and 0.0 <= prediction["probability"] <= 1.0
        # the model's worker was forked from the fork server, which imported torch once
        assert re.search(r"fork server pid \d+ ready", endpoint.log_text())
        assert re.search(r"forked worker pid \d+ for model pets", endpoint.log_text())

        status, _, raw = endpoint.client.invoke(b"this is not an image", "image/jpeg", target_model="pets")
        assert status == 400, raw[:500]

        reply = endpoint.client.unload_model("pets")
        status, body = reply.status, reply.json()
        assert status == 200, body
        status, _, _ = endpoint.client.invoke(jpeg(), "image/jpeg", target_model="pets")
        assert status == 404
    except BaseException:
        print(endpoint.log_text()[-6000:])
        raise
    finally:
        returncode = endpoint.stop()      # docker stop: SIGTERM to the container's PID 1, SIGKILL after 60 s

    # The stop was handled, not forced: serve.py stopped MMS and exited 0 (137 would be docker's SIGKILL).
    assert returncode == 0, f"the container did not stop on SIGTERM (exit {returncode})"
    assert "model server stopped" in endpoint.log_text()
    leftover = docker("ps", "-aq", "--filter", f"name=^{endpoint._container_name}$").stdout.strip()
    assert not leftover, "the container is still there after stop()"


def test_serve_image_is_sagemaker_ready_and_has_no_compiler(serve_image, docker):
    info = json.loads(docker("image", "inspect", serve_image).stdout)[0]["Config"]
    assert info["Labels"]["com.amazonaws.sagemaker.capabilities.multi-models"] == "true"
    assert info["Labels"]["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"

    probe = docker("run", "--rm", "--network", "host", serve_image, "sh", "-c",
                   "command -v serve; java -version 2>&1 | head -1; "
                   "command -v gcc cc c++ javac || echo no-compiler")
    lines = probe.stdout.split("\n")
    assert lines[0] == "/usr/local/bin/serve"
    assert '"17.' in lines[1], probe.stdout
    assert lines[2] == "no-compiler", f"build tools left in the image: {probe.stdout}"


def test_serve_image_single_model_endpoint(serve_image, tmp_path, give_back_to_user):
    """Without SAGEMAKER_MULTI_MODEL the image serves the model mounted at /opt/ml/model."""
    write_model(tmp_path / "model")
    give_back_to_user(serve_image, tmp_path)
    with LocalEndpoint(model_root=tmp_path / "model", multi_model=False, image=serve_image,
                       log_file=tmp_path / "endpoint.log") as endpoint:
        status, _, raw = endpoint.client.invoke(jpeg((20, 200, 20)), "image/jpeg", accept="application/json")
        assert status == 200, f"{raw[:500]}\n{endpoint.log_text()[-4000:]}"
        assert json.loads(raw)["predictions"][0]["label"] in CLASSES


def test_serve_image_keeps_serving_when_its_fork_server_is_gone(serve_image, tmp_path, give_back_to_user, docker):
    """The fork server SIGKILLed inside the container: the model loaded before keeps answering, and the
    next load runs its worker as a plain python, saying so in the log."""
    models = tmp_path / "models"
    for name in ("pets", "pets-2"):
        write_model(models / name)
    give_back_to_user(serve_image, tmp_path)
    with LocalEndpoint(model_root=models, multi_model=True, image=serve_image,
                       log_file=tmp_path / "endpoint.log") as endpoint:
        reply = endpoint.client.load_model("pets", endpoint.model_url("pets"))
        assert reply.status == 200, reply.json()
        pid = re.search(r"fork server pid (\d+) ready", endpoint.log_text()).group(1)
        docker("exec", endpoint._container_name, "sh", "-c", f"kill -9 {pid}")   # kill: a shell builtin here
        reply = endpoint.client.load_model("pets-2", endpoint.model_url("pets-2"))
        assert reply.status == 200, f"{reply.json()}\n{endpoint.log_text()[-4000:]}"
        for name in ("pets", "pets-2"):
            status, _, raw = endpoint.client.invoke(jpeg(), "image/jpeg", target_model=name)
            assert status == 200, raw[:500]
            assert json.loads(raw)["predictions"][0]["label"] in CLASSES
        assert "starting this worker as a plain python process" in endpoint.log_text()
