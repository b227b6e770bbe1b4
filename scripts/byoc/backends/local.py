"""The local backend: everything on this machine, as processes (default) or as the two Docker
images (``--containers``). No AWS account, no network.

A running ``byoc serve`` records itself in ``<run dir>/endpoint.json`` (URL, model root, pid) so
``deploy``/``invoke``/``batch``/``explain`` in another terminal find it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from byoc.backends.base import Backend, BackendError, job_hyperparameters
from byoc.backends.results import (
    EndpointInfo,
    Explanation,
    Invocation,
    ReportResult,
    TrainResult,
    TransformResult,
    TuneResult,
)
from byoc.console import console, progress_bar
from byoc.local.client import EndpointClient
from byoc.local.endpoint import LocalEndpoint
from byoc.local.multi_host import local_training_job
from byoc.local.training_job import TrainingJob, TrainingJobResult
from byoc_common.sagemaker_paths import JOB_LOG_FILE, OUTPUT_DATA_DIR
from container_serve import content_types as ct
from container_train.contract import (
    FEATURE_CACHE_DIR,
    FEATURES_CHANNEL,
    TASK_EXTRACT_FEATURES,
    completed_epochs,
    extract_progress,
)
from container_train.hyperparameters import HYPERPARAMETERS, Hyperparameters

ENDPOINT_FILE = "endpoint.json"
PROGRESS_POLL_S = 0.5       # how often the epoch bar re-reads the job log


def _job_progress(log_text: str, extracting: bool) -> tuple[int, int | None]:
    """(done, total) for a job's bar: images of a feature extraction (its ``[extract]`` lines), else epochs."""
    if extracting:
        latest = extract_progress(log_text)
        return (0, None) if latest is None else (latest[0], latest[1])
    return len(completed_epochs(log_text)), None


class LocalBackend(Backend):
    name = "local"

    def __init__(self, settings):
        super().__init__(settings)
        self._endpoint: LocalEndpoint | None = None
        self._info: dict | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.settings.run_dir)

    @property
    def feature_cache_dir(self) -> Path:
        """The frozen-backbone feature cache of this run dir, shared by its tuning trials and its
        training jobs: a job on the same data, model and input size reads the features instead of
        running the backbone again (``container_train.feature_cache`` keys them)."""
        return self.run_dir / FEATURE_CACHE_DIR

    def _train_image(self) -> str | None:
        return self.settings.train_image_local if self.settings.containers else None

    def dataset_location(self, root, name):
        return str(Path(root))

    # ---- tuning and training -------------------------------------------------------------------
    def tune(self, data, spec, max_jobs=None, max_parallel_jobs=None, static=None, out_dir=None,
             instance_count=None, distribution=None, storage=None, study_name=None, final=True):
        """Optuna on this machine (:mod:`byoc.tuning.local_tuner`); resumable; with ``storage``,
        one of several tuners sharing a study. With a head-only spec the trials read a features
        channel, as on SageMaker (:mod:`byoc.tuning.features_flow`)."""
        from byoc.tuning.features_flow import blocker
        from byoc.tuning.local_tuner import channels_from_data_dir, run_local_tuning
        from byoc.tuning.search import DEFAULT_STUDY_NAME
        from byoc.tuning.spec import load_spec

        loaded = load_spec(spec).with_overrides(static=static or None, instance_count=instance_count,
                                                distribution=distribution)
        out = Path(out_dir) if out_dir else self.run_dir / "tune"
        channels, features = channels_from_data_dir(data), {}
        # Head-only: extract once, then every trial trains on the features (processes and containers alike),
        # so no trial idles while another runs the backbone (issue 25: trial 1 waited 61 s for trial 0's).
        not_head_only = blocker(loaded)
        if not not_head_only:
            features = self._extraction(data, loaded)
            channels = {FEATURES_CHANNEL: features["features"]}
        result = run_local_tuning(loaded, channels, out, max_jobs=max_jobs,
                                  max_parallel=max_parallel_jobs, image=self._train_image(), storage=storage,
                                  study_name=study_name or DEFAULT_STUDY_NAME,
                                  feature_cache_dir=self.feature_cache_dir)
        if not result.best_hyperparameters:
            raise BackendError(f"no tuning trial finished with a {loaded.objective.metric} value; see the "
                               f"trial logs under {out / 'trials'} and {result.leaderboard_csv}")
        final_job = None
        if not not_head_only and final:
            # On the trials' hosts: the tuned learning rate belongs to their global batch (issue 24 item 4).
            final_job = self._run_job(channels, result.best_hyperparameters, out / "final", "final job", None,
                                      True, loaded.instance_count, loaded.distribution)
        return TuneResult(out_dir=str(out), best_trial=result.best_trial, best_value=result.best_value,
                          best_hyperparameters=result.best_hyperparameters, leaderboard=str(result.leaderboard_csv),
                          report=str(result.report), plots={k: str(v) for k, v in result.plots.items()},
                          final=final_job, **features)

    def _extraction(self, data, spec) -> dict:
        """The dataset's features as a ``features`` channel folder holding the extraction job's
        ``model.tar.gz`` (what an S3Prefix channel on a SageMaker job's artifact delivers): computed
        by a task=extract-features job in the training image, or reused from this run dir when the
        image, the data and the hyperparameters are the same (the folder is named by that key). Returns
        :class:`TuneResult`'s fields about the features channel."""
        from byoc.packaging import package_job_output
        from byoc.tuning.features_flow import extraction_hyperparameters, features_key, folder_version
        from byoc.tuning.local_tuner import channels_from_data_dir

        hps = extraction_hyperparameters(spec)
        key = features_key(self._train_image() or "process mode", folder_version(data), hps)
        job_dir = self.run_dir / "features" / key[:16]
        archive = job_dir / "channel" / "model.tar.gz"
        if archive.is_file():
            console.print(f"features: reusing {archive}")
            return {"extraction_job": str(job_dir / "job"), "features": str(archive.parent), "features_reused": True}
        summary = self._run_job(channels_from_data_dir(data), hps, job_dir / "job", "feature extraction", None,
                                False, 1, None)
        package_job_output(summary.model_dir, archive)
        return {"extraction_job": str(job_dir / "job"), "features": str(archive.parent), "features_reused": False}

    def train(self, data, hyperparameters, job_dir=None, description="training", stop_on=None, debugger=True,
              instance_count=1, distribution=None, name="train"):
        """One job in a SageMaker-shaped ``/opt/ml`` tree; an epoch bar; the log path on failure."""
        hyperparameters = job_hyperparameters(hyperparameters)     # before anything is created
        if not Path(data).is_dir():
            raise FileNotFoundError(f"dataset {data} does not exist (prepare one with `byoc data`)")
        return self._run_job({"training": Path(data)}, hyperparameters,
                             Path(job_dir) if job_dir else self.run_dir / name, description, stop_on, debugger, instance_count, distribution)

    def _run_job(self, channels, hyperparameters, job_dir, description, stop_on, debugger, instance_count,
                 distribution) -> TrainResult:
        self.refuse("--no-debugger with --stop-on", bool(stop_on) and not debugger,
                    "the rules read the tensors the Debugger hook saves")
        hyperparameters = Hyperparameters.of(hyperparameters) | {HYPERPARAMETERS["debugger"].name: debugger}
        job_dir_path = Path(job_dir)
        log_file = job_dir_path / JOB_LOG_FILE
        log_file.unlink(missing_ok=True)
        try:   # more than one host: algo-1, algo-2, ... on 127.0.0.1 (byoc.local.multi_host)
            job = local_training_job(job_dir_path, hyperparameters, channels, instance_count,
                                     distribution, image=self._train_image(), log_file=log_file,
                                     feature_cache_dir=self.feature_cache_dir)
        except ValueError as e:
            raise BackendError(str(e)) from None
        extracting = hyperparameters.get("task") == TASK_EXTRACT_FEATURES      # images, not epochs, to count
        with progress_bar(description, total=None if extracting else int(hyperparameters.get("epochs", 5))) as update:
            job.start()
            with _rule_watcher(job, stop_on) as watcher:
                while job.running():
                    update(*_job_progress(job.log_text(), extracting))
                    time.sleep(PROGRESS_POLL_S)
            result = job.wait()
            update(*_job_progress(result.log_text, extracting))
        if not result.ok:
            raise BackendError(f"training job in {job_dir_path} failed (exit {result.returncode}): "
                               f"{result.failure_reason or 'see the log'}; log: {log_file}")
        # SageMaker tars /opt/ml/model into <job>/output/model.tar.gz when a job ends; so does this.
        from byoc.packaging import package_model

        archive = None if extracting else package_model(result.model_dir, job_dir_path / "output" / "model.tar.gz")
        return _train_summary(job_dir_path, result, log_file, watcher, archive)

    def report(self, job):
        from byoc.report import build_profiler_report
        from byoc.rules import job_tensor_dir, run_rules

        output_data = Path(job) / OUTPUT_DATA_DIR
        if not output_data.is_dir():
            raise FileNotFoundError(f"{output_data} does not exist: is {job} a finished training job?")
        results = run_rules(job_tensor_dir(output_data), out_dir=output_data / "rules")
        html = build_profiler_report(output_data)
        return ReportResult(job=str(job), rules={r.rule: r.status for r in results},
                            rules_dir=str(output_data / "rules"), profiler_report=str(html))

    # ---- the endpoint --------------------------------------------------------------------------
    def start_endpoint(self, port=None, model_root=None):
        """Start the multi-model endpoint (once per process) and record it in endpoint.json."""
        if self._endpoint is None:
            _refuse_live_record(self.run_dir / ENDPOINT_FILE)
            root = Path(model_root) if model_root else self.run_dir / "endpoint" / "models"
            root.mkdir(parents=True, exist_ok=True)
            self._endpoint = LocalEndpoint(
                port=port, model_root=root, multi_model=True,
                image=self.settings.serve_image_local if self.settings.containers else None,
                log_file=self.run_dir / "endpoint" / "server.log").start()
            self._info = _write_endpoint_info(self.run_dir / ENDPOINT_FILE, self._endpoint)
        return EndpointInfo(address=self._info["url"], models_at=self._info["model_root"])

    def stop_endpoint(self):
        if self._endpoint is not None:
            self._endpoint.stop()
            (self.run_dir / ENDPOINT_FILE).unlink(missing_ok=True)
            self._endpoint = self._info = None

    def serve(self, port=None, model_root=None):
        info = self.start_endpoint(port or self.settings.port, model_root)
        console.print(f"[green]endpoint up[/] at {info.address} (models from {info.models_at}); "
                      f"recorded in {self.run_dir / ENDPOINT_FILE}")
        console.print("deploy with `byoc deploy MODEL.tar.gz --name NAME`; Ctrl-C stops it")
        stop: list[bool] = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
        try:
            while not stop:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            console.print("stopping the endpoint")
            self.stop_endpoint()
        return 0

    def endpoint_info(self, url: str | None = None) -> dict:
        """The endpoint this process started, else the one ``byoc serve`` recorded; ``url`` wins."""
        path = self.run_dir / ENDPOINT_FILE
        info = dict(self._info) if self._info else (json.loads(path.read_text()) if path.is_file() else {})
        if url:
            info["url"] = url
        info.setdefault("url", f"http://127.0.0.1:{self.settings.port}")
        return info

    def _client(self, url: str | None) -> EndpointClient:
        return EndpointClient(self.endpoint_info(url)["url"])

    def deploy(self, artifact, name, url=None, scaling=None):
        """Unpack ``artifact`` under the endpoint's model root (as SageMaker does) and load it; a
        model already loaded under ``name`` is replaced."""
        from container_serve.model_archive import deploy_model

        self.refuse("--max-instances", scaling, "the local endpoint is one server on this machine")

        info = self.endpoint_info(url)
        if "model_root" not in info:
            raise FileNotFoundError(f"no running endpoint recorded in {self.run_dir / ENDPOINT_FILE}: "
                                    "start one with `byoc serve` (same --run-dir)")
        deploy_model(artifact, info["model_root"], name, overwrite=True)
        self._client(url).deploy(name, f"{info['server_model_root']}/{name}", replace=True)
        return name

    def loaded_models(self, url=None):
        return self._client(url).model_names()

    def invoke(self, image, target_model=None, content_type=None, accept=ct.JSON, topk=None, explain=False,
               url=None):
        return Invocation(*self._client(url).classify_file(image, target_model, content_type, accept, topk, explain))

    def explain(self, image, target_model, content_type, output, url=None):
        prediction = self._client(url).explain_to_png(image, output, target_model, content_type)
        return Explanation(label=prediction.get("label"), probability=prediction.get("probability"), png=str(output))

    def batch(self, input_dir, output_dir, target_model=None, model_data=None, content_type=None,
              accept=ct.JSON, max_payload_mb=6, url=None):
        self.refuse("--model-data", model_data, "the local endpoint serves the models deployed to it; "
                    "name one with --target-model")
        with progress_bar("batch transform") as update:
            result = self._client(url).transform_folder(input_dir, output_dir, target_model, content_type,
                                                        accept, max_payload_mb, on_progress=update)
        return TransformResult(outputs=[str(p) for p in result.outputs], failures=result.failures)

    def cleanup(self, keep_data=False):
        """Stop a ``byoc serve`` recorded for this run dir (local data is never deleted)."""
        self.refuse("--keep-data", keep_data, "local cleanup only stops the endpoint; it deletes no data")
        path = self.run_dir / ENDPOINT_FILE
        if not path.is_file():
            console.print(f"nothing to clean up: no {path}")
            return 0
        pid = json.loads(path.read_text()).get("pid")
        try:
            os.kill(int(pid), signal.SIGTERM)
            console.print(f"stopped `byoc serve` (pid {pid})")
        except (ProcessLookupError, TypeError, ValueError):
            path.unlink(missing_ok=True)
        return 0


def _refuse_live_record(path: Path) -> None:
    """A run dir records one endpoint: refuse a second while the `byoc serve` that wrote it lives, so
    its record (what `byoc cleanup` and `byoc invoke` find) is never overwritten or deleted by another."""
    try:
        info = json.loads(path.read_text())
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return      # no record or an unreadable one
    if pid == os.getpid():
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return      # its process is gone: a stale record is replaced
    except PermissionError:
        pass        # alive, another user's
    raise BackendError(f"{path} records an endpoint already running at {info.get('url')} (pid {pid}); "
                       "stop it with `byoc cleanup` or use another --run-dir")


def _write_endpoint_info(path: Path, ep: LocalEndpoint) -> dict:
    """Record a started endpoint: its URL, where models are placed on this machine, and where the
    server sees them (the same folder in process mode, /opt/ml/models inside the container)."""
    info = {"url": ep.url, "model_root": str(ep.model_root),
            "server_model_root": str(Path(ep.model_url("x")).parent), "pid": os.getpid()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=1))
    return info


class _NoWatcher:
    stop_reason = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def _rule_watcher(job: TrainingJob, stop_on: dict[str, dict[str, str]] | None):
    """The local StopTraining action: a :class:`~byoc.rules.RuleWatcher` on the job's tensors that
    stops the job (SIGTERM to the trainer) when one of ``stop_on`` fires."""
    if not stop_on:
        return _NoWatcher()
    from byoc.rules import RuleWatcher, job_tensor_dir

    return RuleWatcher(job_tensor_dir(job.job_dir / OUTPUT_DATA_DIR), job, rules=stop_on, stop_on=list(stop_on),
                       out_dir=job.job_dir / OUTPUT_DATA_DIR / "rules")


def _train_summary(job_dir: Path, result: TrainingJobResult, log_file: Path, watcher,
                   archive: Path | None) -> TrainResult:
    metrics = result.metrics or {}
    accs = [h["valid_acc"] for h in metrics.get("history", []) if h.get("valid_acc") is not None]
    return TrainResult(job=str(job_dir), model_data=None if archive is None else str(archive), job_dir=str(job_dir),
                       model_dir=str(result.model_dir), output_data_dir=str(result.output_data_dir), log=str(log_file),
                       test=metrics.get("test"), best_valid_acc=max(accs) if accs else None,
                       stopped_by_rule=watcher.stop_reason)
