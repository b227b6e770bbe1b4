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
    assert "at least two completed trials (1 completed)" in paths["html"].read_text()
