"""How the spec's search maps onto Optuna: sampler, pruner, suggestions, the persistent study.

=================  ===========================================  =====================================
spec               Optuna                                        why
=================  ===========================================  =====================================
Bayesian           TPESampler (constant liar for parallel jobs)  model-based, like SageMaker's Bayesian
Random             RandomSampler                                 independent draws
Grid               GridSampler over the categorical values       every combination once
Hyperband          TPESampler + HyperbandPruner                  Hyperband stops jobs by itself
early_stopping     Auto: MedianPruner; Off: no pruning           SageMaker's median stopping rule
=================  ===========================================  =====================================

The study lives in ``<out>/study.db`` (SQLite): a killed tuner loses nothing that finished.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna

from byoc.tuning.errors import TuningError
from byoc.tuning.spec import TuningSpec

# Auto early stopping compares a running trial with the median of finished trials at the same epoch;
# it starts once this many trials have finished (SageMaker waits for a few jobs, too).
PRUNE_STARTUP_TRIALS = 2
STUDY_FILE = "study.db"


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler for ask-and-tell: its ``after_trial`` only calls ``study.stop()`` when the grid
    is exhausted, which Optuna allows only inside ``study.optimize``; the tuner counts trials itself."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def make_sampler(spec: TuningSpec) -> optuna.samplers.BaseSampler:
    if spec.strategy == "Grid":
        return AskTellGridSampler(spec.grid(), seed=spec.random_seed)
    if spec.strategy == "Random":
        return optuna.samplers.RandomSampler(seed=spec.random_seed)
    # Bayesian and Hyperband. A small budget should still get some model-based trials.
    startup = max(1, min(10, spec.max_jobs // 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=spec.random_seed, n_startup_trials=startup,
                                          constant_liar=spec.max_parallel_jobs > 1)


def make_pruner(spec: TuningSpec) -> optuna.pruners.BasePruner:
    if spec.strategy == "Hyperband":
        hb = spec.hyperband_resources()       # the resources SageMaker would use, or SpecError
        return optuna.pruners.HyperbandPruner(min_resource=hb.min_resource, max_resource=hb.max_resource)
    if spec.early_stopping == "Auto":
        return optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP_TRIALS, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, spec: TuningSpec) -> dict[str, Any]:
    """Ask the trial for a value of every tuned parameter."""
    values: dict[str, Any] = {}
    for p in spec.parameters:
        if p.kind == "categorical":
            values[p.name] = trial.suggest_categorical(p.name, list(p.values))
        elif p.kind == "integer":
            values[p.name] = trial.suggest_int(p.name, int(p.min_value), int(p.max_value), log=p.log)
        else:
            values[p.name] = trial.suggest_float(p.name, float(p.min_value), float(p.max_value), log=p.log)
    return values


def storage_url(out_dir: Path) -> str:
    return f"sqlite:///{Path(out_dir).resolve() / STUDY_FILE}"


def open_study(spec: TuningSpec, out_dir: Path, study_name: str = "tuning") -> optuna.Study:
    """Create the study in ``<out_dir>/study.db`` or load it to continue."""
    storage = optuna.storages.RDBStorage(
        storage_url(out_dir),
        # Worker threads report intermediate values while the main thread asks and tells.
        engine_kwargs={"connect_args": {"timeout": 60}},
    )
    study = optuna.create_study(
        study_name=study_name, storage=storage, load_if_exists=True,
        direction="maximize" if spec.objective.maximize else "minimize",
        sampler=make_sampler(spec), pruner=make_pruner(spec))
    expected = optuna.study.StudyDirection.MAXIMIZE if spec.objective.maximize else \
        optuna.study.StudyDirection.MINIMIZE
    if study.direction != expected:
        raise TuningError(f"{out_dir / STUDY_FILE} holds a study that {study.direction.name.lower()}s its "
                         f"objective, but the spec says {spec.objective.direction}; use another --out")
    return study
