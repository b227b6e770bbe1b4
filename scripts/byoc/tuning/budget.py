"""The trial budget of a study that several tuners may share, and which tuner owns a running trial.

Tuners on several machines (``byoc tune --storage postgresql+psycopg2://...``) ask one study for
trials. Each one counts the budget in the study, not in itself: a trial *takes budget* unless it
was interrupted (its tuner died; a retry is queued in its place) or turned out surplus (below).
Waiting (queued) trials take budget too, since someone will run them. The storage numbers trials
in the order it creates them (Optuna's RDB storage locks the study row for that), so "the trials
before mine" is the same set on every machine. A tuner:

1. asks only while the study has room (:func:`has_room`: fewer than ``max_jobs`` trials take budget,
   or a queued one is among the first ``max_jobs``);
2. then claims the trial it got (:func:`claim`): the trial is its to run only when fewer than
   ``max_jobs`` budget-taking trials come before it and, with Grid, no earlier one holds its grid
   point. Otherwise two tuners raced for the last slot (or one grid point); the loser marks its trial
   *surplus* (no job ever runs for it; the leaderboard leaves it out) and asks again only if the
   study still has room.

So the trials that run are the first ``max_jobs`` budget-taking ones by number: exactly the budget,
each trial on one tuner. A trial that another live tuner runs is never touched: only a trial whose
owner (:data:`OWNER_ATTR`: host, pid and process start time) was a tuner on this machine that is no
longer running counts as abandoned (:func:`abandoned`); a trial of a tuner on another machine stays
until that machine's tuner runs again and finds it. In the run folder's own SQLite study, which
one tuner holds at a time (the run folder's lock), every running trial is abandoned.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

OWNER_ATTR = "tuner"              # user attr of a trial: the tuner that runs it (Tuner.as_attr)
INTERRUPTED_ATTR = "interrupted"  # user attr: its tuner died while it ran; not counted, queued again
SURPLUS_ATTR = "surplus"          # user attr: why the tuner that asked for it did not run it


@dataclass(frozen=True)
class Tuner:
    """One tuner process: a trial's owner."""

    host: str
    pid: int
    started: float               # process start time (psutil), so a reused pid is not mistaken for it

    @classmethod
    def this_process(cls) -> Tuner:
        import psutil

        me = psutil.Process()
        return cls(host=socket.gethostname(), pid=me.pid, started=me.create_time())

    @classmethod
    def from_attr(cls, value) -> Tuner | None:
        if not isinstance(value, dict):
            return None
        try:
            return cls(host=str(value["host"]), pid=int(value["pid"]), started=float(value["started"]))
        except (KeyError, TypeError, ValueError):
            return None

    def as_attr(self) -> dict:
        return {"host": self.host, "pid": self.pid, "started": self.started}

    @property
    def name(self) -> str:
        return f"{self.host}:{self.pid}"

    def is_running(self) -> bool:
        """Whether this tuner's process still runs (answerable on its own host only)."""
        import psutil

        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) < 1e-3
        except psutil.Error:
            return False


def abandoned(t: optuna.trial.FrozenTrial, shared: bool) -> bool:
    """Whether running trial ``t`` was left by a tuner that died (see the module docstring)."""
    owner = Tuner.from_attr(t.user_attrs.get(OWNER_ATTR))
    if owner is None:
        # Asked by a tuner that died before recording itself (or an older tuner): in a study of
        # its own, that tuner is gone; in a shared one nobody can tell, so it is left alone.
        return not shared
    return owner.host == socket.gethostname() and not owner.is_running()


def takes_budget(t: optuna.trial.FrozenTrial) -> bool:
    return not t.user_attrs.get(INTERRUPTED_ATTR) and SURPLUS_ATTR not in t.user_attrs


def budget_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that take budget, by number (read from the storage each time)."""
    return [t for t in study.get_trials(deepcopy=False) if takes_budget(t)]


def used(study: optuna.Study) -> int:
    """Finished trials that took budget."""
    return sum(1 for t in budget_trials(study) if t.state.is_finished())


def has_room(study: optuna.Study, max_jobs: int) -> bool:
    trials = budget_trials(study)
    return len(trials) < max_jobs or any(t.state == TrialState.WAITING for t in trials[:max_jobs])


def claim(study: optuna.Study, trial: optuna.Trial, max_jobs: int) -> str | None:
    """``None`` when ``trial`` (just asked) is this tuner's to run, else why it is surplus."""
    trials = budget_trials(study)
    before = [t for t in trials if t.number < trial.number]
    if len(before) >= max_jobs:
        return f"another tuner took the last of the {max_jobs} trials first"
    me = next((t for t in trials if t.number == trial.number), None)
    grid_id = None if me is None else me.system_attrs.get("grid_id")
    taken = [t.number for t in before if grid_id is not None and t.system_attrs.get("grid_id") == grid_id]
    if taken:
        return f"its grid point is trial {taken[0]}'s"
    return None


def ask_claimed(study: optuna.Study, max_jobs: int, tuner: Tuner) -> optuna.Trial | None:
    """A trial for ``tuner`` to run, or ``None`` when the budget is taken. Every trial asked is
    marked with its owner before it is claimed, so that no other tuner recovers it."""
    for _ in range(max_jobs + 1):        # each lost grid point frees another; bounded regardless
        if not has_room(study, max_jobs):
            return None
        trial = study.ask()
        trial.set_user_attr(OWNER_ATTR, tuner.as_attr())
        why = claim(study, trial, max_jobs)
        if why is None:
            return trial
        trial.set_user_attr(SURPLUS_ATTR, why)
        study.tell(trial, state=TrialState.FAIL)   # lost the budget: has_room says so next
    return None
