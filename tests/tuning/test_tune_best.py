"""best_hyperparameters.json: one schema whichever backend tuned, SageMaker strings in the file, read
back validated and typed."""

from __future__ import annotations

import json

import pytest

from byoc.tuning.best import BEST_HYPERPARAMETERS, read_best_hyperparameters, write_best_hyperparameters
from byoc.tuning.errors import TuningError

KEYS = {"objective", "hyperparameters", "tuned", "trial", "training_job", "job_dir"}


def test_local_and_sagemaker_results_have_the_same_schema(tmp_path):
    local = write_best_hyperparameters(
        tmp_path / "local", metric="validation:loss", direction="Minimize", value=0.25,
        hyperparameters={"arch": "resnet18", "pretrained": False, "lr": 0.01, "batch-size": 8},
        tuned={"lr": 0.01}, trial=3, job_dir=tmp_path / "local" / "trials" / "trial-0003")
    sagemaker = write_best_hyperparameters(
        tmp_path / "sm", metric="validation:accuracy", direction="Maximize", value=float("nan"),
        hyperparameters={"arch": "resnet50", "pretrained": "true", "lr": "0.01"}, tuned={"lr": "0.01"},
        training_job="byoc-run-001-abc")
    docs = [json.loads(path.read_text()) for path in (local, sagemaker)]
    assert local == tmp_path / "local" / BEST_HYPERPARAMETERS
    assert [set(d) for d in docs] == [KEYS, KEYS]
    assert docs[0]["objective"] == {"metric": "validation:loss", "direction": "Minimize", "value": 0.25}
    assert docs[0]["hyperparameters"] == {"arch": "resnet18", "pretrained": "false", "lr": "0.01",
                                          "batch-size": "8"}
    assert (docs[0]["trial"], docs[0]["training_job"]) == (3, None)
    assert docs[0]["job_dir"].endswith("trial-0003")
    assert docs[1]["objective"]["value"] is None          # NaN is not JSON
    assert (docs[1]["trial"], docs[1]["training_job"], docs[1]["job_dir"]) == (None, "byoc-run-001-abc", None)

    # Read back validated and typed, whichever backend wrote it.
    assert read_best_hyperparameters(tmp_path / "local") == {"arch": "resnet18", "pretrained": False, "lr": 0.01,
                                                             "batch-size": 8}
    assert read_best_hyperparameters(tmp_path / "sm") == {"arch": "resnet50", "pretrained": True, "lr": 0.01}


def test_a_missing_or_foreign_file_is_a_clear_error(tmp_path):
    with pytest.raises(TuningError, match="does not exist: run `byoc tune` first"):
        read_best_hyperparameters(tmp_path)
    (tmp_path / BEST_HYPERPARAMETERS).write_text("{not json")
    with pytest.raises(TuningError, match="cannot read"):
        read_best_hyperparameters(tmp_path)
    (tmp_path / BEST_HYPERPARAMETERS).write_text(json.dumps({"lr": "0.01"}))
    with pytest.raises(TuningError, match="has no 'hyperparameters' mapping"):
        read_best_hyperparameters(tmp_path)
    # A hand-edited file with JSON booleans still reads; a value the trainer refuses fails here, not in a job.
    (tmp_path / BEST_HYPERPARAMETERS).write_text(json.dumps({"hyperparameters": {"pretrained": True,
                                                                                 "epochs": 2}}))
    assert read_best_hyperparameters(tmp_path) == {"pretrained": True, "epochs": 2}
    (tmp_path / BEST_HYPERPARAMETERS).write_text(json.dumps({"hyperparameters": {"epochs": "two", "lrr": "1"}}))
    with pytest.raises(TuningError, match="unknown hyperparameter.*lrr.*epochs='two' is not an integer"):
        read_best_hyperparameters(tmp_path)
