"""A trial's time split (waiting, extraction, training, the rest) from its job's own phase records, in the
leaderboard and as a figure in the tuning report (issue 25: a trial idled 61 s on another's cache)."""

from __future__ import annotations

import json

import optuna

from byoc.tuning import leaderboard, trial_time
from byoc.tuning.report import write_report
from byoc.tuning.spec import parse_spec
from byoc_common.sagemaker_paths import OUTPUT_DATA_DIR
from container_train.contract import PHASES_FILE

SPEC = {"objective": {"metric": "validation:accuracy", "direction": "Maximize"}, "strategy": "Random",
        "max_jobs": 2, "max_parallel_jobs": 1,
        "parameters": {"lr": {"type": "continuous", "min": 0.001, "max": 0.1, "scaling": "log"}},
        "static": {"epochs": 2}}


def _job(tmp_path, name: str, phases: list[tuple[str, float]], torn: bool = False):
    job = tmp_path / name
    path = job / OUTPUT_DATA_DIR / PHASES_FILE
    path.parent.mkdir(parents=True)
    lines = [json.dumps({"phase": p, "start": 1.0, "seconds": s}) for p, s in phases]
    path.write_text("\n".join(lines) + ("\n{\"phase\": \"train" if torn else "\n"))
    return job


def test_waiting_extraction_training_and_the_rest(tmp_path):
    job = _job(tmp_path, "waited", [("start-up", 3.0), ("waiting", 61.0), ("feature extraction", 4.0),
                                    ("training", 2.0), ("validation", 0.5), ("checkpoint", 0.5), ("test", 1.0)],
               torn=True)                                     # a line cut short by a kill is skipped
    assert trial_time.split(job, 80.0) == {"waiting_s": 61.0, "extraction_s": 4.0, "training_s": 4.0,
                                           "other_s": 11.0}


def test_a_job_without_records_has_no_split(tmp_path):
    assert set(trial_time.split(tmp_path / "never-started", 5.0).values()) == {None}
    assert set(trial_time.split("", 5.0).values()) == {None}           # a trial that never got a job dir


def test_leaderboard_columns_and_report_figure(tmp_path):
    spec = parse_spec(SPEC)
    study = optuna.create_study(direction="maximize")
    for i, phases in enumerate(([("feature extraction", 30.0), ("training", 5.0)], [("training", 6.0)])):
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(0.001, 0.1, log=True)})
        trial.set_user_attr("job_dir", str(_job(tmp_path, f"trial-{i}", phases)))
        trial.set_user_attr("duration_s", 40.0)
        study.tell(trial, 0.5 + i / 10)
    rows = leaderboard.rows(study, spec)
    assert [(r["trial"], r["extraction_s"], r["training_s"], r["other_s"]) for r in rows] == \
        [(1, 0.0, 6.0, 34.0), (0, 30.0, 5.0, 5.0)]
    paths = write_report(study, spec, rows, tmp_path)
    assert paths["trial_time"].read_bytes().startswith(b"\x89PNG")
    assert "extraction_s" in paths["html"].read_text()
