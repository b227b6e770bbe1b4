"""Evaluate rules while a local training job runs, and stop the job when one fires.

This is the local form of a SageMaker rule with the ``StopTraining`` action: the rule job polls
the training job's tensors as steps appear, and when a rule named in ``stop_on`` fires, the
training process gets SIGTERM (what ``StopTrainingJob`` sends to the container). Our trainer
handles SIGTERM by writing a checkpoint and exiting.

    proc = subprocess.Popen([...train...])
    with RuleWatcher(tensor_dir, proc, stop_on=["ExplodingTensor"], out_dir=rules_dir) as w:
        proc.wait()
    w.stopped_training, w.results

``process`` may be a local ``TrainingJob`` (its ``stop()`` signals the trainer, not the toolkit
wrapping it), a ``subprocess.Popen``, a ``psutil.Process`` or a pid (that process gets SIGTERM).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import psutil
from smdebug.rules.rule_invoker import invoke_rule
from smdebug.trials import create_trial

from .base import LocalRule
from .catalog import RuleSelection, _canonical, make_rule, normalize_selection
from .results import RuleResult, write_results
from .runner import TensorDirError, check_tensor_dir, error_result, result_of

log = logging.getLogger(__name__)


class _Target:
    """The thing to stop, whatever form the caller has it in.

    * an object with ``stop()`` and ``running()`` -- e.g. ``byoc.local.training_job.TrainingJob``,
      whose ``stop()`` signals the trainer itself (the toolkit does not forward signals);
    * a ``subprocess.Popen``, ``psutil.Process`` or pid -- that process gets SIGTERM.
    """

    def __init__(self, process):
        self.obj = process
        self.proc: psutil.Process | None = None
        if process is not None and not (hasattr(process, "stop") and hasattr(process, "running")):
            pid = process if isinstance(process, int) else process.pid
            try:
                self.proc = psutil.Process(pid)
            except psutil.NoSuchProcess:
                self.proc = None

    def alive(self) -> bool:
        if self.obj is None:
            return True          # nothing to watch: run until stop()
        if self.proc is None:
            return bool(self.obj.running()) if hasattr(self.obj, "running") else False
        if hasattr(self.obj, "poll"):                      # Popen: reaps the child as well
            return self.obj.poll() is None
        try:
            return self.proc.is_running() and self.proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def terminate(self) -> str:
        if self.obj is None:
            return "no process to stop"
        if self.proc is None:
            self.obj.stop()
            return f"{type(self.obj).__name__}.stop()"
        try:
            self.proc.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            return f"pid {self.proc.pid} had already exited"
        return f"SIGTERM to pid {self.proc.pid}"


class RuleWatcher:
    """Background thread evaluating rules step by step on a live trial (see module docstring)."""

    def __init__(self, tensor_dir: str | Path, process=None, rules: RuleSelection = None,
                 stop_on: Iterable[str] = ("ExplodingTensor",), out_dir: str | Path | None = None,
                 poll_interval_s: float = 1.0):
        self.tensor_dir = Path(tensor_dir)
        self.selection = normalize_selection(rules)
        self.stop_on = {_canonical(n) for n in stop_on}
        missing = self.stop_on - set(self.selection)
        if missing:
            raise ValueError(f"stop_on names rules that are not selected: {', '.join(sorted(missing))}")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.poll_interval_s = poll_interval_s
        self._target = _Target(process)
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rule-watcher", daemon=True)
        self._rules: dict[str, LocalRule] = {}
        self._errors: dict[str, BaseException] = {}
        self._next_step = 0
        self.stopped_training = False
        self.stop_reason: str | None = None
        self.stop_time: float | None = None
        self.error: BaseException | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> RuleWatcher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> list[RuleResult]:
        """Finish evaluating what is on disk, end the thread, write results; returns them."""
        self._halt.set()
        self._thread.join(timeout=timeout)
        results = self.results
        if self.out_dir is not None and results:
            write_results(results, self.out_dir)
        return results

    def __enter__(self) -> RuleWatcher:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def results(self) -> list[RuleResult]:
        out = []
        for name, params in self.selection.items():
            if name in self._errors:
                out.append(error_result(name, params, self._errors[name]))
            elif name in self._rules:
                out.append(result_of(self._rules[name]))
        return out

    # ---- the polling loop ---------------------------------------------------------------------
    def _process_alive(self) -> bool:
        return self._target.alive()

    def _wait_for_collections(self) -> bool:
        while True:
            try:
                check_tensor_dir(self.tensor_dir)
                return True
            except TensorDirError:
                if self._halt.is_set() or not self._process_alive():
                    return False
                time.sleep(self.poll_interval_s)

    def _run(self) -> None:
        try:
            if not self._wait_for_collections():
                log.warning("no Debugger output appeared in %s; no rules evaluated", self.tensor_dir)
                return
            trial = create_trial(str(self.tensor_dir))
            self._rules = {n: make_rule(n, trial, p) for n, p in self.selection.items()}
            while True:
                finishing = self._halt.is_set() or not self._process_alive()
                self._evaluate_new_steps(trial)
                if finishing:
                    return
                self._halt.wait(self.poll_interval_s)
        except Exception as e:   # noqa: BLE001 - surfaced through .error and the results
            log.exception("rule watcher failed")
            self.error = e

    def _evaluate_new_steps(self, trial) -> None:
        for step in [s for s in trial.steps() if s >= self._next_step]:
            for name, rule in self._rules.items():
                if name in self._errors:
                    continue
                fired_before = rule.violations
                try:
                    invoke_rule(rule, start_step=step, end_step=step + 1)
                except Exception as e:   # noqa: BLE001 - one broken rule must not stop the others
                    log.exception("rule %s failed at step %s", name, step)
                    self._errors[name] = e
                    continue
                if rule.violations > fired_before and name in self.stop_on and not self.stopped_training:
                    self._stop_training(name, step, rule.findings[-1].message if rule.findings else "")
            self._next_step = step + 1

    def _stop_training(self, rule_name: str, step: int, message: str) -> None:
        self.stop_reason = f"{rule_name} fired at step {step}: {message}"
        self.stop_time = time.time()
        self.stopped_training = True
        how = self._target.terminate()
        log.warning("StopTraining: %s -> %s", self.stop_reason, how)
