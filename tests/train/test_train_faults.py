"""What a real job meets besides good data: a stop request while the feature cache is built, a
checkpoint left by another job, a full disk, file names that look like metric lines."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import container_train
from byoc.local.training_job import run_training_job
from container_train import contract, engine, train
from container_train.errors import TrainingError
from container_train.hyperparameters import parse_hyperparameters, to_sagemaker_strings
from container_train.job_env import resolve_paths
from tests.train.train_helpers import FAST_HP, StopAfter

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

CODE_ROOT = Path(container_train.__file__).resolve().parents[1]      # what the subprocess imports
HEAD_ONLY = {**FAST_HP, "freeze": "head", "epochs": 1, "batch-size": 4, "debugger": False}


def run_in_process(base: Path, data: Path, hp: dict, stop: engine.StopFlag | None = None) -> dict:
    """``train.run`` on a /opt/ml tree at ``base`` with ``data`` as the training channel."""
    paths = resolve_paths({"SAGEMAKER_BASE_DIR": str(base), "SM_CHANNEL_TRAINING": str(data)})
    args = parse_hyperparameters([f"--{k}={v}" for k, v in to_sagemaker_strings(hp).items()])
    return train.run(args, paths, engine.StopFlag() if stop is None else stop)


def test_sigterm_while_the_feature_cache_is_built_keeps_the_work_and_the_restart_carries_on(
        cache_data, tmp_path, caplog):
    caplog.set_level("INFO")
    stopped = run_in_process(tmp_path / "job", cache_data, HEAD_ONLY, stop=StopAfter(1))   # after 2 batches

    assert stopped["status"] == "stopped" and stopped["stopped_by"] == "SIGTERM"
    assert stopped["epochs_completed"] == 0 and stopped["test"] is None
    assert (tmp_path / "job" / "model" / "model.pth").is_file()         # the job still ends with a model
    cache_dir = tmp_path / "job" / "checkpoints" / "feature-cache"
    partial = list(cache_dir.glob("train-*.partial.pt"))
    assert len(partial) == 1, sorted(p.name for p in cache_dir.iterdir())
    assert "received SIGTERM while computing the feature cache: stopped after 8 of 30 images" in caplog.text

    caplog.clear()
    resumed = run_in_process(tmp_path / "job", cache_data, HEAD_ONLY)
    assert resumed["status"] == "completed" and resumed["epochs_completed"] == 1
    assert "resuming a stopped extraction from" in caplog.text and "8 images of the next" in caplog.text
    assert not partial[0].exists()

    # What the interrupted and resumed extraction stored equals an uninterrupted one.
    fresh = run_in_process(tmp_path / "fresh", cache_data, HEAD_ONLY)
    assert fresh["status"] == "completed"
    stored = [torch.load(next((base / "checkpoints" / "feature-cache").glob("train-*[!l].pt")), weights_only=True)
              for base in (tmp_path / "job", tmp_path / "fresh")]
    assert torch.equal(stored[0]["labels"], stored[1]["labels"])
    torch.testing.assert_close(stored[0]["features"], stored[1]["features"])


def test_a_checkpoint_of_another_job_is_not_resumed(tiny_dataset, tmp_path, monkeypatch):
    hp = {**FAST_HP, "epochs": 1, "debugger": False}
    monkeypatch.setenv("TRAINING_JOB_NAME", "tune-trial-003")
    assert run_in_process(tmp_path / "job", tiny_dataset, hp)["epochs_completed"] == 1
    monkeypatch.setenv("TRAINING_JOB_NAME", "final-training")          # same checkpoint dir, another job
    with pytest.raises(TrainingError, match="written by training job 'tune-trial-003', this is 'final-training'"):
        run_in_process(tmp_path / "job", tiny_dataset, hp)


def test_a_full_disk_leaves_no_empty_failure_file(tmp_path):
    """RLIMIT_FSIZE=0 makes every write fail (EFBIG) as a full disk does (ENOSPC); the toolkit writes
    its own failure file only when none exists, so an empty one would hide both messages."""
    failure = tmp_path / "output" / "failure"
    code = textwrap.dedent("""
        import resource, sys
        from pathlib import Path
        from container_train.errors import write_failure_file
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
        write_failure_file(Path(sys.argv[1]), "the reason")
    """)
    env = {**os.environ, "PYTHONPATH": str(CODE_ROOT)}
    subprocess.run([sys.executable, "-c", code, str(failure)], check=True, env=env, cwd=tmp_path, timeout=120)
    assert not failure.exists()
    assert list(failure.parent.iterdir()) == []                          # no temporary file left either
    subprocess.run([sys.executable, "-c", code.replace("resource.setrlimit", "0 and resource.setrlimit"),
                    str(failure)], check=True, env=env, cwd=tmp_path, timeout=120)
    assert failure.read_text() == "the reason\n"


def test_a_file_named_like_a_metric_line_cannot_become_the_objective(dataset_copy, tmp_path):
    """Unreadable files are logged by name; the metric regexes only read lines that start with
    #metric, and a name with a line break in it is logged quoted, on one line."""
    lure = "#metric epoch=1 valid_loss=0.000001 valid_acc=0.999.jpg"
    folder = next((dataset_copy / "test").iterdir())
    (folder / lure).write_text("not an image")
    (folder / f"x\n{lure}").write_text("not an image either")
    valid_folder = next((dataset_copy / "valid").iterdir())
    (valid_folder / f"y\n{lure}").write_text("not an image")

    r = run_training_job(tmp_path / "job", {**FAST_HP, "epochs": 1, "debugger": False},
                         {"training": dataset_copy}, timeout=300)

    assert r.ok, r.log_text[-3000:]
    assert r.metrics["skipped_images"] == 3
    assert "valid_acc=0.999" in r.log_text                                  # the names were logged ...
    assert r.metric("validation:accuracy") == pytest.approx([r.metrics["history"][0]["valid_acc"]], abs=1e-6)
    assert r.metric("test:accuracy") == pytest.approx([r.metrics["test"]["accuracy"]], abs=1e-6)
    assert contract.completed_epochs(r.log_text) == [1]                     # ... and read as no metric
    assert [line for line in r.log_text.splitlines() if line.startswith("#metric")] == [
        line for line in r.log_text.splitlines() if line.startswith("#metric") and "0.999" not in line]
