"""The tuning report from a study, without training: pictures when they can be drawn, a reason when not."""

from __future__ import annotations

import optuna

from byoc.tuning.report import write_report
from byoc.tuning.spec import parse_spec

SPEC = {"objective": {"metric": "validation:accuracy", "direction": "Maximize"}, "strategy": "Random",
        "max_jobs": 6, "max_parallel_jobs": 1,
        "parameters": {"lr": {"type": "continuous", "min": 0.001, "max": 0.1, "scaling": "log"},
                       "batch-size": {"type": "categorical", "values": [16, 32]}},
        "static": {"epochs": 2}}


def _study(n: int) -> optuna.Study:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(n):
        trial = study.ask()
        lr = trial.suggest_float("lr", 0.001, 0.1, log=True)
        trial.suggest_categorical("batch-size", [16, 32])
        study.tell(trial, 1.0 - lr)
    return study


def test_report_with_history_and_importances(tmp_path):
    paths = write_report(_study(6), parse_spec(SPEC), [{"trial": 0, "value": 0.9}], tmp_path)
    assert {"history", "importances", "html"} <= set(paths)
    assert paths["importances"].read_bytes().startswith(b"\x89PNG")
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 2 and "validation:accuracy" in page


def test_one_trial_gives_history_and_says_why_no_importances(tmp_path):
    paths = write_report(_study(1), parse_spec(SPEC), [], tmp_path)
    assert "importances" not in paths and paths["history"].exists()
    assert "need 6 completed trials for 2 tuned parameter(s) (3 each), and 1 completed" in paths["html"].read_text()


def test_pruned_trials_are_on_the_history_and_count_against_importances(tmp_path):
    """Four trials, two pruned at epoch 1 (the demo's shape): the history shows all four, the
    importances are refused with the counts (a forest fitted to two points ranks noise)."""
    study = optuna.create_study(direction="maximize")
    for value in (0.8, 0.4, 0.85, 0.3):
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(0.001, 0.1, log=True),
                           "batch-size": optuna.distributions.CategoricalDistribution([16, 32])})
        trial.report(value, 1)
        if value < 0.5:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
    paths = write_report(study, parse_spec(SPEC), [], tmp_path)
    page = paths["html"].read_text()
    assert "and 2 completed (2 pruned)" in page and "importances" not in paths
    from byoc.tuning.report import _last_value

    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert [_last_value(t) for t in pruned] == [(1, 0.4), (1, 0.3)]      # where the crosses are drawn
    assert paths["history"].read_bytes().startswith(b"\x89PNG")
