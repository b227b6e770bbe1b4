"""The smdebug hook: SageMaker's debughookconfig.json when present, a local default otherwise."""

import json

import pytest
import torch

from container_train import debugger

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def _restore_smdebug_env(monkeypatch):
    """create_hook points smdebug's config variables at the base dir; undo that after each test."""
    for var in debugger._SMDEBUG_ENV_FILES:
        monkeypatch.setenv(var, "")     # records the original state, so teardown restores it
        monkeypatch.delenv(var)


def _train_a_few_epochs(hook, epochs=2, steps=3):
    """As the trainer does: per-step forward/backward, the epoch's mean loss recorded at its end."""
    import smdebug.pytorch as smd

    model = torch.nn.Sequential(torch.nn.Linear(6, 3))
    criterion, epoch_loss = torch.nn.CrossEntropyLoss(), debugger.EpochLoss()
    hook.register_module(model)
    hook.register_loss(epoch_loss)
    hook.set_mode(smd.modes.TRAIN)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(epochs):
        total = 0.0
        for _ in range(steps):
            loss = criterion(model(torch.randn(8, 6)), torch.randint(0, 3, (8,)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        debugger.record_epoch_loss(hook, epoch_loss, total / steps)
    hook.close()


def test_sagemaker_debug_hook_config_is_used_when_present(tmp_path):
    tensors = tmp_path / "sagemaker-tensors"
    config = tmp_path / "input" / "config" / "debughookconfig.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({
        "LocalPath": str(tensors),
        "HookParameters": {"save_interval": "2"},
        # What the SDK sends for a rule: losses every 500 steps. The epoch losses are saved anyway.
        "CollectionConfigurations": [{"CollectionName": "losses", "CollectionParameters": {"save_interval": "500"}},
                                     {"CollectionName": "gradients"}],
    }))
    hook, description = debugger.create_hook(tmp_path, save_interval=10, on_sagemaker=True)
    assert description == f"from {config}; losses once per epoch"
    _train_a_few_epochs(hook)
    from smdebug.trials import create_trial

    trial = create_trial(str(tensors))
    assert trial.tensor_names(collection="losses") == ["EpochLoss_output_0"]
    assert trial.tensor("EpochLoss_output_0").steps() == [2, 5]      # the last step of each epoch
    assert trial.tensor(trial.tensor_names(collection="gradients")[0]).steps() == [0, 2, 4]
    assert not (tmp_path / "output" / "tensors").exists()


def test_on_sagemaker_without_a_debug_hook_config_there_is_no_hook(tmp_path):
    """A tuning trial (no DebugHookConfig) must not fill its volume with tensors nobody uploads."""
    from container_train.job_env import on_sagemaker

    arn = {"TRAINING_JOB_ARN": "arn:aws:sagemaker:eu-west-1:123456789012:training-job/trial-1"}
    assert on_sagemaker(arn) and not on_sagemaker({"TRAINING_JOB_NAME": "sdk-local-mode-job"})
    hook, description = debugger.create_hook(tmp_path, save_interval=2, on_sagemaker=on_sagemaker(arn))
    assert hook is None
    assert "no DebugHookConfig" in description
    assert not debugger.tensors_dir(tmp_path).exists()


def test_local_hook_writes_the_default_collections_under_output_tensors(tmp_path):
    hook, description = debugger.create_hook(tmp_path, save_interval=2)
    assert "losses, weights, gradients, biases every 2 steps" in description
    _train_a_few_epochs(hook, epochs=3, steps=2)
    from smdebug import modes
    from smdebug.trials import create_trial

    trial = create_trial(str(debugger.tensors_dir(tmp_path)))
    for collection in debugger.DEFAULT_COLLECTIONS:
        assert trial.tensor_names(collection=collection), collection
    loss = trial.tensor("EpochLoss_output_0")
    assert loss.steps(mode=modes.TRAIN) == [1, 3, 5]                  # one value per epoch
    assert trial.tensor(trial.tensor_names(collection="weights")[0]).steps() == [0, 2, 4]


def test_previous_tensors_are_moved_aside_on_resume(tmp_path):
    (debugger.tensors_dir(tmp_path) / "events").mkdir(parents=True)
    moved = debugger.rotate_previous_tensors(tmp_path, resumed_after_epoch=3)
    assert moved.name == "tensors-before-epoch-4" and (moved / "events").is_dir()
    assert not debugger.tensors_dir(tmp_path).exists()
    assert debugger.rotate_previous_tensors(tmp_path, 3) is None
