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

The study lives in ``<out>/study.db`` (SQLite) unless a storage URL is given: a killed tuner loses
nothing that finished. A URL of a database server (``postgresql+psycopg2://user:password@host/db``,
Optuna's RDB storage through SQLAlchemy) lets tuners on several machines share one study
(:mod:`byoc.tuning.budget` keeps their trials apart and the budget whole). Each of them then
samples with the spec's seed mixed with its own identity: two tuners seeded alike would otherwise
draw the same values in the same order.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from byoc.tuning.errors import TuningError
from byoc.tuning.schema import DEFAULT_STUDY_NAME
from byoc.tuning.spec import TuningSpec

# Auto early stopping compares a running trial with the median of finished trials at the same epoch;
# it starts once this many trials have finished (SageMaker waits for a few jobs, too).
PRUNE_STARTUP_TRIALS = 2
STUDY_FILE = "study.db"
# Tuners that start together on an empty database create its tables at the same moment; the loser
# of that race gets an error, and its next attempt finds the tables made.
STORAGE_ATTEMPTS = 3


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler for ask-and-tell: its ``after_trial`` only calls ``study.stop()`` when the grid
    is exhausted, which Optuna allows only inside ``study.optimize``; the tuner counts trials itself."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def sampler_seed(spec: TuningSpec, worker: str | None = None) -> int | None:
    """The spec's seed, or (for one of several tuners on a shared study) that seed mixed with the
    tuner's identity."""
    if spec.random_seed is None or worker is None:
        return spec.random_seed
    return int.from_bytes(hashlib.sha256(f"{spec.random_seed}:{worker}".encode()).digest()[:4], "big")


def make_sampler(spec: TuningSpec, worker: str | None = None) -> optuna.samplers.BaseSampler:
    seed = sampler_seed(spec, worker)
    if spec.strategy == "Grid":
        return AskTellGridSampler(spec.grid(), seed=seed)
    if spec.strategy == "Random":
        return optuna.samplers.RandomSampler(seed=seed)
    # Bayesian and Hyperband. A small budget should still get some model-based trials.
    startup = max(1, min(10, spec.max_jobs // 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup,
                                          constant_liar=spec.max_parallel_jobs > 1 or worker is not None)


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
    """The default storage: SQLite in the run folder."""
    return f"sqlite:///{Path(out_dir).resolve() / STUDY_FILE}"


def describe_storage(url: str) -> str:
    """``url`` with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return "<malformed storage URL>"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on ``url`` (creating its tables when the database has none)."""
    try:
        dialect = make_url(url).get_dialect().name
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError):
        raise TuningError(f"--storage {describe_storage(url)!r} is not a database URL SQLAlchemy knows (e.g. "
                          "postgresql+psycopg2://user:password@host:5432/db, or sqlite:////path/study.db)") from None
    if dialect == "sqlite":
        # Worker threads report intermediate values while the main thread asks and tells.
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        # A long study outlives idle connections a server or a firewall closes.
        engine_kwargs = {"pool_pre_ping": True}
    for attempt in range(1, STORAGE_ATTEMPTS + 1):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except ImportError:      # the dialect's driver, imported when Optuna makes the engine
            raise TuningError(f"the storage {describe_storage(url)} needs its Python database driver, which "
                              "is not installed (PostgreSQL: pip install psycopg2-binary)") from None
        except sqlalchemy.exc.SQLAlchemyError as e:
            # A table or row made by another tuner in the same moment (PostgreSQL: duplicate key
            # or "relation already exists").
            raced = isinstance(e, sqlalchemy.exc.IntegrityError | sqlalchemy.exc.ProgrammingError)
            if raced and attempt < STORAGE_ATTEMPTS:
                continue
            reason = getattr(e, "orig", None) or e
            raise TuningError(f"cannot open the study storage {describe_storage(url)}: "
                              f"{str(reason).strip().splitlines()[0]}") from None
    raise AssertionError("unreachable")


def open_study(spec: TuningSpec, out_dir: Path, study_name: str = DEFAULT_STUDY_NAME,
               storage: str | None = None, worker: str | None = None) -> optuna.Study:
    """Create the study (in ``<out_dir>/study.db``, or in ``storage``) or load it to continue.
    ``worker``: this tuner's identity when the study is shared (:func:`sampler_seed`)."""
    url = storage or storage_url(out_dir)
    study = optuna.create_study(
        study_name=study_name, storage=open_storage(url), load_if_exists=True,
        direction="maximize" if spec.objective.maximize else "minimize",
        sampler=make_sampler(spec, worker), pruner=make_pruner(spec))
    expected = optuna.study.StudyDirection.MAXIMIZE if spec.objective.maximize else \
        optuna.study.StudyDirection.MINIMIZE
    if study.direction != expected:
        where = out_dir / STUDY_FILE if storage is None else f"study {study_name} in {describe_storage(url)}"
        raise TuningError(f"{where} holds a study that {study.direction.name.lower()}s its "
                          f"objective, but the spec says {spec.objective.direction}; use another "
                          + ("--out" if storage is None else "--study-name"))
    return study
