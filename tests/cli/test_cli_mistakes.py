"""Mistakes a newcomer makes with ``byoc`` get one line that says what is wrong, and change nothing.

``byoc serve`` on a taken port used to print "endpoint up" while its own server died on "address
already in use" (the endpoint that held the port answered its /ping), then deleted the running
endpoint's record (issue 25). These tests hold a port with a real listener and check that serve
refuses before starting anything and leaves the other endpoint's record as it was.
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading

import pytest

from byoc.cli import main
from byoc.local.endpoint import free_port


@pytest.fixture
def raw_listener():
    """A TCP listener on 127.0.0.1 that is not HTTP (accepts and never answers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", free_port()))
        s.listen()
        yield s.getsockname()[1]


class _Ping(http.server.BaseHTTPRequestHandler):
    def do_GET(self):                     # noqa: N802 (http.server's name)
        self.send_response(200 if self.path == "/ping" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_endpoint():
    """Something that answers /ping as an endpoint does."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Ping)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"byoc {command}: error: ") and "\n" not in err, err
    return err


def test_serve_on_a_port_held_by_another_endpoint_refuses_before_starting(tmp_path, http_endpoint, capsys):
    run_dir = tmp_path / "run"
    assert main(["serve", "--port", str(http_endpoint), "--run-dir", str(run_dir)]) == 1
    err = _one_error_line(capsys, "serve")
    assert f"port {http_endpoint} is taken" in err and "already answers /ping" in err
    assert not (run_dir / "endpoint.json").exists()          # nothing recorded: nothing was started
    assert not (run_dir / "endpoint" / "server.log").exists()


def test_serve_on_a_port_held_by_a_non_http_listener_is_one_line(tmp_path, raw_listener, capsys):
    assert main(["serve", "--port", str(raw_listener), "--run-dir", str(tmp_path / "run")]) == 1
    assert "taken by another program" in _one_error_line(capsys, "serve")


def test_serve_leaves_a_running_endpoints_record_alone(tmp_path, capsys):
    """A run dir whose record names a live `byoc serve` (another process) refuses a second one, on
    any port, and the record stays byte for byte."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        record = run_dir / "endpoint.json"
        record.write_text(json.dumps({"url": "http://127.0.0.1:8080", "model_root": str(run_dir / "models"),
                                      "server_model_root": str(run_dir / "models"), "pid": other.pid}))
        before = record.read_bytes()
        assert main(["serve", "--port", str(free_port()), "--run-dir", str(run_dir)]) == 1
        assert "records an endpoint already running" in _one_error_line(capsys, "serve")
        assert record.read_bytes() == before
    finally:
        other.kill()
        other.wait()


def test_a_hyperparameter_given_as_a_flag_suggests_hp(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "data/demo", "--epochs", "3", "--batch_size=16"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--hp epochs=3 --hp batch-size=16" in err and err.startswith("usage: byoc train")


def test_an_unknown_flag_that_is_no_hyperparameter_is_plain_argparse(capsys):
    with pytest.raises(SystemExit) as e:
        main(["deploy", "m.tar.gz", "--name", "x", "--url", "http://127.0.0.1:8080"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "byoc deploy: error: unrecognized arguments: --url http://127.0.0.1:8080"


def test_train_on_a_folder_without_class_folders_in_valid_says_what_byoc_data_says(tmp_path, capsys):
    from byoc.datasets.synthetic import make_dataset

    root = make_dataset(tmp_path / "ds", num_classes=2, per_class=1, size=16)
    for class_dir in (root / "valid").iterdir():
        for image in class_dir.iterdir():
            image.rename(root / "valid" / f"{class_dir.name}-{image.name}")
        class_dir.rmdir()
    assert main(["data", "--source", str(root)]) == 1
    said_by_data = capsys.readouterr().err.strip().removeprefix("byoc data: error: ")
    assert "class folders differ between train/ and valid/" in said_by_data
    for command in ("train", "tune"):
        assert main([command, "--data", str(root), "--run-dir", str(tmp_path / "run")]) == 1
        assert _one_error_line(capsys, command) == f"byoc {command}: error: {said_by_data}"
    assert not (tmp_path / "run").exists()                  # refused before any job or study


def test_sagemaker_without_credentials_says_how_to_give_them(tmp_path, monkeypatch, capsys):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")      # no instance role lookup either
    image = tmp_path / "x.jpg"
    image.write_bytes(b"\xff\xd8")
    assert main(["invoke", str(image), "--target-model", "m", "--backend", "sagemaker", "--region", "eu-west-1",
                 "--bucket", "b", "--endpoint-name", "e", "--run-dir", str(tmp_path / "run")]) == 1
    err = _one_error_line(capsys, "invoke")
    assert "Unable to locate credentials" in err and "aws configure" in err and "AWS_ACCESS_KEY_ID" in err
