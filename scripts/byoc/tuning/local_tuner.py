"""Hyperparameter tuning on this machine, with the same spec a SageMaker tuning job uses.

Every trial is a real training job (``byoc.local.training_job``: process mode, or container
mode when an image is given) in ``<out>/trials/trial-NNNN/``; up to ``max_parallel_jobs`` run at
once. All trials share one frozen-backbone feature cache, ``<out>/feature-cache``
(``container_train.feature_cache``): with ``freeze=head`` the first trial computes the backbone's
features and every later one loads them. The study is kept in ``<out>/study.db`` (SQLite), so
running the same command again after the tuner was killed continues where it stopped:

* finished trials (complete, pruned, failed) are kept and count towards ``max_jobs``;
* trials that were running when the tuner died are marked failed with ``interrupted`` (not counted),
  their orphaned training processes are killed, and they are queued again with the same
  hyperparameters, resuming from their last epoch checkpoint.

With ``storage`` (a database URL, ``byoc tune --storage``) the study lives in that database instead
and tuners on several machines, each with its own ``out_dir``, share it: together they run the
budget once, no trial twice (:mod:`byoc.tuning.budget`); each one recovers only the trials its
own machine's dead tuners left.

Results: ``leaderboard.csv``/``.json`` (:mod:`byoc.tuning.leaderboard`) and
``best_hyperparameters.json`` (:mod:`byoc.tuning.best`). ``byoc tune`` is the command line; from
Python::

    result = run_local_tuning("local-demo", channels_from_data_dir("data/demo"), "runs/tune")
    result.best_hyperparameters, result.best_value, result.leaderboard_csv
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from byoc.tuning import budget, leaderboard, report, search
from byoc.tuning.display import LiveDisplay, PlainDisplay
from byoc.tuning.errors import TuningError
from byoc.tuning.spec import TuningSpec, load_spec, to_dict, trial_hyperparameters
from byoc.tuning.trial_runner import TrialOutcome, run_trial
from byoc_common.sagemaker_paths import JOB_LOG_FILE
from container_train.contract import CHANNEL_SPLITS, FEATURE_CACHE_DIR
from container_train.hyperparameters import DEFAULTS

TRIALS_DIR = "trials"
LOCK_FILE = ".tuner.lock"
COUNTS_REFRESH_S = 1.0       # how often the progress counts are redrawn while trials run


@dataclass
class TuningResult:
    out_dir: Path
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any]               # tuned values only
    best_hyperparameters: dict[str, Any]      # static + tuned: what a final training job needs
    leaderboard: list[dict[str, Any]]
    leaderboard_csv: Path
    leaderboard_json: Path
    best_hyperparameters_path: Path | None
    study_path: Path | None                   # <out>/study.db; None when the study is in --storage
    storage: str = ""                         # where the study is (password hidden)
    report: Path | None = None                # tuning-report.html (byoc.tuning.report)
    plots: dict[str, Path] = field(default_factory=dict)   # history / importances PNGs
    counts: dict[str, int] = field(default_factory=dict)


def channels_from_data_dir(data_dir: str | Path) -> dict[str, str]:
    """``train/ valid/ test/`` under an ImageFolder root -> the trainer's channels
    (``container_train.contract.CHANNEL_SPLITS``); only the splits present."""
    root = Path(data_dir)
    channels = {name: str(root / split) for name, split in CHANNEL_SPLITS.items() if (root / split).is_dir()}
    if "training" not in channels:
        raise TuningError(f"{root} has no train/ folder (expected the layout train/ valid/ test/)")
    return channels


def trial_channels(channels: dict[str, str]) -> dict[str, str]:
    """A local trial's channels: all but ``test``. The objective is a validation metric and nothing
    reads a trial's test figures, while its test pass ran the test split through the whole network
    (59-87 s a trial in issue 25's demo run); the final job, which is tested, gets every channel."""
    return {name: path for name, path in channels.items() if name != "test"}


def thread_share(parallel: int, cores: int | None = None) -> dict[str, str]:
    """Each of ``parallel`` trials' share of this machine's cores, as ``OMP_NUM_THREADS`` (torch's
    intra-op threads). On SageMaker every trial has its own instance; here they share one, and torch's
    default (a thread per core in every trial) made OpenMP threads spin against each other: a head-only
    epoch took 8 s instead of 2 with two trials on 2 cores (issue 25). A value already in this
    process's environment wins."""
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    cores = cores or len(os.sched_getaffinity(0))
    return {"OMP_NUM_THREADS": str(max(1, cores // max(1, parallel)))}


# ---- study bookkeeping ----------------------------------------------------------------------------

def _lock(out_dir: Path):
    handle = open(out_dir / LOCK_FILE, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise TuningError(f"another tuner is running on {out_dir} (lock {out_dir / LOCK_FILE})") from None
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _check_same_search(study: optuna.Study, spec: TuningSpec, where: str) -> None:
    """A study dir belongs to one search; budget and parallelism may change between runs. The refusal
    names what changed (the pipeline's tuning, for instance, adds its own static hyperparameters)."""
    current = {k: v for k, v in to_dict(spec).items() if k not in ("max_jobs", "max_parallel_jobs")}
    stored = study.user_attrs.get("spec")
    if stored is None:
        study.set_user_attr("spec", current)
    elif stored != current:
        changed = _changed_keys(stored, current)
        raise TuningError(f"{where} holds a study for a different search ({', '.join(changed)} differ from "
                          "this one's); give this search its own --out, e.g. --out runs/tune")


def _changed_keys(stored: dict, current: dict) -> list[str]:
    """``["static.optimizer", "parameters.lr"]``: the spec's keys (one level into dicts) that differ."""
    changed = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            changed.append(key)
    return changed


def _kill_orphan(t: optuna.trial.FrozenTrial) -> None:
    """Kill the training job a killed tuner left running (checked by process start time)."""
    import subprocess

    import psutil

    pid, created = t.user_attrs.get("pid"), t.user_attrs.get("pid_create_time")
    if pid:
        try:
            if abs(psutil.Process(pid).create_time() - created) < 1e-3:
                os.killpg(pid, signal.SIGKILL)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass
    if t.user_attrs.get("container"):
        subprocess.run(["docker", "kill", t.user_attrs["container"]], capture_output=True, check=False)


def recover_interrupted(study: optuna.Study, spec: TuningSpec, shared: bool = False) -> list[int]:
    """Fail the trials a killed tuner left RUNNING and queue them again. Returns their numbers.
    ``shared``: the study is in a database other tuners use (:func:`budget.abandoned`)."""
    recovered = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not budget.abandoned(t, shared):
            continue
        _kill_orphan(t)
        storage = study._storage
        storage.set_trial_user_attr(t._trial_id, budget.INTERRUPTED_ATTR, True)
        storage.set_trial_user_attr(t._trial_id, "failure_reason",
                                    "interrupted: the tuner stopped while this trial was running")
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if set(t.params) == set(spec.parameter_names):
            # The retry continues the same training: its checkpoints, and the log lines written so
            # far (an epoch finished before the kill is not trained again, its metrics still count).
            attrs: dict[str, Any] = {"retry_of": t.number}
            if t.user_attrs.get("checkpoint_dir"):
                attrs["checkpoint_dir"] = t.user_attrs["checkpoint_dir"]
                logs = list(t.user_attrs.get("previous_logs", []))
                if t.user_attrs.get("job_dir"):
                    logs.append(str(Path(t.user_attrs["job_dir"]) / JOB_LOG_FILE))
                attrs["previous_logs"] = logs
            study.enqueue_trial(t.params, user_attrs=attrs, skip_if_exists=False)
            retry = next(w for w in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                         if w.user_attrs.get("retry_of") == t.number)
            # GridSampler bookkeeping: the retry stands for the same grid point.
            for key in ("grid_id", "search_space"):
                if key in t.system_attrs:
                    storage.set_trial_system_attr(retry._trial_id, key, t.system_attrs[key])
        recovered.append(t.number)
    return recovered


def _counts(study: optuna.Study) -> dict[str, int]:
    counts = {"complete": 0, "pruned": 0, "failed": 0, "interrupted": 0, "running": 0, "waiting": 0}
    for t in study.get_trials(deepcopy=False):
        status = leaderboard.trial_status(t)
        if status in counts:                  # not a surplus trial (budget.SURPLUS_ATTR)
            counts[status] += 1
    return counts


# ---- the run ----------------------------------------------------------------------------------------

def run_local_tuning(spec: TuningSpec | str | Path, channels: dict[str, str], out_dir: str | Path, *,
                     image: str | None = None, max_jobs: int | None = None, max_parallel: int | None = None,
                     progress: bool = True, trial_timeout_s: float | None = None,
                     enqueue: list[dict[str, Any]] | None = None,
                     env: dict[str, str] | None = None, storage: str | None = None,
                     study_name: str = search.DEFAULT_STUDY_NAME,
                     feature_cache_dir: str | Path | None = None) -> TuningResult:
    """Run (or continue) a tuning study; see the module docstring.

    ``spec``: a :class:`TuningSpec`, a spec file or a built-in spec's name (:func:`load_spec`).
    ``enqueue``: hyperparameter sets to try first (each a full set of the tuned parameters), e.g.
    known-good settings; they are queued only when the study is new. Not with Grid, which runs
    every combination anyway. ``env``: extra environment of every trial's job. ``storage``: a
    database URL holding the study (shared with other tuners), instead of ``<out_dir>/study.db``;
    ``study_name`` names the study in it. ``feature_cache_dir``: the frozen-backbone feature cache
    every trial shares (default ``<out_dir>/feature-cache``); a later training job given the same
    folder reads the features instead of computing them again.
    """
    if not isinstance(spec, TuningSpec):
        spec = load_spec(spec)
    spec = spec.with_overrides(max_jobs=max_jobs, max_parallel_jobs=max_parallel)
    if enqueue and spec.strategy == "Grid":
        raise TuningError("enqueue is not supported with the Grid strategy (every combination runs)")
    if spec.instance_count > 1:
        raise TuningError(f"instance_count {spec.instance_count}: local trials on more than one host are not "
                          "available yet (each local trial is one training job on this machine); use "
                          "instance_count 1 here, or --backend sagemaker")
    out_dir = Path(out_dir).resolve()
    (out_dir / TRIALS_DIR).mkdir(parents=True, exist_ok=True)
    channels = {name: str(Path(p).resolve()) for name, p in channels.items()}
    for name, path in channels.items():
        if not Path(path).is_dir():
            raise TuningError(f"channel {name}: {path} is not a directory")

    lock = _lock(out_dir)
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        tuner = budget.Tuner.this_process()
        shared = storage is not None
        study = search.open_study(spec, out_dir, study_name, storage, worker=tuner.name if shared else None)
        where = search.describe_storage(storage) if shared else str(out_dir)
        _check_same_search(study, spec, where)
        new_study = not study.get_trials(deepcopy=False)
        if new_study:
            for params in enqueue or []:
                study.enqueue_trial(params, skip_if_exists=shared)
        recovered = recover_interrupted(study, spec, shared)
        done = budget.used(study)
        show = LiveDisplay(spec.max_jobs, spec.objective.metric, done) if progress else \
            PlainDisplay(spec.max_jobs, spec.objective.metric)
        cache = Path(feature_cache_dir).resolve() if feature_cache_dir else out_dir / FEATURE_CACHE_DIR
        run = _Run(study, spec, channels, out_dir, show, image, trial_timeout_s,
                   {**thread_share(spec.max_parallel_jobs), **(env or {})}, tuner, cache)
        with show:
            if not new_study:
                show.message(f"continuing the study in {where}: {done} of {spec.max_jobs} trials "
                             f"done" + (f"; re-queued interrupted trial(s) {recovered}" if recovered else ""))
            _run_trials(run)
        return _finish(study, spec, out_dir, progress, where if shared else None)
    finally:
        lock.close()


@dataclass
class _Run:
    """What the trials of one tuning run share."""

    study: optuna.Study
    spec: TuningSpec
    channels: dict[str, str]
    out_dir: Path
    show: PlainDisplay
    image: str | None
    timeout_s: float | None
    env: dict[str, str]
    tuner: budget.Tuner                                    # this process: the owner of its trials
    feature_cache_dir: Path                                # shared by every trial
    jobs: dict[int, Any] = field(default_factory=dict)     # trial number -> running TrainingJob
    jobs_lock: threading.Lock = field(default_factory=threading.Lock)

    def update_counts(self, running: int) -> None:
        c = _counts(self.study)
        best = leaderboard.best_trial(self.study)
        best_text = "-" if best is None else f"{best.value:.4f} (trial {best.number})"
        self.show.counts(c["complete"] + c["pruned"] + c["failed"], running, c["pruned"], c["failed"], best_text)

    def kill_jobs(self) -> None:
        with self.jobs_lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            job.kill()


def _run_trials(run: _Run) -> None:
    """Run trials until the study's budget is taken (by this tuner or others) and ours finished."""
    running: dict[Future, optuna.Trial] = {}
    budget_left = True
    parallel = run.spec.max_parallel_jobs
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="trial") as pool:
        try:
            while budget_left or running:
                while budget_left and len(running) < parallel:
                    trial = budget.ask_claimed(run.study, run.spec.max_jobs, run.tuner)
                    if trial is None:
                        budget_left = False
                        break
                    running[pool.submit(_trial_worker, run, trial)] = trial
                run.update_counts(len(running))
                finished, _ = wait(list(running), timeout=COUNTS_REFRESH_S, return_when=FIRST_COMPLETED)
                for future in finished:
                    _tell(run.study, running.pop(future), future.result(), run.show)
        except BaseException:
            # Ctrl-C or an internal error: stop the jobs still running; they are marked as
            # interrupted and re-queued by the next run.
            run.kill_jobs()
            raise
        run.update_counts(0)


def _trial_worker(run: _Run, trial: optuna.Trial) -> TrialOutcome:
    try:
        params = search.suggest(trial, run.spec)
    except Exception as e:  # noqa: BLE001 - recorded as a failed trial
        return TrialOutcome(state="FAIL", value=None, failure_reason=f"could not suggest values: {e}")
    hyperparameters = trial_hyperparameters(run.spec, params)
    job_dir = run.out_dir / TRIALS_DIR / f"trial-{trial.number:04d}"
    checkpoint_dir = trial.user_attrs.get("checkpoint_dir")
    if checkpoint_dir is None:
        checkpoint_dir = str(job_dir / "checkpoints")
        trial.set_user_attr("checkpoint_dir", checkpoint_dir)
    trial.set_user_attr("job_dir", str(job_dir))
    previous_log = "".join(Path(p).read_text(errors="replace") for p in trial.user_attrs.get("previous_logs", [])
                           if Path(p).is_file())
    epochs = int(hyperparameters.get("epochs", DEFAULTS["epochs"]))
    run.show.trial_started(trial.number, params, epochs)

    def on_start(job) -> None:
        import psutil

        with run.jobs_lock:
            run.jobs[trial.number] = job
        trial.set_user_attr("pid", job.pid)
        trial.set_user_attr("pid_create_time", psutil.Process(job.pid).create_time())
        if run.image:
            trial.set_user_attr("container", job.container_name)

    try:
        return run_trial(trial, hyperparameters, trial_channels(run.channels), job_dir, run.spec.objective.metric,
                         image=run.image, checkpoint_dir=checkpoint_dir, timeout_s=run.timeout_s, env=run.env,
                         feature_cache_dir=run.feature_cache_dir, distribution=run.spec.distribution,
                         last_step=epochs, previous_log=previous_log, on_start=on_start,
                         on_progress=lambda step, value: run.show.trial_epoch(trial.number, step, value),
                         on_extract=lambda progress: run.show.trial_extracting(trial.number, *progress))
    finally:
        with run.jobs_lock:
            run.jobs.pop(trial.number, None)


def _tell(study: optuna.Study, trial: optuna.Trial, outcome: TrialOutcome, show: PlainDisplay) -> None:
    trial.set_user_attr("duration_s", outcome.duration_s)
    if outcome.returncode is not None:
        trial.set_user_attr("returncode", outcome.returncode)
    if outcome.failure_reason:
        trial.set_user_attr("failure_reason", outcome.failure_reason[:2000])
    if outcome.state == "COMPLETE":
        study.tell(trial, outcome.value)
    elif outcome.state == "PRUNED":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, state=TrialState.FAIL)
    note = outcome.failure_reason or ""
    if outcome.state == "PRUNED" and outcome.intermediate:
        note = f"stopped after epoch {outcome.intermediate[-1][0]}"
    show.trial_finished(trial.number, outcome.state, outcome.value, note)


def _finish(study: optuna.Study, spec: TuningSpec, out_dir: Path, progress: bool,
            storage: str | None) -> TuningResult:
    paths = leaderboard.write(study, spec, out_dir)
    table = leaderboard.rows(study, spec)
    pictures = report.write_report(study, spec, table, out_dir)
    if progress:
        leaderboard.render(table, spec)
    best = leaderboard.best_trial(study)
    return TuningResult(
        out_dir=out_dir,
        best_trial=None if best is None else best.number,
        best_value=None if best is None else best.value,
        best_params={} if best is None else dict(best.params),
        best_hyperparameters={} if best is None else trial_hyperparameters(spec, best.params),
        leaderboard=table, leaderboard_csv=paths["csv"], leaderboard_json=paths["json"],
        best_hyperparameters_path=paths.get("best"), study_path=None if storage else out_dir / search.STUDY_FILE,
        storage=storage or str(out_dir / search.STUDY_FILE),
        report=pictures["html"], plots={k: v for k, v in pictures.items() if k != "html"},
        counts=_counts(study))
