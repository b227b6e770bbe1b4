"""What a :class:`~byoc.backends.base.Backend` operation answers: one small dataclass per operation, the
same fields from every backend (a field one backend cannot know is ``None`` there), so the pipeline and
the CLI read attributes and never ask which backend ran.

A dry run is a field (``dry_run``), never guessed from an empty answer. :meth:`Result.to_dict` is the
plain data the CLI prints and the pipeline's ``state.json`` keeps (the field names are its keys);
:meth:`Result.from_dict` reads it back, so a resumed pipeline gets the same types as a fresh one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from container_train.hyperparameters import Hyperparameters

# A value ``to_dict`` writes for a field that holds another result, and ``from_dict`` turns back.
_NESTED: dict[str, type[Result]] = {}


@dataclass(frozen=True)
class Result:
    """Base of every answer: to and from plain data."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None):
        """The result ``to_dict`` wrote (keys it does not know are ignored: an older state file)."""
        data = data or {}
        values = {}
        for f in fields(cls):
            if f.name in data:
                value = data[f.name]
                nested = _NESTED.get(f"{cls.__name__}.{f.name}")
                if nested is not None and value is not None:
                    value = nested.from_dict(value)
                elif f.name == "best_hyperparameters" and value is not None:
                    value = Hyperparameters.of(value)
                values[f.name] = value
        return cls(**values)


def _plain(value: Any) -> Any:
    if isinstance(value, Result):
        return value.to_dict()
    if isinstance(value, Hyperparameters):
        return dict(value)          # typed values are JSON as they are; a dry run's Pending prints as text
    return value


@dataclass(frozen=True)
class TrainResult(Result):
    """One training job. ``job`` is what :meth:`~byoc.backends.base.Backend.report` takes (the local
    job folder, or the SageMaker job name); ``model_data`` is the job's ``model.tar.gz`` where
    :meth:`~byoc.backends.base.Backend.deploy` takes it (``<job>/output/model.tar.gz``, SageMaker's
    layout, locally a folder and on SageMaker under the run's S3 prefix)."""

    job: str
    model_data: str | None = None
    status: str = "Completed"               # SageMaker's TrainingJobStatus; "NotSent" in a dry run
    dry_run: bool = False
    note: str | None = None                 # e.g. stopped at its time limit, model kept
    model_dir: str | None = None            # local only: the unpacked model folder
    job_dir: str | None = None              # local only: the /opt/ml tree of the job
    output_data_dir: str | None = None      # local only
    log: str | None = None                  # local only
    test: dict | None = None                # {"accuracy", "loss", "images"} when the job tested
    best_valid_acc: float | None = None
    stopped_by_rule: str | None = None      # local only: the Debugger rule that stopped the job


@dataclass(frozen=True)
class TuneResult(Result):
    """A hyperparameter search. ``best_hyperparameters`` is what the final job takes: after a dry run,
    the static values with a placeholder for each tuned one (they exist once the search ended)."""

    out_dir: str | None = None
    best_hyperparameters: Hyperparameters | None = None
    best_value: float | None = None
    best_trial: int | None = None           # local: the Optuna trial
    best_training_job: str | None = None    # SageMaker: the best trial's job
    tuning_job: str | None = None           # SageMaker
    leaderboard: str | None = None          # local: leaderboard.csv
    report: str | None = None               # local: tuning-report.html
    plots: dict[str, str] = field(default_factory=dict)
    extraction_job: str | None = None       # head-only specs: the features' job, its archive, reused or not
    features: str | None = None
    features_reused: bool | None = None
    final: TrainResult | None = None        # head-only specs with a final job
    dry_run: bool = False


@dataclass(frozen=True)
class ReportResult(Result):
    """Debugger rule statuses (rule -> RuleEvaluationStatus) and the profiler report of a job."""

    job: str
    rules: dict[str, str] = field(default_factory=dict)
    rules_dir: str | None = None            # local only: one JSON per rule
    profiler_report: str | None = None      # the HTML, once written (downloaded on SageMaker)

    @property
    def fired(self) -> list[str]:
        return [rule for rule, status in self.rules.items() if status == "IssuesFound"]


@dataclass(frozen=True)
class EndpointInfo(Result):
    """Where the multi-model endpoint answers (a URL, or a SageMaker endpoint name) and where models go
    (a folder, or an S3 prefix)."""

    address: str
    models_at: str
    status: str = "InService"
    dry_run: bool = False


@dataclass(frozen=True)
class Invocation(Result):
    """One answer of the endpoint; ``sent`` is False in a dry run (nothing was sent, nothing answered)."""

    content_type: str
    body: bytes
    sent: bool = True


@dataclass(frozen=True)
class Explanation(Result):
    """A Grad-CAM explanation written to ``png`` (None in a dry run) and the prediction it explains."""

    label: str | None = None
    probability: float | None = None
    png: str | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class TransformResult(Result):
    """A batch transform: the ``<input>.out`` files written, the inputs that failed (name -> why)."""

    outputs: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    transform_job: str | None = None        # SageMaker only
    dry_run: bool = False


_NESTED["TuneResult.final"] = TrainResult
