"""The interface every backend implements: what a ``byoc`` command or pipeline step asks of the place
it runs. :class:`~byoc.backends.local.LocalBackend` runs it on this machine (processes, or the two
Docker images with ``--containers``); :class:`~byoc.backends.sagemaker.SageMakerBackend` creates
SageMaker resources (``--dry-run`` prints the requests instead).

Arguments that only one backend can honour are part of the signature and refused, with the reason,
by the other one (:meth:`Backend.refuse`), never silently dropped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from byoc.errors import ByocError
from byoc.settings import Settings
from container_serve import content_types as ct
from container_train.hyperparameters import HyperparameterError, Hyperparameters

if TYPE_CHECKING:
    from byoc.aws.autoscaling import EndpointScaling
    from byoc.backends.results import (
        EndpointInfo,
        Explanation,
        Invocation,
        ReportResult,
        TrainResult,
        TransformResult,
        TuneResult,
    )
    from byoc.datasets.prepare import DatasetSummary


class BackendError(ByocError):
    """A job or endpoint operation failed, or an argument does not apply to this backend."""


def job_hyperparameters(values: Mapping[str, Any] | None) -> Hyperparameters:
    """A job's hyperparameters checked against the trainer's table before any job is created, on every
    backend: a typo fails here, in one line, not inside a (billed) job. Already-validated values (the
    CLI's, a tuning spec's) pass through untouched."""
    try:
        return Hyperparameters.of(values)
    except HyperparameterError as e:
        raise BackendError(str(e)) from None


def default_data_dir(source: str) -> Path:
    """Where ``byoc data --source SOURCE`` puts a dataset when no ``--dest`` is given."""
    from byoc.datasets.prepare import SOURCES

    name = "dogImages" if source == "dogimages" else source
    return Path("data") / (name if name in SOURCES else Path(name).name)


class Backend(ABC):
    """One method per operation; each answers a typed result (:mod:`byoc.backends.results`: the same
    fields from every backend) that the CLI prints as JSON and the pipeline records in its state file."""

    name: str

    def __init__(self, settings: Settings):
        self.settings = settings

    def refuse(self, option: str, value, why: str) -> None:
        """Fail on an option this backend cannot honour (when it was given at all)."""
        if value not in (None, False, (), "", {}):
            raise BackendError(f"{option} does not apply to the {self.name} backend: {why}")

    # ---- data --------------------------------------------------------------------------------
    def data(self, source: str, dest: str | None = None, num_classes: int | None = None,
             per_class: int | dict[str, int] = 60, size: int = 64, url: str | None = None) -> DatasetSummary:
        """Prepare a ``train/ valid/ test/`` dataset on this machine (the same on every backend), then
        :meth:`dataset_location`: ``summary.location`` is what :meth:`tune` and :meth:`train` take as
        ``data`` (the folder, or its S3 copy)."""
        from byoc.console import console, progress_bar
        from byoc.datasets import prepare as datasets

        dest_path = Path(dest) if dest else default_data_dir(source)
        if source == "dogimages":
            console.print(f"dogImages: downloading {url or datasets.DOGIMAGES_URL} into {dest_path} "
                          "(resumes if interrupted)")
            with progress_bar("dogImages.zip", unit="bytes") as update:
                summary = datasets.prepare("dogimages", dest_path, url=url or datasets.DOGIMAGES_URL,
                                           on_download=update)
        else:
            self.refuse("--url", url, "it is the dogImages download address")
            summary = datasets.prepare(source, dest_path, per_class=per_class, size=size,
                                       num_classes=num_classes)
        summary.location = self.dataset_location(summary.root, "data")
        return summary

    @abstractmethod
    def dataset_location(self, root: Path, name: str) -> str:
        """Make a prepared dataset folder available to jobs (as is, or uploaded under ``name``)."""

    # ---- tuning and training -------------------------------------------------------------------
    @abstractmethod
    def tune(self, data: str, spec: str, max_jobs: int | None = None, max_parallel_jobs: int | None = None,
             static: dict[str, str] | None = None, out_dir: str | None = None,
             instance_count: int | None = None, distribution: str | None = None,
             storage: str | None = None, study_name: str | None = None, final: bool = True) -> TuneResult:
        """Search hyperparameters; the answer has ``best_hyperparameters`` once the search ended.
        ``instance_count``/``distribution``: every trial's hosts and launcher (None: the spec's).
        ``storage``/``study_name``: a database URL and study that tuners on several machines share
        (local Optuna only; None: ``<out_dir>/study.db``). A head-only spec on SageMaker (and locally
        with the containers) tunes on a features channel (:mod:`byoc.tuning.features_flow`): the
        answer then names the extraction job and the ``features`` archive, and with ``final`` the
        final training job on it. A dry run's ``best_hyperparameters`` hold placeholders."""

    @abstractmethod
    def train(self, data: str, hyperparameters: Mapping[str, Any], job_dir: str | None = None,
              description: str = "training", stop_on: dict[str, dict[str, str]] | None = None,
              debugger: bool = True, instance_count: int = 1, distribution: str | None = None,
              name: str = "train") -> TrainResult:
        """One training job; the answer's ``job`` names it for :meth:`report`. ``hyperparameters`` are
        checked with :func:`job_hyperparameters` before anything starts. ``stop_on``: Debugger
        rules (name -> parameters) whose firing stops the job (SageMaker's StopTraining action).
        ``debugger``: the Debugger hook (hyperparameter ``debugger``; on SageMaker also the built-in
        rules and the profiler); it wins over a ``debugger`` value in ``hyperparameters``.
        ``instance_count``: hosts of the job; ``distribution``: how they (and a host's GPUs) are
        launched, a key of :data:`byoc.tuning.schema.DISTRIBUTIONS` (None: the image decides).
        ``name``: what the job is called (locally its folder ``RUN_DIR/<name>`` unless ``job_dir``; on
        SageMaker part of its job name). The answer's ``model_data`` is the job's ``model.tar.gz``."""

    @abstractmethod
    def report(self, job: str) -> ReportResult:
        """Debugger rule statuses and the profiler report of a finished training job."""

    # ---- the multi-model endpoint --------------------------------------------------------------
    @abstractmethod
    def start_endpoint(self, port: int | None = None, model_root: str | None = None) -> EndpointInfo:
        """Bring up the multi-model endpoint and return where it is (kept until :meth:`stop_endpoint`)."""

    @abstractmethod
    def stop_endpoint(self) -> None:
        """Stop what :meth:`start_endpoint` started in this process (a SageMaker endpoint stays up)."""

    @abstractmethod
    def serve(self, port: int | None = None, model_root: str | None = None) -> int:
        """``byoc serve``: :meth:`start_endpoint`, then (locally) keep it up until Ctrl-C."""

    @abstractmethod
    def deploy(self, artifact: str, name: str, url: str | None = None,
               scaling: EndpointScaling | None = None) -> str:
        """Add a ``model.tar.gz`` to the endpoint under ``name``; returns the name to invoke it by.
        ``scaling``: attach autoscaling to the endpoint's instances (SageMaker only)."""

    @abstractmethod
    def loaded_models(self, url: str | None = None) -> list[str]:
        """The models the endpoint can serve now (locally: loaded; SageMaker: under its prefix)."""

    @abstractmethod
    def invoke(self, image: str, target_model: str | None = None, content_type: str | None = None,
               accept: str = ct.JSON, topk: int | None = None, explain: bool = False,
               url: str | None = None) -> Invocation:
        """Classify one image file (in a dry run nothing is sent: ``sent`` is False)."""

    @abstractmethod
    def explain(self, image: str, target_model: str | None, content_type: str | None, output: str,
                url: str | None = None) -> Explanation:
        """Write the Grad-CAM PNG of the top class to ``output``; returns the prediction."""

    @abstractmethod
    def batch(self, input_dir: str, output_dir: str, target_model: str | None = None,
              model_data: str | None = None, content_type: str | None = None, accept: str = ct.JSON,
              max_payload_mb: int = 6, url: str | None = None) -> TransformResult:
        """Batch transform over a folder: one ``<input>.out`` per input in ``output_dir``."""

    @abstractmethod
    def cleanup(self, keep_data: bool = False) -> int:
        """Stop or delete what this run created."""
