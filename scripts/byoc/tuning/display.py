"""The live display of a tuning run: a bar for the whole run and one line per running trial.

:class:`LiveDisplay` draws with ``rich`` (trials done / running / pruned / failed, best so far);
:class:`PlainDisplay` prints one line per event (for logs, CI and tests). Both are called from
the tuner's main thread and from trial threads; rich's Progress is thread-safe.
"""

from __future__ import annotations

import threading
from typing import Any


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _extracting_text(done: int, total: int, rate: float, eta: str) -> str:
    return f"extracting features {done}/{total} images, {rate:.1f} img/s, ETA {eta}"


class PlainDisplay:
    def __init__(self, total: int, metric: str, print_fn=print):
        self.total, self.metric, self._print = total, metric, print_fn
        self._lock = threading.Lock()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def message(self, text: str) -> None:
        with self._lock:
            self._print(text)

    def trial_started(self, number: int, params: dict[str, Any], epochs: int | None) -> None:
        self.message(f"trial {number} started: {_params_text(params)}")

    def trial_epoch(self, number: int, epoch: int, value: float) -> None:
        self.message(f"trial {number} epoch {epoch}: {self.metric}={value:.4f}")

    def trial_extracting(self, number: int, done: int, total: int, rate: float, eta: str) -> None:
        """Where the trial's feature extraction stands: minutes of work before its first epoch."""
        self.message(f"trial {number} {_extracting_text(done, total, rate, eta)}")

    def trial_finished(self, number: int, state: str, value: float | None, note: str = "") -> None:
        shown = "" if value is None else f" {self.metric}={value:.4f}"
        self.message(f"trial {number} {state.lower()}{shown}{' - ' + note if note else ''}")

    def counts(self, done: int, running: int, pruned: int, failed: int, best: str) -> None:
        pass


class LiveDisplay(PlainDisplay):
    def __init__(self, total: int, metric: str, already_done: int = 0, console=None):
        super().__init__(total, metric)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)
        self._overall = self._progress.add_task("tuning", total=total, completed=already_done, info="")
        self._tasks: dict[int, Any] = {}

    def __enter__(self):
        self._progress.start()
        return self

    def __exit__(self, *exc):
        self._progress.stop()
        return False

    def message(self, text: str) -> None:
        self._progress.console.print(text, markup=False, highlight=False)

    def trial_started(self, number: int, params: dict[str, Any], epochs: int | None) -> None:
        text = _params_text(params)
        self._tasks[number] = (self._progress.add_task(f"  trial {number}", total=epochs, info=text), text)

    def trial_epoch(self, number: int, epoch: int, value: float) -> None:
        task, text = self._tasks.get(number, (None, ""))
        if task is not None:
            self._progress.update(task, completed=epoch, info=f"{text} | {self.metric}={value:.4f}")

    def trial_extracting(self, number: int, done: int, total: int, rate: float, eta: str) -> None:
        task, text = self._tasks.get(number, (None, ""))
        if task is not None:
            self._progress.update(task, info=f"{text} | {_extracting_text(done, total, rate, eta)}")

    def trial_finished(self, number: int, state: str, value: float | None, note: str = "") -> None:
        task, _ = self._tasks.pop(number, (None, ""))
        if task is not None:
            self._progress.remove_task(task)
        super().trial_finished(number, state, value, note)

    def counts(self, done: int, running: int, pruned: int, failed: int, best: str) -> None:
        self._progress.update(self._overall, completed=done,
                              info=f"running {running} | pruned {pruned} | failed {failed} | best {best}")
