"""The local backend of ``byoc``: everything on this machine, as processes (default) or as the
Docker images (``--containers``). Same function names as :mod:`scripts.sagemaker_backend`.

A running ``byoc serve`` records itself in ``<run dir>/endpoint.json`` (URL, model root, pid) so
``deploy``/``invoke``/``batch``/``explain`` in another terminal find it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

from scripts import datasets
from scripts.config import Settings
from scripts.progress import console, progress_bar

ENDPOINT_FILE = "endpoint.json"
DEFAULT_PORT = 8080


# ---- data ---------------------------------------------------------------------------------------

def default_data_dir(source: str) -> Path:
    name = "dogImages" if source == "dogimages" else source
    return Path("data") / (name if name in datasets.SOURCES else Path(name).name)


def data(settings: Settings, source: str, dest: str | None = None, num_classes: int | None = None,
         per_class: int = 60, size: int = 64, url: str | None = None) -> datasets.DatasetSummary:
    dest_path = Path(dest) if dest else default_data_dir(source)
    if source == "dogimages":
        console.print(f"dogImages: downloading {url or datasets.DOGIMAGES_URL} into {dest_path} "
                      "(resumes if interrupted)")
        with progress_bar("dogImages.zip", unit="bytes") as update:
            return datasets.prepare("dogimages", dest_path, url=url or datasets.DOGIMAGES_URL,
                                    on_download=update)
    return datasets.prepare(source, dest_path, per_class=per_class, size=size, num_classes=num_classes)


# ---- training -----------------------------------------------------------------------------------

def train(settings: Settings, data: str, hyperparameters: dict, job_dir: str | None = None,
          description: str = "training", env: dict | None = None) -> dict:
    """One local training job; shows epoch progress; raises with the log path when it fails."""
    from container_train.contract import EPOCH_REGEX
    from scripts.local_training_job import TrainingJob

    job_dir_path = Path(job_dir) if job_dir else Path(settings.run_dir) / "train"
    data_path = Path(data)
    if not data_path.is_dir():
        raise FileNotFoundError(f"dataset {data_path} does not exist (prepare one with `byoc data`)")
    epochs = int(hyperparameters.get("epochs", 5))
    log_file = job_dir_path / "training.log"
    if log_file.exists():
        log_file.unlink()
    job = TrainingJob(job_dir_path, hyperparameters, {"training": data_path},
                      image=settings.train_image_local if settings.containers else None,
                      env=env, log_file=log_file)
    with progress_bar(description, total=epochs) as update:
        job.start()
        while job.running():
            done = {int(m) for m in re.findall(EPOCH_REGEX + r"valid_loss", job.log_text())}
            update(len(done))
            time.sleep(0.5)
        result = job.wait()
        update(len({int(m) for m in re.findall(EPOCH_REGEX + r"valid_loss", result.log_text)}))
    if not result.ok:
        raise TrainingFailed(f"training job in {job_dir_path} failed (exit {result.returncode}): "
                             f"{result.failure_reason or 'see the log'}; log: {log_file}")
    metrics = result.metrics or {}
    return {"job_dir": str(job_dir_path), "model_dir": str(result.model_dir),
            "output_data_dir": str(result.output_data_dir), "log": str(log_file),
            "test": metrics.get("test"), "best_valid_acc": _best_valid_acc(metrics)}


class TrainingFailed(RuntimeError):
    pass


def _best_valid_acc(metrics: dict) -> float | None:
    accs = [h.get("valid_acc") for h in metrics.get("history", []) if h.get("valid_acc") is not None]
    return max(accs) if accs else None


# ---- tuning -------------------------------------------------------------------------------------

def tune(settings: Settings, data: str, spec_path: str, max_jobs: int | None = None,
         max_parallel_jobs: int | None = None, static: dict | None = None, out_dir: str | None = None) -> dict:
    """Local Optuna search (scripts.tuning.local_tuner); resumable; writes best_hyperparameters.json."""
    from scripts.tuning.local_tuner import channels_from_data_dir, run_local_tuning
    from scripts.tuning.spec import load_spec

    spec = load_spec(spec_path).with_overrides(static=static or None)
    out = Path(out_dir) if out_dir else Path(settings.run_dir) / "tune"
    result = run_local_tuning(spec, channels_from_data_dir(data), out, max_jobs=max_jobs,
                              max_parallel=max_parallel_jobs,
                              image=settings.train_image_local if settings.containers else None)
    if not result.best_hyperparameters:
        raise TrainingFailed(f"no tuning trial finished with a {spec.objective.metric} value; "
                             f"see the trial logs under {out / 'trials'} and {result.leaderboard_csv}")
    return {"out_dir": str(out), "best_trial": result.best_trial, "best_value": result.best_value,
            "best_hyperparameters": result.best_hyperparameters, "leaderboard": str(result.leaderboard_csv)}


# ---- Debugger rules + profiler report -----------------------------------------------------------

def report(settings: Settings, job_dir: str) -> dict:
    from scripts.report import build_profiler_report
    from scripts.rules import job_tensor_dir, run_rules

    output_data = Path(job_dir) / "output" / "data"
    if not output_data.is_dir():
        raise FileNotFoundError(f"{output_data} does not exist: is {job_dir} a finished training job?")
    results = run_rules(job_tensor_dir(output_data), out_dir=output_data / "rules")
    html = build_profiler_report(output_data)
    return {"rules": {r.rule: r.status for r in results}, "rules_dir": str(output_data / "rules"),
            "profiler_report": str(html)}


# ---- endpoint -----------------------------------------------------------------------------------

def endpoint_info(settings: Settings, url: str | None = None) -> dict:
    """URL and model root of the running local endpoint (from ``byoc serve``'s endpoint.json)."""
    path = Path(settings.run_dir) / ENDPOINT_FILE
    info = json.loads(path.read_text()) if path.is_file() else {}
    if url:
        info["url"] = url
    if "url" not in info:
        info["url"] = f"http://127.0.0.1:{settings.port or DEFAULT_PORT}"
    return info


def write_endpoint_info(settings: Settings, ep, pid: int | None = None) -> Path:
    """Record a started LocalEndpoint: its URL, where models are placed on this machine, and where
    the server sees them (the same folder in process mode, /opt/ml/models inside the container)."""
    path = Path(settings.run_dir) / ENDPOINT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": ep.url, "model_root": str(ep.model_root),
                                "server_model_root": str(Path(ep.model_url("x")).parent),
                                "pid": pid or os.getpid()}, indent=1))
    return path


def start_endpoint(settings: Settings, port: int | None = None, model_root: str | Path | None = None,
                   log_file: str | Path | None = None):
    """A started :class:`scripts.local_endpoint.LocalEndpoint` (multi-model), not yet recorded."""
    from scripts.local_endpoint import LocalEndpoint

    root = Path(model_root) if model_root else Path(settings.run_dir) / "endpoint" / "models"
    root.mkdir(parents=True, exist_ok=True)
    ep = LocalEndpoint(port=port, model_root=root, multi_model=True,
                       image=settings.serve_image_local if settings.containers else None,
                       log_file=log_file or Path(settings.run_dir) / "endpoint" / "server.log")
    ep.start()
    return ep


def serve(settings: Settings, port: int | None = None, model_root: str | None = None) -> int:
    ep = start_endpoint(settings, port or settings.port or DEFAULT_PORT, model_root)
    info = write_endpoint_info(settings, ep)
    console.print(f"[green]endpoint up[/] at {ep.url} (models from {ep.model_root}); recorded in {info}")
    console.print("deploy with `byoc deploy MODEL.tar.gz --name NAME`; Ctrl-C stops it")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        while not stop:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping the endpoint")
        ep.stop()
        info.unlink(missing_ok=True)
    return 0


def _client(settings: Settings, url: str | None):
    from scripts.endpoint_client import EndpointClient

    return EndpointClient(endpoint_info(settings, url)["url"])


def deploy_to(client, info: dict, artifact: str | Path, name: str) -> str:
    """Unpack ``artifact`` under the endpoint's model root (as SageMaker does) and POST /models it;
    a model already loaded under ``name`` is replaced."""
    from container_serve.model_archive import deploy_model

    deploy_model(artifact, info["model_root"], name, overwrite=True)
    server_root = info.get("server_model_root") or info["model_root"]
    client.load_model(name, f"{server_root}/{name}", replace=True)
    return name


def deploy(settings: Settings, artifact: str, name: str, url: str | None = None) -> str:
    info = endpoint_info(settings, url)
    if "model_root" not in info:
        raise FileNotFoundError(f"no running endpoint recorded in {Path(settings.run_dir) / ENDPOINT_FILE}: "
                                "start one with `byoc serve` (same --run-dir)")
    return deploy_to(_client(settings, url), info, artifact, name)


def invoke(settings: Settings, image: str, target_model: str | None, content_type: str | None,
           accept: str, topk: int | None, explain: bool, url: str | None = None) -> tuple[str, bytes]:
    return _client(settings, url).invoke_file(image, target_model, content_type, accept, topk, explain)


def explain(settings: Settings, image: str, target_model: str | None, content_type: str | None, output: str,
            url: str | None = None) -> dict:
    return _client(settings, url).explain_to_png(image, output, target_model, content_type)


def batch(settings: Settings, input_dir: str, output_dir: str, target_model: str | None, model_data: str | None,
          content_type: str | None, accept: str, max_payload_mb: int, url: str | None = None) -> dict:
    client = _client(settings, url)
    with progress_bar("batch transform") as update:
        result = client.transform_folder(input_dir, output_dir, target_model, content_type, accept,
                                         max_payload_mb, on_progress=update)
    return {"outputs": [str(p) for p in result.outputs], "failures": result.failures}


def cleanup(settings: Settings, keep_data: bool = False) -> int:
    """Stop a ``byoc serve`` recorded for this run dir."""
    path = Path(settings.run_dir) / ENDPOINT_FILE
    if not path.is_file():
        console.print(f"nothing to clean up: no {path}")
        return 0
    pid = json.loads(path.read_text()).get("pid")
    if pid:
        try:
            os.kill(int(pid), signal.SIGTERM)
            console.print(f"stopped `byoc serve` (pid {pid})")
        except ProcessLookupError:
            path.unlink(missing_ok=True)
    return 0
