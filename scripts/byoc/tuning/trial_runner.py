"""One tuning trial = one real local training job, watched while it runs.

The job's log is read as it streams. Every objective value that appears (one per epoch for the
train/validation metrics) is reported to Optuna in log order, and the pruner is asked after each
one, so its verdicts depend only on the sequence of values, not on how many lines one read of the
log happened to find. A pruned job is stopped the way SageMaker's early stopping stops one
(SIGTERM, then SIGKILL after a grace period). When the job ends, the objective is the LAST value of
the metric in the log, parsed with the same regex SageMaker uses (``container_train.contract``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from byoc.local.multi_host import through_launcher
from byoc.local.training_job import TrainingJob, TrainingJobResult
from container_train import contract

POLL_S = 0.5                 # seconds between two reads of a running job's log
STOP_GRACE_S = 60.0


@dataclass
class TrialOutcome:
    state: str                                # COMPLETE | PRUNED | FAIL
    value: float | None                       # objective (COMPLETE), last intermediate (PRUNED)
    intermediate: list[tuple[int, float]] = field(default_factory=list)   # (epoch, value)
    job_dir: str = ""
    returncode: int | None = None
    failure_reason: str | None = None
    duration_s: float = 0.0


def run_trial(trial: optuna.Trial, hyperparameters: dict[str, Any], channels: dict[str, str],
              job_dir: Path, metric: str, *, image: str | None = None, checkpoint_dir: str | None = None,
              timeout_s: float | None = None, env: dict[str, str] | None = None,
              feature_cache_dir: Path | None = None, last_step: int | None = None, previous_log: str = "",
              distribution: str | None = None,
              on_start: Callable[[TrainingJob], None] | None = None,
              on_progress: Callable[[int, float], None] | None = None,
              on_extract: Callable[[tuple[int, int, float, str]], None] | None = None) -> TrialOutcome:
    """Run the training job for ``trial``; never raises for a failing job (see the outcome).

    ``last_step``: the job's final epoch; a trial is not pruned there (its result is complete).
    ``previous_log``: the log of an interrupted run this job resumes from its checkpoint; its
    metric lines count as this job's (SageMaker keeps one metric history across spot restarts).
    ``on_extract``: each new feature-extraction progress of the job (``contract.extract_progress``).
    """
    started = time.monotonic()
    outcome = TrialOutcome(state="FAIL", value=None, job_dir=str(job_dir))
    if distribution is not None:   # a one-host job (multi-host trials are refused before), via torchrun
        hyperparameters, env = through_launcher(hyperparameters, env, image)
    try:
        job = TrainingJob(job_dir, hyperparameters, channels, checkpoint_dir=checkpoint_dir, image=image,
                          env=env, feature_cache_dir=feature_cache_dir)
        job.start()
    except Exception as e:  # noqa: BLE001 - a trial that cannot start is a failed trial, not a crash
        outcome.failure_reason = f"could not start the training job: {e}"
        return outcome
    if on_start is not None:
        on_start(job)
    deadline = None if timeout_s is None else started + timeout_s
    watch = _Watch(trial, metric, outcome, last_step, on_progress, on_extract)
    pruned = watch.follow(job, previous_log, deadline)
    remaining = None if deadline is None else max(1.0, deadline - time.monotonic())
    result = job.wait(timeout=STOP_GRACE_S if pruned else remaining)
    outcome.returncode = result.returncode
    outcome.duration_s = time.monotonic() - started
    if pruned:
        outcome.state = "PRUNED"
        outcome.value = outcome.intermediate[-1][1]
        return outcome
    _conclude(outcome, result, metric, previous_log, timeout_s)
    return outcome


class _Watch:
    """Feeds a running job's objective values to Optuna, one step at a time, in log order."""

    def __init__(self, trial: optuna.Trial, metric: str, outcome: TrialOutcome, last_step: int | None,
                 on_progress: Callable[[int, float], None] | None,
                 on_extract: Callable[[tuple[int, int, float, str]], None] | None = None):
        self.trial, self.metric, self.outcome = trial, metric, outcome
        self.last_step, self.on_progress, self.on_extract = last_step, on_progress, on_extract
        self.extraction: tuple[int, int, float, str] | None = None
        self.seen = 0                          # series entries handled so far
        self.reported: set[int] = set()

    def follow(self, job: TrainingJob, previous_log: str, deadline: float | None) -> bool:
        """Read the log until the job ends, is pruned (stopped; returns True) or passes ``deadline``."""
        while True:
            running = job.running()
            log = job.log_text()
            series = contract.metric_series(self.metric, previous_log + log)
            self._extraction(log)
            while self.seen < len(series):
                if self._step(series, running):
                    job.stop()
                    return True
            if not running or (deadline is not None and time.monotonic() > deadline):
                return False
            time.sleep(POLL_S)

    def _extraction(self, log: str) -> None:
        if self.on_extract is None:
            return
        progress = contract.extract_progress(log)
        if progress is not None and progress != self.extraction:
            self.extraction = progress
            self.on_extract(progress)

    def _step(self, series: list[tuple[int | None, float]], running: bool) -> bool:
        """Handle the next series entry; True when the pruner says stop."""
        epoch, value = series[self.seen]
        self.seen += 1
        step = epoch if epoch is not None else self.seen
        self.outcome.intermediate.append((step, value))
        if self.on_progress is not None:
            self.on_progress(step, value)
        if not math.isfinite(value) or step in self.reported:
            return False
        self.trial.report(value, step)
        self.reported.add(step)
        at_end = self.last_step is not None and step >= self.last_step
        return running and not at_end and self.trial.should_prune()


def _conclude(outcome: TrialOutcome, result: TrainingJobResult, metric: str, previous_log: str,
              timeout_s: float | None) -> None:
    """Fill in the outcome of a job that ended by itself (or ran out of time)."""
    if result.timed_out:
        outcome.failure_reason = f"training job exceeded the {timeout_s:.0f} s limit"
        return
    if result.returncode != 0:
        reason = (result.failure_reason or "").strip() or _last_lines(result.log_text)
        outcome.failure_reason = f"training job exited with code {result.returncode}: {reason}"
        return
    final = contract.metric_series(metric, previous_log + result.log_text)
    if not final:
        outcome.failure_reason = f"the objective metric {metric} never appeared in the training log"
        return
    value = final[-1][1]
    if not math.isfinite(value):
        outcome.failure_reason = f"the objective metric {metric} is {value}"
        return
    outcome.state, outcome.value = "COMPLETE", value


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) if lines else "no output"
