"""``best_hyperparameters.json``: what a tuning run hands to the final training job, one schema for
both backends.

The local tuner (:mod:`byoc.tuning.local_tuner`) and the SageMaker backend's ``tune`` write it with
:func:`write_best_hyperparameters` into the tuning output dir; ``byoc train --from-tuning DIR``
reads it with :func:`read_best_hyperparameters`. Schema (every key always present)::

    {
      "objective": {"metric": "validation:accuracy",     # the spec's objective
                    "direction": "Maximize",            # Maximize | Minimize
                    "value": 0.8125},                   # the best objective value; null if not finite
      "hyperparameters": {"arch": "resnet50", "pretrained": "true", "lr": "0.01", ...},
                                                        # the final job's full set: static + tuned
      "tuned": {"lr": "0.01", "batch-size": "32"},      # the tuned subset
      "trial": 3,                                       # local: the Optuna trial number, else null
      "training_job": null,                             # SageMaker: the best training job, else null
      "job_dir": "/abs/out/trials/trial-0003"           # local: the best trial's job dir, else null
    }

Hyperparameter values are strings exactly as SageMaker hands them to a training job (booleans
lower-case: ``container_train.hyperparameters.to_sagemaker_strings``), whichever backend tuned.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from byoc.tuning.errors import TuningError
from byoc_common import durable
from container_train.hyperparameters import (
    HyperparameterError,
    Hyperparameters,
    Pending,
    to_sagemaker_strings,
)

BEST_HYPERPARAMETERS = "best_hyperparameters.json"


def write_best_hyperparameters(out_dir: str | Path, *, metric: str, direction: str, value: float | None,
                               hyperparameters: Mapping[str, Any], tuned: Mapping[str, Any],
                               trial: int | None = None, training_job: str | None = None,
                               job_dir: str | Path | None = None) -> Path:
    """Write ``<out_dir>/best_hyperparameters.json`` (the schema above; ``out_dir`` is created);
    returns its path. The file is replaced atomically, so a reader never sees half of it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    finite = value is not None and math.isfinite(value)
    doc = {
        "objective": {"metric": metric, "direction": direction, "value": float(value) if finite else None},
        "hyperparameters": to_sagemaker_strings(dict(hyperparameters)),
        "tuned": to_sagemaker_strings(dict(tuned)),
        "trial": trial,
        "training_job": training_job,
        "job_dir": None if job_dir is None else str(job_dir),
    }
    path = out / BEST_HYPERPARAMETERS
    return durable.write_json(path, doc, indent=2)


def read_best_hyperparameters(tune_dir: str | Path) -> Hyperparameters:
    """The final job's hyperparameters from ``<tune_dir>/best_hyperparameters.json``, validated and
    typed (the file is an edge: it may be hand-edited). Raises :class:`TuningError` when the file is
    missing, not of the schema above, or holds a value the trainer would refuse."""
    path = Path(tune_dir) / BEST_HYPERPARAMETERS
    if not path.is_file():
        raise TuningError(f"{path} does not exist: run `byoc tune` first (or pass --hp values)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TuningError(f"cannot read {path}: {e}") from None
    hyperparameters = doc.get("hyperparameters") if isinstance(doc, dict) else None
    if not isinstance(hyperparameters, dict):
        raise TuningError(f"{path} has no 'hyperparameters' mapping: it was not written by `byoc tune`")
    try:
        return Hyperparameters.parse(hyperparameters)
    except HyperparameterError as e:
        raise TuningError(f"{path}: {e}") from None


def placeholder_best(parameter_names, tuning_job: str) -> dict[str, Pending]:
    """What a dry run shows for the tuned values of a final job: they exist once the tuning job ended."""
    return {name: Pending(tuning_job) for name in parameter_names}
