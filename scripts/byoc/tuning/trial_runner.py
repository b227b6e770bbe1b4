"""One tuning trial = one real local training job, watched while it runs.

The job's log is read as it streams. Every objective value that appears (one per epoch for the
train/validation metrics) is reported to Optuna, which may decide to prune; a pruned job is
stopped the way SageMaker's early stopping stops one (SIGTERM, then SIGKILL after a grace period).
When the job ends, the objective is the LAST value of the metric in the log, parsed with the same
regex SageMaker uses (``container_train.contract``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from container_train import contract
from scripts.local_training_job import TrainingJob

POLL_S = 0.5
STOP_GRACE_S = 60.0
# The sagemaker-training toolkit waits up to 15 minutes for the host name "algo-1" to resolve
# unless it believes it runs in SageMaker Studio local mode; a local job has no such host.
LOCAL_JOB_ENV = {"SM_STUDIO_LOCAL_MODE": "true"}


@dataclass
class TrialOutcome:
    state: str                                # COMPLETE | PRUNED | FAIL
    value: float | None                       # objective (COMPLETE), last intermediate (PRUNED)
    intermediate: list[tuple[int, float]] = field(default_factory=list)   # (epoch, value)
    job_dir: str = ""
    returncode: int | None = None
    failure_reason: str | None = None
    duration_s: float = 0.0


def objective_series(metric: str, log_text: str) -> list[tuple[int | None, float]]:
    """``(epoch, value)`` for every log line the metric's SageMaker regex matches, in order."""
    regex = re.compile(contract.METRIC_REGEX[metric])
    epoch_regex = re.compile(contract.EPOCH_REGEX)
    series = []
    for line in log_text.splitlines():
        m = regex.search(line)
        if m:
            e = epoch_regex.search(line)
            series.append((int(e.group(1)) if e else None, float(m.group(1))))
    return series


def run_trial(trial: optuna.Trial, hyperparameters: dict[str, Any], channels: dict[str, str],
              job_dir: Path, metric: str, *, image: str | None = None, checkpoint_dir: str | None = None,
              timeout_s: float | None = None, env: dict[str, str] | None = None,
              last_step: int | None = None, previous_log: str = "", on_start: Callable[[TrainingJob], None] | None = None,
              on_progress: Callable[[int, float], None] | None = None) -> TrialOutcome:
    """Run the training job for ``trial``; never raises for a failing job (see the outcome).

    ``last_step``: the job's final epoch; a trial is not pruned there (its result is complete).
    ``previous_log``: the log of an interrupted run this job resumes from its checkpoint; its
    metric lines count as this job's (SageMaker keeps one metric history across spot restarts).
    """
    started = time.monotonic()
    outcome = TrialOutcome(state="FAIL", value=None, job_dir=str(job_dir))
    try:
        job = TrainingJob(job_dir, hyperparameters, channels, checkpoint_dir=checkpoint_dir, image=image,
                          env={**LOCAL_JOB_ENV, **(env or {})})
        job.start()
    except Exception as e:  # noqa: BLE001 - a trial that cannot start is a failed trial, not a crash
        outcome.failure_reason = f"could not start the training job: {e}"
        return outcome
    if on_start is not None:
        on_start(job)

    reported = 0
    reported_steps: set[int] = set()
    pruned = False
    deadline = None if timeout_s is None else started + timeout_s
    while True:
        running = job.running()
        series = objective_series(metric, previous_log + job.log_text())
        for i in range(reported, len(series)):
            epoch, value = series[i]
            step = epoch if epoch is not None else i + 1
            outcome.intermediate.append((step, value))
            if math.isfinite(value) and step not in reported_steps:
                trial.report(value, step)
                reported_steps.add(step)
            if on_progress is not None:
                on_progress(step, value)
        if len(series) > reported:
            reported = len(series)
            at_end = last_step is not None and outcome.intermediate[-1][0] >= last_step
            if running and not at_end and trial.should_prune():
                pruned = True
                job.stop()
                break
        if not running:
            break
        if deadline is not None and time.monotonic() > deadline:
            break
        time.sleep(POLL_S)

    remaining = None if deadline is None else max(1.0, deadline - time.monotonic())
    result = job.wait(timeout=STOP_GRACE_S if pruned else remaining)
    outcome.returncode = result.returncode
    outcome.duration_s = time.monotonic() - started
    if pruned:
        outcome.state = "PRUNED"
        outcome.value = outcome.intermediate[-1][1]
        return outcome
    if result.timed_out:
        outcome.failure_reason = f"training job exceeded the {timeout_s:.0f} s limit"
        return outcome
    if result.returncode != 0:
        reason = (result.failure_reason or "").strip() or _last_lines(result.log_text)
        outcome.failure_reason = f"training job exited with code {result.returncode}: {reason}"
        return outcome
    final = objective_series(metric, previous_log + result.log_text)
    if not final:
        outcome.failure_reason = f"the objective metric {metric} never appeared in the training log"
        return outcome
    value = final[-1][1]
    if not math.isfinite(value):
        outcome.failure_reason = f"the objective metric {metric} is {value}"
        return outcome
    outcome.state, outcome.value = "COMPLETE", value
    return outcome


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) if lines else "no output"
