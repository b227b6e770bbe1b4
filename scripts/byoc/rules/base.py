"""The base every local Debugger rule builds on: an ``smdebug.rules.Rule`` that remembers why it fired.

smdebug's ``Rule.invoke(step)`` waits for the step, calls ``invoke_at_step(step)`` and raises
``RuleEvaluationConditionMet`` when it returns True; ``invoke_rule`` drives that over steps.
:class:`LocalRule` keeps that contract and adds what the open-source package leaves out:

* typed parameters with SageMaker's defaults, accepting the strings SageMaker passes in
  ``RuleParameters`` (``"0.0000001"``, ``"True"``, ``"losses,weights"``),
* a record of every firing (step, mode, message) so the result can be written as JSON.

Subclasses set ``DEFAULTS`` and implement ``check(step) -> str | None`` (a message when the
condition holds at that global step).
"""

from __future__ import annotations

import re
from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
from smdebug.core.modes import ModeKeys
from smdebug.exceptions import TensorUnavailableForStep
from smdebug.rules.rule import Rule

from byoc.errors import ByocError
from byoc_common.booleans import parse_bool

from .results import MAX_FINDINGS_KEPT, Finding

MODE_NAMES = {m.name: m for m in ModeKeys}


class RuleParameterError(ByocError, ValueError):
    """A rule got a parameter it does not know, or a value it cannot use."""


def _as_list(value: Any) -> list[str] | None:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def _as_mode(value: Any) -> ModeKeys | None:
    if value is None or value == "":
        return None
    if isinstance(value, ModeKeys):
        return value
    name = str(value).strip().upper().removeprefix("MODE.").removeprefix("MODEKEYS.")
    if name not in MODE_NAMES:
        raise ValueError(f"expected one of {', '.join(MODE_NAMES)}, got {value!r}")
    return MODE_NAMES[name]


# How each kind of default converts a user value (SageMaker passes every parameter as a string).
_CONVERTERS = {bool: parse_bool, int: lambda v: int(float(v)), float: float}


class LocalRule(Rule):
    """smdebug rule with SageMaker-style parameters and a record of its findings."""

    #: parameter name -> default (the type of the default decides how strings convert);
    #: a default of None means "list of strings" unless listed in MODE_PARAMS.
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    MODE_PARAMS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, base_trial, **parameters: Any):
        super().__init__(base_trial, action_str="")
        self.params = self._parse(parameters)
        self.findings: list[Finding] = []
        self.violations = 0
        self.steps_evaluated = 0
        self.notes: list[str] = []

    # ---- parameters ---------------------------------------------------------------------------
    @classmethod
    def _parse(cls, given: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(given) - set(cls.DEFAULTS))
        if unknown:
            raise RuleParameterError(
                f"{cls.__name__} has no parameter(s) {', '.join(unknown)}; "
                f"it takes: {', '.join(cls.DEFAULTS)}"
            )
        params = dict(cls.DEFAULTS)
        for name, value in given.items():
            default = cls.DEFAULTS[name]
            try:
                if name in cls.MODE_PARAMS:
                    params[name] = _as_mode(value)
                elif default is None or isinstance(default, list):
                    params[name] = _as_list(value)
                else:
                    params[name] = _CONVERTERS.get(type(default), lambda v: v)(value)
            except (TypeError, ValueError) as e:
                raise RuleParameterError(f"{cls.__name__} parameter {name}={value!r}: {e}") from None
        return params

    def parameters_for_report(self) -> dict[str, Any]:
        return {k: (v.name if isinstance(v, ModeKeys) else v) for k, v in self.params.items()}

    # ---- smdebug hook point -------------------------------------------------------------------
    def invoke_at_step(self, step: int) -> bool:
        self.steps_evaluated += 1
        message = self.check(step)
        if not message:
            return False
        self.violations += 1
        mode, mode_step = self.base_trial.mode_modestep(step)
        if len(self.findings) < MAX_FINDINGS_KEPT:
            self.findings.append(
                Finding(step=int(step), mode=mode.name if mode is not None else None,
                        mode_step=None if mode_step is None else int(mode_step), message=message)
            )
        self.logger.info(f"Rule {self.rule_name} fired at step {step}: {message}")
        return True

    @abstractmethod
    def check(self, step: int) -> str | None:
        """A message when the rule's condition holds at global ``step``, else None."""

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    # ---- tensor helpers -----------------------------------------------------------------------
    def tensors(self, collections: list[str] | None = None, regex: list[str] | None = None) -> list[str]:
        """Names of tensors in ``collections`` or matching ``regex`` (union), sorted."""
        trial = self.base_trial
        names: set[str] = set()
        known = set(trial.collections()) if collections else set()
        for coll in collections or []:
            if coll in known:
                names.update(trial.tensor_names(collection=coll))
        if regex:
            all_names = trial.tensor_names()
            patterns = [re.compile(r) for r in regex]
            names.update(n for n in all_names if any(p.search(n) for p in patterns))
        return sorted(names)

    def value_at(self, tname: str, step: int, mode: ModeKeys = ModeKeys.GLOBAL) -> np.ndarray | None:
        """The tensor's value at ``step`` or None when it was not saved there."""
        try:
            return np.asarray(self.base_trial.tensor(tname).value(step, mode=mode))
        except TensorUnavailableForStep:
            return None

    def reduction_at(self, tname: str, step: int, reduction: str, abs: bool = False) -> float | None:
        """A reduction (mean, max, variance, ...) at ``step``; works whether the hook saved the full
        tensor or only reductions. None when the tensor was not saved at that step."""
        try:
            return float(self.base_trial.tensor(tname).reduction_value(step, reduction, abs=abs))
        except TensorUnavailableForStep:
            return None
