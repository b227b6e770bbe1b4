"""The /opt/ml tree the local runner builds (the real runs are in test_train_job.py)."""

import json

from byoc.local.training_job import TRAIN_SCRIPT, prepare_job_dir


def test_prepare_job_dir_writes_the_sagemaker_layout(tmp_path, tiny_dataset):
    job = tmp_path / "job"
    ckpt = prepare_job_dir(job, {"lr": 0.1, "pretrained": False, "arch": "resnet18", "epochs": 3},
                           {"training": tiny_dataset, "validation": tiny_dataset / "valid"},
                           checkpoint_dir=tmp_path / "ckpt")
    config = job / "input" / "config"
    assert json.loads((config / "hyperparameters.json").read_text()) == {
        "lr": "0.1", "pretrained": "false", "arch": "resnet18", "epochs": "3"}
    assert json.loads((config / "resourceconfig.json").read_text())["current_host"] == "algo-1"
    assert set(json.loads((config / "inputdataconfig.json").read_text())) == {"training", "validation"}
    assert (job / "input" / "data" / "training").resolve() == tiny_dataset.resolve()
    assert (job / "input" / "data" / "validation" / "001.Class_a").is_dir()
    assert ckpt == (tmp_path / "ckpt").resolve() and (job / "checkpoints").resolve() == ckpt
    assert (job / "code" / "train.py").read_text() == TRAIN_SCRIPT.read_text()
    assert (job / "model").is_dir() and (job / "output" / "data").is_dir()


def test_reusing_a_job_dir_clears_the_previous_outcome(tmp_path, tiny_dataset):
    job = tmp_path / "job"
    prepare_job_dir(job, {}, {"training": tiny_dataset})
    (job / "output" / "failure").write_text("old failure")
    (job / "output" / "success").write_text("")
    (job / "output" / "data" / "metrics.json").write_text("{}")
    (job / "checkpoints" / "checkpoint.pth").write_text("kept")
    prepare_job_dir(job, {}, {"training": tiny_dataset})
    assert not (job / "output" / "failure").exists() and not (job / "output" / "success").exists()
    assert not (job / "output" / "data" / "metrics.json").exists()
    assert (job / "checkpoints" / "checkpoint.pth").read_text() == "kept"     # resume needs it


def test_container_mode_leaves_channels_to_be_mounted(tmp_path, tiny_dataset):
    job = tmp_path / "job"
    prepare_job_dir(job, {}, {"training": tiny_dataset}, link_inputs=False)
    assert not (job / "input" / "data" / "training").exists()
    assert not (job / "code" / "train.py").exists()     # the image brings its own train.py
