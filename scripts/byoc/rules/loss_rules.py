"""Rules that look at the loss: LossNotDecreasing, Overfit, Overtraining.

Our trainer's hook saves the loss of every saved step in the ``losses`` collection, in TRAIN
mode while training and EVAL mode while validating, so one tensor carries both curves and the
mode of each global step tells them apart (``trial.mode_modestep(step)``).

Parameters and defaults follow SageMaker's "List of Debugger built-in rules". How each rule
reads them is spelled out in its docstring, since the documentation leaves some of it open.
"""

from __future__ import annotations

import math

import numpy as np
from smdebug.core.modes import ModeKeys

from .base import LocalRule

MODE_ORDER = (ModeKeys.EVAL, ModeKeys.TRAIN, ModeKeys.GLOBAL)   # LossNotDecreasing's default search


class _LossRule(LocalRule):
    def loss_tensor_names(self, regex=None, use_losses_collection=True, collections=None) -> list[str]:
        colls = list(collections or [])
        if use_losses_collection:
            colls.append("losses")
        names = self.tensors(colls, regex)
        if not names:
            self.note("no loss tensors found (losses collection / tensor_regex); nothing to check")
        return names

    def mean_loss_at(self, names: list[str], step: int) -> float | None:
        values = [self.value_at(n, step) for n in names]
        values = [float(np.mean(v)) for v in values if v is not None]
        return float(np.mean(values)) if values else None


class LossNotDecreasing(_LossRule):
    """Fires when the loss has not gone down enough over ``num_steps`` steps.

    For each loss tensor, in ``mode`` (default: EVAL if the tensor has EVAL steps, else TRAIN,
    else GLOBAL, as documented), the rule keeps the last checked (mode step, loss). At the first
    saved step at least ``num_steps`` mode steps later it compares:

    * loss went down (or stayed): fires if it fell by less than ``diff_percent`` percent;
    * loss went up: fires if it rose by more than ``increase_threshold_percent`` percent; a
      smaller rise is taken as mini-batch noise (how we read "the maximum threshold percent that
      loss is allowed to increase");
    * loss is NaN or infinite: fires.

    When the default mode search switches (EVAL steps appear after the first epoch of a live
    run) the comparison restarts from the new mode.
    """

    DEFAULTS = {
        "collection_names": None,
        "tensor_regex": None,
        "use_losses_collection": True,
        "num_steps": 10,
        "diff_percent": 0.1,
        "increase_threshold_percent": 5.0,
        "mode": None,
    }
    MODE_PARAMS = ("mode",)

    def __init__(self, base_trial, **parameters):
        super().__init__(base_trial, **parameters)
        self._last: dict[str, tuple[ModeKeys, int, float]] = {}

    def _mode_for(self, name: str) -> ModeKeys:
        if self.params["mode"] is not None:
            return self.params["mode"]
        tensor = self.base_trial.tensor(name)
        for mode in MODE_ORDER:
            if mode == ModeKeys.GLOBAL or tensor.steps(mode=mode):
                return mode
        return ModeKeys.GLOBAL

    def check(self, step: int) -> str | None:
        names = self.loss_tensor_names(
            self.params["tensor_regex"], self.params["use_losses_collection"], self.params["collection_names"]
        )
        step_mode, step_mode_step = self.base_trial.mode_modestep(step)
        messages = []
        for name in names:
            mode = self._mode_for(name)
            if mode == ModeKeys.GLOBAL:
                mode_step = step
            elif step_mode != mode:
                continue
            else:
                mode_step = step_mode_step
            value = self.value_at(name, step)
            if value is None:
                continue
            loss = float(np.mean(value))
            last = self._last.get(name)
            if last is None or last[0] != mode:
                self._last[name] = (mode, mode_step, loss)
                continue
            _, last_step, last_loss = last
            if mode_step - last_step < self.params["num_steps"]:
                continue
            self._last[name] = (mode, mode_step, loss)
            message = self._compare(last_loss, loss)
            if message:
                messages.append(f"{name} ({mode.name} step {last_step} -> {mode_step}): {message}")
        return "; ".join(messages) or None

    def _compare(self, before: float, now: float) -> str | None:
        if not math.isfinite(now):
            return f"loss is {now}"
        if before == 0:
            return None if now < 0 else "loss stayed at 0 (nothing left to decrease)"
        change = (before - now) / abs(before) * 100.0    # positive = decreased
        if change >= 0:
            if change < self.params["diff_percent"]:
                return f"loss fell only {change:.3f}% ({before:.4g} -> {now:.4g}), less than {self.params['diff_percent']:g}%"
            return None
        if -change > self.params["increase_threshold_percent"]:
            return (
                f"loss rose {-change:.1f}% ({before:.4g} -> {now:.4g}), more than "
                f"{self.params['increase_threshold_percent']:g}%"
            )
        return None


class Overfit(_LossRule):
    """Fires when validation loss runs away from training loss.

    At each EVAL step (from global step ``start_step`` on) the rule compares the mean validation
    loss of the current validation pass so far with the mean training loss of the training
    steps just before it: ``ratio = (mean_val - mean_train) / mean_train``. The rule fires once
    the ratio has exceeded ``ratio_threshold`` for ``patience`` consecutive EVAL steps.
    """

    DEFAULTS = {"tensor_regex": None, "start_step": 0, "patience": 1, "ratio_threshold": 0.1}

    def __init__(self, base_trial, **parameters):
        super().__init__(base_trial, **parameters)
        self._train: list[float] = []        # current / last training segment
        self._val: list[float] = []          # current validation segment
        self._prev_mode: ModeKeys | None = None
        self._exceeded = 0

    def check(self, step: int) -> str | None:
        mode, _ = self.base_trial.mode_modestep(step)
        loss = self.mean_loss_at(self.loss_tensor_names(self.params["tensor_regex"]), step)
        if loss is None or mode not in (ModeKeys.TRAIN, ModeKeys.EVAL):
            return None
        if mode == ModeKeys.TRAIN:
            if self._prev_mode != ModeKeys.TRAIN:
                self._train = []
            self._train.append(loss)
            self._prev_mode = mode
            return None
        if self._prev_mode != ModeKeys.EVAL:
            self._val = []
        self._prev_mode = mode
        self._val.append(loss)
        if not self._train or step < self.params["start_step"]:
            return None
        mean_train, mean_val = float(np.mean(self._train)), float(np.mean(self._val))
        if mean_train <= 0 or not math.isfinite(mean_val) or not math.isfinite(mean_train):
            return None
        ratio = (mean_val - mean_train) / mean_train
        self._exceeded = self._exceeded + 1 if ratio > self.params["ratio_threshold"] else 0
        if self._exceeded >= self.params["patience"]:
            return (
                f"validation loss {mean_val:.4g} is {ratio * 100:.0f}% above training loss {mean_train:.4g} "
                f"(ratio_threshold {self.params['ratio_threshold']:g}) for {self._exceeded} step(s)"
            )
        return None


class Overtraining(_LossRule):
    """Fires when training goes on although the losses stopped improving.

    The rule tracks the best training and the best validation loss. A step improves on the best
    only if it is lower by more than ``delta``. It fires when the training loss has not improved
    for ``patience_train`` TRAIN steps, or the validation loss for ``patience_validation`` EVAL
    steps.
    """

    DEFAULTS = {"patience_train": 5, "patience_validation": 10, "delta": 0.01}

    def __init__(self, base_trial, **parameters):
        super().__init__(base_trial, **parameters)
        self._best = {ModeKeys.TRAIN: math.inf, ModeKeys.EVAL: math.inf}
        self._stale = {ModeKeys.TRAIN: 0, ModeKeys.EVAL: 0}

    def check(self, step: int) -> str | None:
        mode, _ = self.base_trial.mode_modestep(step)
        if mode not in self._best:
            return None
        loss = self.mean_loss_at(self.loss_tensor_names(), step)
        if loss is None or not math.isfinite(loss):
            return None
        if loss < self._best[mode] - self.params["delta"]:
            self._best[mode], self._stale[mode] = loss, 0
            return None
        self._stale[mode] += 1
        patience = self.params["patience_train" if mode == ModeKeys.TRAIN else "patience_validation"]
        if self._stale[mode] >= patience:
            which = "training" if mode == ModeKeys.TRAIN else "validation"
            return (
                f"{which} loss has not improved by more than {self.params['delta']:g} for "
                f"{self._stale[mode]} {mode.name} steps (best {self._best[mode]:.4g}, now {loss:.4g})"
            )
        return None
