"""The shared-study budget (byoc.tuning.budget) on Optuna's own storages, no training jobs: which
trial a tuner may run when several ask one study, and which running trials count as abandoned."""

from __future__ import annotations

import socket
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from byoc.tuning import budget, search
from byoc.tuning.errors import TuningError
from byoc.tuning.leaderboard import rows
from byoc.tuning.spec import parse_spec

SPEC = parse_spec({"objective": {"metric": "validation:accuracy", "direction": "Maximize"},
                   "strategy": "Random", "max_jobs": 3, "random_seed": 0,
                   "parameters": {"lr": {"type": "continuous", "min": 0.001, "max": 0.1}}})


def _tuner(pid: int = 1, host: str | None = None) -> budget.Tuner:
    return budget.Tuner(host=host or socket.gethostname(), pid=pid, started=0.0)


@pytest.fixture
def study(tmp_path) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return search.open_study(SPEC, tmp_path)


def test_the_last_slot_goes_to_the_lower_trial_number(study):
    a, b = _tuner(1), _tuner(2)
    first = [budget.ask_claimed(study, 3, a), budget.ask_claimed(study, 3, b)]
    assert [t.number for t in first] == [0, 1]
    # Both tuners see one free slot and ask at the same moment: the storage numbers their trials
    # 2 and 3, and only trial 2 fits the budget.
    assert budget.has_room(study, 3)
    t2, t3 = study.ask(), study.ask()
    assert budget.claim(study, t3, 3) is not None       # the later one loses, whoever checks first
    assert budget.claim(study, t2, 3) is None
    # What ask_claimed does with the loser: surplus, and the budget is then taken.
    t3.set_user_attr(budget.SURPLUS_ATTR, budget.claim(study, t3, 3))
    study.tell(t3, state=TrialState.FAIL)
    assert not budget.has_room(study, 3)
    assert budget.ask_claimed(study, 3, a) is None
    for t in (*first, t2):
        study.tell(t, 0.5)
    assert budget.used(study) == 3
    # The surplus trial is no row of the leaderboard.
    assert sorted(r["trial"] for r in rows(study, SPEC)) == [0, 1, 2]


def test_an_interrupted_trial_frees_its_slot_for_its_queued_retry(study):
    tuner = _tuner()
    trials = [budget.ask_claimed(study, 3, tuner) for _ in range(3)]
    assert budget.ask_claimed(study, 3, tuner) is None
    study.tell(trials[0], 0.1)
    study.tell(trials[1], 0.2)
    dead = trials[2]
    dead.set_user_attr(budget.INTERRUPTED_ATTR, True)
    study.tell(dead, state=TrialState.FAIL)
    study.enqueue_trial(dead.params, user_attrs={"retry_of": dead.number})
    retry = budget.ask_claimed(study, 3, tuner)
    assert retry is not None and retry.number == 3 and retry.params == dead.params
    assert budget.ask_claimed(study, 3, tuner) is None


def test_a_grid_point_runs_once_even_when_two_trials_drew_it(tmp_path):
    spec = parse_spec({"objective": {"metric": "validation:accuracy", "direction": "Maximize"},
                       "strategy": "Grid", "random_seed": 0,
                       "parameters": {"lr": {"type": "categorical", "values": [0.01, 0.02]}}})
    study = search.open_study(spec, tmp_path)
    first = budget.ask_claimed(study, 2, _tuner())
    study.tell(first, 0.5)
    # A retry queued for the same grid point while another trial still holds it: a duplicate.
    grid_id = study.trials[0].system_attrs["grid_id"]
    study.enqueue_trial(first.params)
    duplicate = study.ask()
    study._storage.set_trial_system_attr(duplicate._trial_id, "grid_id", grid_id)
    assert budget.claim(study, duplicate, 2) == "its grid point is trial 0's"


def test_only_a_dead_tuner_of_this_machine_leaves_trials_behind(study):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    me = budget.Tuner.this_process()
    owners = {"alive": me, "dead": budget.Tuner(me.host, gone.pid, me.started),
              "elsewhere": _tuner(gone.pid, host="another-machine")}
    trials = {}
    for name, owner in owners.items():
        trials[name] = study.ask()
        trials[name].set_user_attr(budget.OWNER_ATTR, owner.as_attr())
    trials["unowned"] = study.ask()
    running = {t.number: t for t in study.get_trials(states=(TrialState.RUNNING,))}
    verdict = {name: (budget.abandoned(running[t.number], shared=True),
                      budget.abandoned(running[t.number], shared=False)) for name, t in trials.items()}
    assert verdict == {"alive": (False, False), "dead": (True, True), "elsewhere": (False, False),
                       "unowned": (False, True)}


def test_storage_urls_are_checked_and_passwords_never_shown():
    assert search.describe_storage("postgresql+psycopg2://u:s3cret@db:5432/x") == "postgresql+psycopg2://u:***@db:5432/x"
    with pytest.raises(TuningError, match="not a database URL"):
        search.open_storage("not a url")
    with pytest.raises(TuningError) as info:
        search.open_storage(f"postgresql+psycopg2://u:s3cret@127.0.0.1:{_closed_port()}/x")
    assert "cannot open the study storage" in str(info.value) and "s3cret" not in str(info.value)


def test_tuners_sharing_a_study_draw_different_values():
    assert search.sampler_seed(SPEC) == 0
    a, b = search.sampler_seed(SPEC, "host:1"), search.sampler_seed(SPEC, "host:2")
    assert a != b and a == search.sampler_seed(SPEC, "host:1")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
