"""TorchServe 0.12 with the same ResNet50, for the side-by-side serving bench (``bench.bench_serving``).

TorchServe is a bench-only dependency (``pip install torchserve==0.12.0 torch-model-archiver captum``
into the venv; captum is imported by its ``image_classifier`` handler); the serving image does not use it.

The model archive is built from this project's artifact: ``model.pth`` (the classifier's state_dict) with
a ``model.py`` whose one class is torchvision's ResNet50 with the artifact's class count (the state_dict
keys match: ``build_classifier`` only swaps ``fc``), TorchServe's built-in ``image_classifier`` handler
(PIL decode, Resize 256, CenterCrop 224, ToTensor, Normalize: the same recipe as ours) and an
``index_to_name.json``. TorchServe listens on 127.0.0.1 only, with token authorisation and the
management API used only to see its workers ready (the one model is loaded at start-up), gRPC on free 127.0.0.1 ports, in its own process group, stopped as a whole.

Settings: ``default`` = TorchServe's own defaults (workers = cores, torch threads = torch's default);
``WxT`` = ``default_workers_per_model=W`` and ``OMP_NUM_THREADS=T`` in the workers' environment.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from byoc.local.endpoint import free_port
from byoc_common.artifact import read_model_metadata

MODEL_NAME = "resnet50"
START_TIMEOUT_S = 240.0
MODEL_PY = '''from torchvision.models.resnet import Bottleneck, ResNet


class ResNet50Classifier(ResNet):
    def __init__(self):
        super().__init__(Bottleneck, [3, 4, 6, 3], num_classes={num_classes})
'''


def _tool(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed: pip install torchserve==0.12.0 torch-model-archiver captum")
    return found


def make_archive(model_dir: Path, work: Path) -> Path:
    """``<work>/store/resnet50.mar`` from a ResNet50 model artifact."""
    config, classes = read_model_metadata(model_dir)
    if config.arch != "resnet50":
        raise ValueError(f"the TorchServe archive here is a ResNet50; the artifact is a {config.arch}")
    src = work / "mar-src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "model.py").write_text(MODEL_PY.format(num_classes=config.num_classes))
    (src / "index_to_name.json").write_text(json.dumps({str(i): c for i, c in enumerate(classes)}))
    store = work / "store"
    store.mkdir(exist_ok=True)
    subprocess.run([_tool("torch-model-archiver"), "--model-name", MODEL_NAME, "--version", "1.0",
                    "--model-file", str(src / "model.py"), "--serialized-file", str(model_dir / "model.pth"),
                    "--handler", "image_classifier", "--extra-files", str(src / "index_to_name.json"),
                    "--export-path", str(store), "--force"], check=True)
    return store / f"{MODEL_NAME}.mar"


class TorchServe:
    """One TorchServe server serving the archive under ``MODEL_NAME``; a context manager."""

    def __init__(self, archive: Path, work: Path, setting: str = "default"):
        self.archive, self.setting = archive, setting
        self.work = work / f"torchserve-{setting}"
        self.port, self.management_port, self.metrics_port = free_port(), free_port(), free_port()
        self.grpc_ports = (free_port(), free_port())  # it starts gRPC servers too; never on the default ports
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/predictions/{MODEL_NAME}"

    def _config(self) -> str:
        lines = [f"inference_address=http://127.0.0.1:{self.port}",
                 f"management_address=http://127.0.0.1:{self.management_port}",
                 f"metrics_address=http://127.0.0.1:{self.metrics_port}",
                 "grpc_inference_address=127.0.0.1", "grpc_management_address=127.0.0.1",
                 f"grpc_inference_port={self.grpc_ports[0]}", f"grpc_management_port={self.grpc_ports[1]}",
                 "disable_token_authorization=true", "enable_envvars_config=false",
                 f"model_store={self.archive.parent}", f"load_models={MODEL_NAME}={self.archive.name}"]
        if self.setting != "default":
            workers, _ = self.setting.split("x")
            lines.append(f"default_workers_per_model={int(workers)}")
        return "\n".join(lines) + "\n"

    def start(self) -> TorchServe:
        self.work.mkdir(parents=True, exist_ok=True)
        config = self.work / "config.properties"
        config.write_text(self._config())
        env = dict(os.environ)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(name, None)
        env["TMPDIR"] = env["TEMP"] = str(self.work)  # its pid file: one TorchServe per temp folder
        if self.setting != "default":
            _, threads = self.setting.split("x")
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(int(threads))
        self.log = open(self.work / "torchserve.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [_tool("torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth",
             "--model-store", str(self.archive.parent), "--ts-config", str(config)],
            cwd=self.work, env=env, stdout=self.log, stderr=subprocess.STDOUT, process_group=0)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        status_url = f"http://127.0.0.1:{self.management_port}/models/{MODEL_NAME}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"TorchServe exited with {self.proc.returncode}; see {self.work}/torchserve.log")
            try:
                with urllib.request.urlopen(status_url, timeout=5) as r:
                    workers = json.loads(r.read())[0]["workers"]
                if workers and all(w["status"] == "READY" for w in workers):
                    return
            except (OSError, ValueError, KeyError, IndexError):
                pass
            time.sleep(1)
        raise TimeoutError(f"TorchServe ({self.setting}) not ready after {START_TIMEOUT_S:.0f}s")

    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # workers the frontend left behind
        except ProcessLookupError:
            pass
        self.log.close()
        self.proc = None

    def __enter__(self) -> TorchServe:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
