"""The built-in rules by name, and how a caller names the rules it wants.

A rule selection is any of:

* ``None`` -> every built-in rule with SageMaker's default parameters;
* a list of names -> those rules with defaults: ``["ExplodingTensor", "LossNotDecreasing"]``;
* a mapping name -> parameters: ``{"LossNotDecreasing": {"num_steps": 5, "mode": "TRAIN"}}``.

Names are SageMaker's ``rule_to_invoke`` names (``rule_configs.loss_not_decreasing()`` ->
``LossNotDecreasing``); snake_case names are accepted too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .base import LocalRule
from .loss_rules import LossNotDecreasing, Overfit, Overtraining
from .tensor_rules import ExplodingTensor, PoorWeightInitialization, VanishingGradient

RULES: dict[str, type[LocalRule]] = {
    cls.__name__: cls
    for cls in (VanishingGradient, ExplodingTensor, LossNotDecreasing, Overfit, Overtraining,
                PoorWeightInitialization)
}

RULE_NAMES: tuple[str, ...] = tuple(RULES)

RuleSelection = Mapping[str, Mapping[str, Any]] | Iterable[str] | None


def _canonical(name: str) -> str:
    if name in RULES:
        return name
    squashed = name.replace("_", "").lower()
    for known in RULES:
        if known.lower() == squashed:
            return known
    raise KeyError(f"unknown rule {name!r}; built-in rules: {', '.join(RULES)}")


def normalize_selection(rules: RuleSelection) -> dict[str, dict[str, Any]]:
    """Any accepted selection -> ``{RuleName: parameters}`` (in the order given)."""
    if rules is None:
        return {name: {} for name in RULES}
    if isinstance(rules, str):
        rules = [rules]
    if isinstance(rules, Mapping):
        return {_canonical(name): dict(params or {}) for name, params in rules.items()}
    return {_canonical(name): {} for name in rules}


def make_rule(name: str, trial, parameters: Mapping[str, Any] | None = None) -> LocalRule:
    return RULES[_canonical(name)](trial, **dict(parameters or {}))


def check_rule_parameters(name: str, parameters: Mapping[str, Any]) -> None:
    """Raise :class:`~byoc.rules.base.RuleParameterError` for a parameter name or value SageMaker's
    rule would reject (the same parsing the local rule applies)."""
    RULES[_canonical(name)]._parse(dict(parameters))
