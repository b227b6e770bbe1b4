"""The training image run the way SageMaker runs it: `docker run -v <job>/opt/ml:/opt/ml IMAGE train`.

The job tree (hyperparameters.json, inputdataconfig.json, channels) is written by
byoc.local.training_job in container mode; the image's toolkit, entry point and trainer do
the rest. Tiny data (32 px, a few images per class, resnet18 from random weights) keeps it quick.
"""

from __future__ import annotations

import json

import pytest
from smdebug.trials import create_trial

from byoc.datasets.synthetic import make_dataset
from byoc.local.training_job import TrainingJob, run_training_job
from byoc_common.artifact import load_model_artifact
from container_train import contract

pytestmark = [pytest.mark.container, pytest.mark.slow]

NUM_CLASSES = 3
TINY_JOB = {"arch": "resnet18", "pretrained": False, "image-size": 32, "batch-size": 6, "workers": 0,
            "freeze": "none", "lr": 0.01, "debugger-save-interval": 1, "log-interval-s": 1}


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path / "data", num_classes=NUM_CLASSES, per_class=6, size=32)


def channels(root):
    return {"training": root / "train", "validation": root / "valid", "test": root / "test"}


def test_train_image_runs_a_training_job(train_image, dataset, tmp_path, give_back_to_user):
    job_dir = tmp_path / "job"
    give_back_to_user(train_image, job_dir)

    result = run_training_job(job_dir, {**TINY_JOB, "epochs": 1}, channels(dataset), image=train_image,
                              timeout=900)

    assert result.ok, f"{result}\n{result.log_text[-4000:]}"
    assert result.failure_reason is None
    # The toolkit copied the image's train.py into /opt/ml/code and ran it (SAGEMAKER_PROGRAM).
    assert (job_dir / "code" / "train.py").is_file()
    assert "train.py" in result.log_text

    model, classes, config = load_model_artifact(result.model_dir)
    assert len(classes) == NUM_CLASSES and config.arch == "resnet18" and config.image_size == 32

    metrics = result.metrics
    assert metrics["status"] == "completed" and metrics["epochs_completed"] == 1
    assert metrics["num_classes"] == NUM_CLASSES
    assert metrics["test"] is not None and metrics["test"]["images"] == NUM_CLASSES * 6
    # The MetricDefinitions regexes SageMaker applies to the log find every metric.
    for name in ("train:loss", "validation:loss", "validation:accuracy", "test:accuracy"):
        assert len(result.metric(name)) >= 1, f"no {name} line in the log"

    trial = create_trial(str(job_dir / "output" / "tensors"))
    assert trial.tensor_names(), "the Debugger hook saved no tensors"
    assert trial.steps(), "the Debugger hook saved no steps"
    loss_tensors = [n for n in trial.tensor_names() if "loss" in n.lower()]
    assert loss_tensors, f"no loss among the saved tensors: {trial.tensor_names()[:20]}"
    values = trial.tensor(loss_tensors[0]).values()
    assert values, "the loss tensor has no saved values"


def test_train_image_runs_a_hand_made_opt_ml(train_image, dataset, tmp_path, give_back_to_user, docker):
    """The README's `docker run -v <dir>:/opt/ml IMAGE train` with only the data and hyperparameters.json
    (no resourceconfig.json / inputdataconfig.json, which SageMaker always writes) trains for real."""
    import shutil

    opt_ml = tmp_path / "ml"
    give_back_to_user(train_image, opt_ml)
    shutil.copytree(dataset, opt_ml / "input" / "data" / "training")   # train/ valid/ test/, as dogImages
    (opt_ml / "input" / "config").mkdir(parents=True)
    hps = {**TINY_JOB, "epochs": 1, "debugger": False}
    (opt_ml / "input" / "config" / "hyperparameters.json").write_text(
        json.dumps({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in hps.items()}))

    proc = docker("run", "--rm", "--network", "host", "--add-host", "algo-1:127.0.0.1",
                  "-v", f"{opt_ml}:/opt/ml", train_image, "train", timeout=900)

    assert "wrote the missing resourceconfig.json, inputdataconfig.json" in proc.stderr + proc.stdout
    _, classes, _ = load_model_artifact(opt_ml / "model")
    assert len(classes) == NUM_CLASSES
    assert (opt_ml / "output" / "success").exists()


def test_train_image_reports_bad_data_in_the_failure_file(train_image, dataset, tmp_path, give_back_to_user):
    job_dir = tmp_path / "job"
    give_back_to_user(train_image, job_dir)
    empty = tmp_path / "empty"
    empty.mkdir()

    result = run_training_job(job_dir, {**TINY_JOB, "epochs": 1},
                              {"training": empty, "validation": dataset / "valid"}, image=train_image,
                              timeout=600)

    assert result.returncode != 0, result.log_text[-3000:]
    failure = (job_dir / "output" / "failure").read_text()
    assert "training" in failure and "empty" in failure, failure
    assert not (job_dir / "model" / "model.pth").exists()


def test_train_image_passes_sigterm_to_the_trainer(train_image, dataset, tmp_path, give_back_to_user):
    """`docker kill --signal SIGTERM` (what StopTrainingJob does) reaches train.py through PID 1:
    the job checkpoints, saves the best model so far and exits 0 instead of being killed."""
    job_dir = tmp_path / "job"
    give_back_to_user(train_image, job_dir)
    job = TrainingJob(job_dir, {**TINY_JOB, "epochs": 200}, channels(dataset), image=train_image).start()
    try:
        first_epoch_done = job.wait_for(lambda: len(contract.parse_metric("validation:accuracy",
                                                                          job.log_text())) >= 1, timeout=600)
        assert first_epoch_done, job.log_text()[-4000:]
        job.stop()
        result = job.wait(timeout=120)     # a deadline for a hung job, not a speed check
    finally:
        job.kill()

    # The stop was handled: exit 0, metrics say stopped, a checkpoint and the best model are there.
    assert result.ok, f"{result}\n{result.log_text[-4000:]}"
    metrics = json.loads((job_dir / "output" / "data" / contract.METRICS_FILE).read_text())
    assert metrics["status"] == "stopped", metrics
    assert 1 <= metrics["epochs_completed"] < 200
    load_model_artifact(job_dir / "model")
    assert (job_dir / "checkpoints" / contract.CHECKPOINT_FILE).is_file()
    assert "SIGTERM" in result.log_text


def test_train_image_has_the_toolkit_entry_and_no_compiler(train_image, docker):
    info = json.loads(docker("image", "inspect", train_image).stdout)[0]["Config"]
    env = dict(item.split("=", 1) for item in info["Env"])
    assert env["SAGEMAKER_PROGRAM"] == "train.py"
    assert info["Cmd"] == ["train"]

    probe = docker("run", "--rm", "--network", "host", train_image, "sh", "-c",
                   "command -v train; test -f /opt/ml/code/train.py && echo code-ok; "
                   "python -c 'import torchvision.ops, smdebug, container_train.train; print(\"imports-ok\")'; "
                   "command -v gcc cc c++ || echo no-compiler")
    assert probe.stdout.split() == ["/opt/venv/bin/train", "code-ok", "imports-ok", "no-compiler"], probe.stdout


def test_train_image_refuses_serve_at_once_saying_which_image_serves(train_image, docker):
    """What SageMaker hosting runs, and the SDK's estimator.deploy()/transformer() without image_uri."""
    answer = docker("run", "--rm", "--network", "host", train_image, "serve", check=False)
    assert answer.returncode == 2
    lines = (answer.stdout + answer.stderr).splitlines()
    assert len(lines) == 1 and "this is the byoc training image" in lines[0] and "image_uri=" in lines[0], lines
