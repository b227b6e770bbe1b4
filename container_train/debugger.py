"""The SageMaker Debugger (smdebug) hook.

* On SageMaker with Debugger configured, the service writes
  ``<base>/input/config/debughookconfig.json`` (output path, collections, save intervals);
  the hook is built from it with ``Hook.create_from_json_file``.
* On SageMaker without that file (a job created without a ``DebugHookConfig``, every tuning
  trial) there is no hook: nobody asked for tensors, nothing would upload them, and a ResNet50's
  weights every few steps can fill the volume.
* Locally (the ``byoc`` runner, a hand-made ``/opt/ml`` through the image's entry point) a local
  hook saves the default collections ``losses``, ``weights``, ``gradients`` and ``biases`` every
  ``debugger-save-interval`` steps to ``<base>/output/tensors`` -- the local path SageMaker itself
  uses for Debugger tensors -- so the same rule code reads both.

"On SageMaker" is :func:`container_train.job_env.on_sagemaker`: ``TRAINING_JOB_ARN`` is set.

Losses are recorded once per epoch and mode, not per step: :class:`EpochLoss` is the hook's
registered loss, called with the epoch's mean training loss at the end of each training epoch
(TRAIN mode) and with the mean validation loss at the end of each validation pass (EVAL mode), so
the ``losses`` collection holds one value per epoch and mode (tensor ``EpochLoss_output_0``). Rules
that read it (LossNotDecreasing, Overfit, Overtraining, here and SageMaker's own) then compare like
with like: the whole validation set one epoch against the whole validation set another, never one
batch against a different batch. The ``losses`` collection is saved at every step where a value
is recorded (whatever save interval the other collections use), so no epoch is missed.

Read the result with ``smdebug.trials.create_trial(<tensors dir>)``.

A hook's output directory must not be reused by a new run once the previous run closed it
(smdebug refuses), and a resumed job restarts smdebug's step count at 0. So when a job finds an
earlier run's tensors (a restart in the same local /opt/ml tree), they are moved aside to
``tensors-before-epoch-<N>`` (N = the first epoch this run trains).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch.nn.modules.loss import _Loss

from byoc_common import sagemaker_paths
from container_train.job_env import DEBUG_HOOK_CONFIG

log = logging.getLogger(__name__)

DEFAULT_COLLECTIONS = ("losses", "weights", "gradients", "biases")
TENSORS_DIR = "tensors"

# smdebug looks for its optional configs at fixed /opt/ml paths unless told otherwise.
_SMDEBUG_ENV_FILES = {
    "SMDEBUG_CONFIG_FILE_PATH": DEBUG_HOOK_CONFIG,
    "TENSORBOARD_CONFIG_FILE_PATH": "input/config/tensorboardoutputconfig.json",
    "SMPROFILER_CONFIG_PATH": "input/config/profilerconfig.json",
    "CHECKPOINT_CONFIG_FILE_PATH": "input/config/checkpointconfig.json",
}


def point_smdebug_at(base: Path) -> None:
    """Make smdebug read its config files under ``base`` (SAGEMAKER_BASE_DIR) instead of /opt/ml.

    Must run before ``smdebug`` is imported: some of these paths are read at import time.
    """
    for var, rel in _SMDEBUG_ENV_FILES.items():
        os.environ.setdefault(var, str(base / rel))


def tensors_dir(base: Path) -> Path:
    return base / sagemaker_paths.TENSORS_DIR


def rotate_previous_tensors(base: Path, resumed_after_epoch: int) -> Path | None:
    """Move an earlier run's local tensors out of the way (see module docstring)."""
    current = tensors_dir(base)
    if not current.exists():
        return None
    target = current.with_name(f"{TENSORS_DIR}-before-epoch-{resumed_after_epoch + 1}")
    n = 1
    while target.exists():
        n += 1
        target = current.with_name(f"{TENSORS_DIR}-before-epoch-{resumed_after_epoch + 1}-{n}")
    current.rename(target)
    log.info("moved the previous run's Debugger tensors to %s", target)
    return target


class EpochLoss(_Loss):
    """The loss the hook records: ``epoch_loss(mean)`` passes the epoch's mean loss through, and
    the hook's forward hook saves it in the ``losses`` collection at the current step and mode.
    (smdebug's ``register_loss`` takes only ``_Loss`` modules.)"""

    def forward(self, mean_loss: torch.Tensor) -> torch.Tensor:
        return mean_loss


def record_epoch_loss(hook, epoch_loss: EpochLoss, mean_loss: float) -> None:
    """Save one epoch's mean loss in the hook's current mode; no-op without a hook."""
    if hook is not None:
        epoch_loss(torch.tensor(float(mean_loss)))


def create_hook(base: Path, save_interval: int, on_sagemaker: bool = False):
    """The hook for this job (see module docstring). Returns ``(hook or None, description)``.
    Register the model with ``hook.register_module`` and an :class:`EpochLoss` with
    ``hook.register_loss``; per-step losses are not saved."""
    config = base / DEBUG_HOOK_CONFIG
    if on_sagemaker and not config.is_file():
        return None, f"off: this SageMaker job has no DebugHookConfig ({config} is absent)"
    point_smdebug_at(base)
    import smdebug.pytorch as smd

    if config.is_file():
        hook, description = smd.Hook.create_from_json_file(str(config)), f"from {config}"
    else:
        out_dir = tensors_dir(base)
        hook = smd.Hook(
            out_dir=str(out_dir),
            export_tensorboard=False,
            save_config=smd.SaveConfig(save_interval=save_interval),
            include_collections=list(DEFAULT_COLLECTIONS),
        )
        description = f"local: {', '.join(DEFAULT_COLLECTIONS)} every {save_interval} steps to {out_dir}"
    # One value per epoch and mode (see the module docstring): saved whenever one is recorded.
    hook.get_collection("losses").save_config = smd.SaveConfig(save_interval=1)
    return hook, description + "; losses once per epoch"


def set_mode(hook, mode: str) -> None:
    """``mode`` is ``"TRAIN"`` or ``"EVAL"``; no-op without a hook."""
    if hook is None:
        return
    import smdebug.pytorch as smd

    hook.set_mode(getattr(smd.modes, mode))
