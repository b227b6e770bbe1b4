import math
import random

import numpy as np
import pytest
import torch

from container_train import checkpointing, engine
from container_train.errors import TrainingError


def _setup():
    model = torch.nn.Linear(4, 2)
    opt = engine.make_optimizer("sgd", model.parameters(), 0.1, 0.9, 0.0)
    sched = engine.make_scheduler(opt, "cosine", steps_per_epoch=5, epochs=4, warmup_epochs=0,
                                  step_size_epochs=1)
    return model, opt, sched


def test_checkpoint_round_trip_restores_state_and_random_streams(tmp_path):
    model, opt, sched = _setup()
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    sched.step()
    progress = checkpointing.TrainingState(epoch=2, best_accuracy=0.75, best_epoch=1,
                                              best_model={k: v.clone() for k, v in model.state_dict().items()},
                                              history=[{"epoch": 1, "valid_acc": 0.75}])
    torch.manual_seed(7)
    random.seed(7)
    np.random.seed(7)
    checkpointing.save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched, progress=progress,
                                  hyperparameters={"lr": 0.1}, class_names=["a", "b"], arch="resnet18")
    expected = (torch.rand(3), random.random(), np.random.rand())

    state = checkpointing.load_checkpoint(tmp_path)
    checkpointing.check_resumable(state, arch="resnet18", class_names=["a", "b"], job_name=None,
                                  hyperparameters={"lr": 0.1})
    model2, opt2, sched2 = _setup()
    restored = checkpointing.restore(state, model=model2, optimizer=opt2, scheduler=sched2)
    assert torch.equal(torch.rand(3), expected[0])
    assert (random.random(), np.random.rand()) == expected[1:]
    assert restored.epoch == 2 and restored.best_accuracy == 0.75 and restored.history == progress.history
    assert torch.equal(model2.weight, model.weight)
    assert sched2.last_epoch == 1 and opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    assert opt2.state_dict()["state"][0]["momentum_buffer"].shape == (2, 4)


HP = {"arch": "resnet18", "lr": 0.1, "epochs": 4, "workers": 2}


def _save(folder, epoch=0, job_name=None, hyperparameters=HP):
    model, opt, sched = _setup()
    return checkpointing.save_checkpoint(folder, model=model, optimizer=opt, scheduler=sched,
                                         progress=checkpointing.TrainingState(epoch=epoch),
                                         hyperparameters=hyperparameters, class_names=["a", "b"], arch="resnet18",
                                         job_name=job_name)


def _check(state, **over):
    kwargs = dict(arch="resnet18", class_names=["a", "b"], job_name=None, hyperparameters=HP) | over
    checkpointing.check_resumable(state, **kwargs)


def test_checkpoint_from_another_model_is_refused(tmp_path):
    _save(tmp_path)
    state = checkpointing.load_checkpoint(tmp_path)
    with pytest.raises(TrainingError, match="arch=resnet18, this job trains arch=resnet50"):
        _check(state, arch="resnet50")
    with pytest.raises(TrainingError, match="different classes"):
        _check(state, class_names=["a", "c"])


def test_checkpoint_of_another_job_or_other_hyperparameters_is_refused(tmp_path):
    """A tuning trial's checkpoint in the final job's checkpoint dir must not be continued."""
    _save(tmp_path, epoch=4, job_name="tune-trial-007")
    state = checkpointing.load_checkpoint(tmp_path)
    assert state["training_job_name"] == "tune-trial-007"
    _check(state, job_name="tune-trial-007")                                  # a spot restart of that job
    with pytest.raises(TrainingError, match="written by training job 'tune-trial-007', this is 'final-job'"):
        _check(state, job_name="final-job")
    with pytest.raises(TrainingError, match=r"other hyperparameters \(lr 0.1 -> 0.02, epochs 4 -> 8\)"):
        _check(state, hyperparameters={**HP, "lr": 0.02, "epochs": 8})
    _check(state, hyperparameters={**HP, "workers": 0})                       # plumbing may change


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    from container_train import contract

    _save(tmp_path, epoch=1)
    _save(tmp_path, epoch=2)
    previous = tmp_path / contract.PREVIOUS_CHECKPOINT_FILE
    assert torch.load(previous, weights_only=True)["epoch"] == 1          # the one before is kept
    latest = tmp_path / contract.CHECKPOINT_FILE
    latest.write_bytes(latest.read_bytes()[:100])                          # a truncated upload
    with caplog.at_level("WARNING"):
        state = checkpointing.load_checkpoint(tmp_path)
    assert state["epoch"] == 1
    assert "resuming from the previous one" in caplog.text
    assert not list(tmp_path.glob(".*"))                                   # no temporary files left


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint.pth").write_text("garbage")
    with pytest.raises(TrainingError, match="delete it to start over"):
        checkpointing.load_checkpoint(tmp_path)
    (tmp_path / "checkpoint.previous.pth").write_text("garbage too")
    with pytest.raises(TrainingError, match="delete them to start over"):
        checkpointing.load_checkpoint(tmp_path)


@pytest.mark.parametrize("kind, expected", [
    # 2 steps/epoch, 5 epochs, 1 warmup epoch; lr at steps 0, 1, 2, 6, 9
    ("cosine", [0.5, 1.0, 1.0, 0.5, 0.5 * (1 + math.cos(math.pi * 7 / 8))]),
    ("step", [0.5, 1.0, 1.0, 0.1, 0.1]),          # x0.1 every 2 epochs (4 steps) after warmup
    ("none", [0.5, 1.0, 1.0, 1.0, 1.0]),
])
def test_learning_rate_schedules(kind, expected):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = engine.make_scheduler(opt, kind, steps_per_epoch=2, epochs=5, warmup_epochs=1, step_size_epochs=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [lrs[i] for i in (0, 1, 2, 6, 9)] == pytest.approx(expected)
