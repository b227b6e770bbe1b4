"""Rules that look at weights, gradients and activations: VanishingGradient, ExplodingTensor,
PoorWeightInitialization.

Parameters and defaults follow the SageMaker Debugger built-in rule documentation
("List of Debugger built-in rules"). Where our trainer does not save what a rule was designed
for, the rule says so in its result notes (see PoorWeightInitialization).
"""

from __future__ import annotations

import math

import numpy as np

from .base import LocalRule


class VanishingGradient(LocalRule):
    """Fires when the mean of the absolute values of a gradient tensor drops below ``threshold``."""

    DEFAULTS = {"threshold": 0.0000001}

    def check(self, step: int) -> str | None:
        grads = self.tensors(collections=["gradients"])
        if not grads:
            self.note("no tensors in the 'gradients' collection were saved; nothing to check")
            return None
        small = []
        for name in grads:
            mean_abs = self.reduction_at(name, step, "mean", abs=True)
            if mean_abs is not None and math.isfinite(mean_abs) and mean_abs < self.params["threshold"]:
                small.append((name, mean_abs))
        if not small:
            return None
        worst = min(small, key=lambda item: item[1])
        return (
            f"{len(small)} gradient tensor(s) have mean |g| below {self.params['threshold']:g}, "
            f"smallest {worst[0]} = {worst[1]:.3g}"
        )


class ExplodingTensor(LocalRule):
    """Fires when a tensor holds NaN, or (unless ``only_nan``) an infinite value.

    With neither ``collection_names`` nor ``tensor_regex`` every saved tensor is checked.
    """

    DEFAULTS = {"collection_names": None, "tensor_regex": None, "only_nan": False}

    def check(self, step: int) -> str | None:
        names = self.tensors(self.params["collection_names"], self.params["tensor_regex"])
        if not self.params["collection_names"] and not self.params["tensor_regex"]:
            names = self.base_trial.tensor_names()
        bad = []
        for name in names:
            # max(|x|) is inf for an infinite value and NaN for a NaN one (numpy propagates NaN),
            # and it is available whether the hook saved full tensors or only reductions.
            peak = self.reduction_at(name, step, "max", abs=True)
            if peak is None:
                continue
            if math.isnan(peak) or (not self.params["only_nan"] and math.isinf(peak)):
                bad.append(name)
        if not bad:
            return None
        what = "NaN" if self.params["only_nan"] else "NaN or infinite values"
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        return f"{len(bad)} tensor(s) hold {what}: {shown}"


class PoorWeightInitialization(LocalRule):
    """Looks at the first ``steps`` steps for signs of a bad initialisation.

    SageMaker's rule checks three things; so does this one:

    1. activation inputs (``activation_inputs_regex``, default ``.*relu_input``): fires when the
       ratio between the largest and smallest per-layer variance exceeds ``threshold``;
    2. gradients: fires when the smallest spread between the 5th and 95th percentile of a
       layer's gradient is below ``distribution_range`` (needs full gradient tensors);
    3. loss: fires when the training loss has not improved for ``patience`` steps within the
       first ``steps`` steps.

    Deviation: our trainer's hook saves weights, biases, gradients and losses, not ReLU inputs
    (a ResNet reuses one in-place ReLU module per block, so its inputs cannot be told apart by
    layer). When no tensor matches ``activation_inputs_regex`` check 1 is skipped and the result
    notes it; weight variances are not used instead because per-layer weight variance of a well
    initialised network legitimately differs by far more than 10x (Kaiming init scales it by
    1/fan). Checks 2 and 3 run as documented.
    """

    DEFAULTS = {
        "activation_inputs_regex": [".*relu_input"],
        "threshold": 10.0,
        "distribution_range": 0.001,
        "patience": 5,
        "steps": 10,
    }

    def __init__(self, base_trial, **parameters):
        super().__init__(base_trial, **parameters)
        self._best_loss: float | None = None
        self._since_best = 0
        self._train_steps_seen = 0

    def check(self, step: int) -> str | None:
        mode, mode_step = self.base_trial.mode_modestep(step)
        if mode is not None and mode.name not in ("TRAIN", "GLOBAL"):
            return None
        if self._train_steps_seen >= self.params["steps"]:
            return None
        self._train_steps_seen += 1
        for message in (self._activation_variance(step), self._gradient_spread(step), self._loss_stall(step)):
            if message:
                return message
        return None

    def _activation_variance(self, step: int) -> str | None:
        names = self.tensors(regex=self.params["activation_inputs_regex"])
        if not names:
            self.note(
                "activation-variance check skipped: no tensors match "
                f"{self.params['activation_inputs_regex']} (the trainer does not save ReLU inputs)"
            )
            return None
        variances = {n: self.reduction_at(n, step, "variance") for n in names}
        variances = {n: v for n, v in variances.items() if v is not None and math.isfinite(v)}
        if len(variances) < 2:
            return None
        low, high = min(variances.values()), max(variances.values())
        ratio = high / max(low, 1e-30)
        if ratio > self.params["threshold"]:
            return (
                f"activation input variance differs {ratio:.1f}x across layers "
                f"(> {self.params['threshold']:g}): min {low:.3g}, max {high:.3g}"
            )
        return None

    def _gradient_spread(self, step: int) -> str | None:
        spreads = {}
        for name in self.tensors(collections=["gradients"]):
            value = self.value_at(name, step)
            if value is None or value.size < 2 or not np.all(np.isfinite(value)):
                continue
            p5, p95 = np.percentile(value, [5, 95])
            spreads[name] = float(p95 - p5)
        if not spreads:
            self.note("gradient-spread check skipped: no full gradient tensors saved at the first steps")
            return None
        name, spread = min(spreads.items(), key=lambda item: item[1])
        if spread < self.params["distribution_range"]:
            return (
                f"gradient distribution of {name} is too narrow: 95th-5th percentile = {spread:.3g} "
                f"(< {self.params['distribution_range']:g})"
            )
        return None

    def _loss_stall(self, step: int) -> str | None:
        losses = [self.value_at(n, step) for n in self.tensors(collections=["losses"])]
        losses = [float(np.mean(v)) for v in losses if v is not None]
        if not losses:
            return None
        loss = float(np.mean(losses))
        if self._best_loss is None or loss < self._best_loss:
            self._best_loss, self._since_best = loss, 0
            return None
        self._since_best += 1
        if self._since_best >= self.params["patience"]:
            return (
                f"training loss has not improved for {self._since_best} steps within the first "
                f"{self.params['steps']} steps (best {self._best_loss:.4g}, now {loss:.4g})"
            )
        return None
