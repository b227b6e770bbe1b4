"""Checks of each section of a tuning spec, collecting every problem instead of stopping at the first.

Each ``parse_*`` function takes the plain data of one section (as read from YAML) and a
:class:`Problems` list; it returns the parsed value, or ``None`` when that section is invalid, and
adds one line per problem naming the key (``parameters.lr.min: ...``). :func:`byoc.tuning.spec.parse_spec`
runs them all and raises one :class:`~byoc.tuning.errors.SpecError` with the whole list.

The rules are SageMaker's, so a spec that works locally also works there; hyperparameter values
are checked with the trainer's own converters (``container_train.hyperparameters``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from byoc.tuning.schema import (
    DIRECTIONS,
    HYPERBAND_KEYS,
    KINDS,
    MAX_CATEGORICAL_VALUES,
    OBJECTIVE_KEYS,
    RANGE_KEYS,
    SCALINGS,
    Hyperband,
    Objective,
    ParameterRange,
)
from container_train import contract
from container_train.hyperparameters import (
    HYPERPARAMETERS,
    HyperparameterError,
    Hyperparameters,
    convert_value,
)


class Problems(list):
    def add(self, where: str, message: str) -> None:
        self.append(f"{where}: {message}" if where else message)


# ---- checks of single values ------------------------------------------------------------------------

def unknown_keys(problems: Problems, where: str, data: Mapping, allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            path = f"{where}.{key}" if where else str(key)
            problems.add(path, f"unknown key {key!r}; allowed keys: {', '.join(allowed)}")


def choice(problems: Problems, where: str, value: Any, choices: tuple[str, ...]) -> str | None:
    # YAML 1.1 reads a bare Off as False; accept it for early_stopping.
    if value is False and "Off" in choices:
        return "Off"
    if isinstance(value, str):
        for c in choices:
            if value.strip().lower() == c.lower():
                return c
    problems.add(where, f"must be one of {', '.join(choices)}, got {value!r}")
    return None


def integer(problems: Problems, where: str, value: Any, minimum: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(where, f"must be an integer, got {value!r}")
        return None
    if value < minimum:
        problems.add(where, f"must be >= {minimum}, got {value}")
        return None
    return value


def number(problems: Problems, where: str, value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        problems.add(where, f"must be a finite number, got {value!r}")
        return None
    return value


_INVALID = object()


def check_value(problems: Problems, where: str, name: str, value: Any) -> Any:
    """``value`` as the trainer reads it (its own converter, on the string the job would receive), or
    :data:`_INVALID` with the reason added to ``problems``."""
    try:
        return convert_value(name, value)
    except HyperparameterError as e:
        problems.add(where, str(e))
        return _INVALID


def known_name(problems: Problems, where: str, name: Any) -> bool:
    if name not in HYPERPARAMETERS:
        problems.add(where, f"unknown hyperparameter {name!r}; the trainer knows: "
                            f"{', '.join(sorted(HYPERPARAMETERS))}")
        return False
    return True


def _scalar(problems: Problems, where: str, value: Any) -> bool:
    if isinstance(value, str | int | float | bool):
        return True
    problems.add(where, f"must be a string, number or boolean, got {value!r}")
    return False


# ---- objective ----------------------------------------------------------------------------------------

def parse_objective(problems: Problems, raw: Any) -> Objective | None:
    if not isinstance(raw, Mapping):
        problems.add("objective", "required: a mapping with 'metric' and 'direction'")
        return None
    unknown_keys(problems, "objective", raw, OBJECTIVE_KEYS)
    metric = raw.get("metric", contract.DEFAULT_OBJECTIVE)
    direction = choice(problems, "objective.direction", raw.get("direction"), DIRECTIONS)
    if metric not in contract.METRIC_REGEX:
        problems.add("objective.metric", f"unknown metric {metric!r}; the trainer emits: "
                                         f"{', '.join(contract.METRIC_REGEX)}")
        return None
    if direction is None:
        return None
    if metric.endswith(":loss") and direction == "Maximize":
        problems.add("objective.direction", f"{metric} is a loss: use Minimize")
        return None
    if metric.endswith(":accuracy") and direction == "Minimize":
        problems.add("objective.direction", f"{metric} is an accuracy: use Maximize")
        return None
    return Objective(metric, direction)


# ---- parameters -----------------------------------------------------------------------------------------

def parse_parameters(problems: Problems, raw: Any) -> tuple[list[ParameterRange], tuple[str, ...]]:
    """The valid ranges, and the names of every tuned parameter given (valid or not)."""
    if not isinstance(raw, Mapping) or not raw:
        problems.add("parameters", "required: a mapping of hyperparameter name -> range")
        return [], ()
    ranges = [parse_range(problems, str(name), prange) for name, prange in raw.items()]
    return [r for r in ranges if r is not None], tuple(str(name) for name in raw)


def parse_range(problems: Problems, name: str, raw: Any) -> ParameterRange | None:
    where = f"parameters.{name}"
    if not known_name(problems, where, name):
        return None
    if not isinstance(raw, Mapping):
        problems.add(where, "must be a mapping with a 'type' (continuous, integer or categorical)")
        return None
    kind = raw.get("type")
    if kind not in KINDS:
        problems.add(f"{where}.type", f"must be one of {', '.join(KINDS)}, got {kind!r}")
        return None
    unknown_keys(problems, where, raw, RANGE_KEYS[kind])
    if kind == "categorical":
        return _categorical(problems, where, name, raw.get("values"))
    return _numeric(problems, where, name, kind, raw)


def _categorical(problems: Problems, where: str, name: str, values: Any) -> ParameterRange | None:
    if not isinstance(values, list) or not values:
        problems.add(f"{where}.values", "must be a non-empty list")
        return None
    if len(values) > MAX_CATEGORICAL_VALUES:
        problems.add(f"{where}.values", f"has {len(values)} values; SageMaker allows at most "
                                        f"{MAX_CATEGORICAL_VALUES}")
    typed = [check_value(problems, f"{where}.values[{i}]", name, v) if _scalar(problems, f"{where}.values[{i}]", v)
             else _INVALID for i, v in enumerate(values)]
    if any(t is _INVALID for t in typed):
        return None
    if len(set(typed)) != len(typed):       # the same value twice, however it was written (0.1 and "0.1")
        problems.add(f"{where}.values", f"has duplicates: {values}")
    return ParameterRange(name, "categorical", values=tuple(typed))


def _type_mismatch(name: str, kind: str) -> str | None:
    """Why hyperparameter ``name`` cannot have a ``kind`` range, or None when it can."""
    hp_type = HYPERPARAMETERS[name].type
    if hp_type is (int if kind == "integer" else float):
        return None
    if hp_type is int:
        hint = "it takes an integer: use type: integer or categorical"
    elif hp_type is float:
        hint = "it takes a number: use type: continuous or categorical"
    else:
        hint = "it is not numeric: use type: categorical"
    article = "an" if kind[0] in "aeiou" else "a"
    return f"{name} cannot have {article} {kind} range; {hint}"


def _bound(problems: Problems, where: str, kind: str, raw: Mapping, key: str) -> float | int | None:
    if key not in raw:
        problems.add(where, f"missing '{key}'")
        return None
    if kind == "integer":
        return integer(problems, f"{where}.{key}", raw[key], minimum=-(2**31))
    return number(problems, f"{where}.{key}", raw[key])


def _numeric(problems: Problems, where: str, name: str, kind: str, raw: Mapping) -> ParameterRange | None:
    mismatch = _type_mismatch(name, kind)
    if mismatch:
        problems.add(f"{where}.type", mismatch)
        return None
    lo, hi = (_bound(problems, where, kind, raw, key) for key in ("min", "max"))
    scaling_raw = raw.get("scaling", "linear")
    scaling = SCALINGS.get(scaling_raw.lower()) if isinstance(scaling_raw, str) else None
    if scaling is None:
        problems.add(f"{where}.scaling", f"must be one of {', '.join(SCALINGS)}, got {scaling_raw!r}")
    if lo is None or hi is None or scaling is None:
        return None
    if not lo < hi:
        problems.add(where, f"min ({lo}) must be smaller than max ({hi})")
        return None
    if scaling == "Logarithmic" and lo <= 0:
        problems.add(f"{where}.scaling", f"log scaling needs min > 0, got min={lo}")
        return None
    if _INVALID in [check_value(problems, f"{where}.{key}", name, bound) for key, bound in (("min", lo), ("max", hi))]:
        return None
    if kind == "continuous":
        lo, hi = float(lo), float(hi)
    return ParameterRange(name, kind, min_value=lo, max_value=hi, scaling=scaling)


# ---- static hyperparameters, budget, Hyperband ----------------------------------------------------------

def parse_static(problems: Problems, raw: Any, tuned: tuple[str, ...]) -> Hyperparameters:
    """Fixed hyperparameters of every trial, typed; none may also be tuned (``tuned``: their names)."""
    static = Hyperparameters.parse({})
    if raw and not isinstance(raw, Mapping):
        problems.add("static", "must be a mapping of hyperparameter name -> value")
        raw = None
    for name, value in (raw or {}).items():
        where = f"static.{name}"
        if not known_name(problems, where, name):
            continue
        if name in tuned:
            problems.add(where, f"{name} is also a tuned parameter; keep it in one place")
            continue
        if _scalar(problems, where, value):
            try:
                static = static | Hyperparameters.parse({name: value})
            except HyperparameterError as e:
                problems.add(where, str(e))
    return static


def parse_max_jobs(problems: Problems, raw: Mapping, strategy: str | None, params: list[ParameterRange],
                   ranges_complete: bool) -> int | None:
    """The trial budget. Grid runs every combination: ``max_jobs`` may be left out, and when given
    it must equal their number (checked only when every range parsed, so the count is right)."""
    if strategy != "Grid":
        if "max_jobs" not in raw:
            problems.add("max_jobs", f"required with strategy {strategy}")
            return None
        return integer(problems, "max_jobs", raw["max_jobs"], minimum=1)
    not_categorical = [p.name for p in params if p.kind != "categorical"]
    if not_categorical:
        problems.add("strategy", f"Grid supports only categorical parameters; not categorical: "
                                 f"{', '.join(not_categorical)}")
    size = math.prod(len(p.values) for p in params if p.kind == "categorical")
    if raw.get("max_jobs") is None:
        return size
    max_jobs = integer(problems, "max_jobs", raw["max_jobs"], minimum=1)
    if max_jobs is not None and ranges_complete and not not_categorical and max_jobs != size:
        problems.add("max_jobs", f"with Grid it must equal the number of combinations ({size}), "
                                 f"got {max_jobs}; leave it out to use {size}")
    return max_jobs


def parse_hyperband(problems: Problems, raw: Any, strategy: str | None, early_stopping: str | None
                    ) -> Hyperband | None:
    hyperband = None if raw is None else _hyperband_resources(problems, raw, strategy)
    if strategy == "Hyperband" and early_stopping == "Auto":
        problems.add("early_stopping", "must be Off with Hyperband (Hyperband stops poor jobs itself)")
    return hyperband


def _hyperband_resources(problems: Problems, raw: Any, strategy: str | None) -> Hyperband | None:
    if strategy != "Hyperband":
        problems.add("hyperband", f"only allowed with strategy Hyperband (strategy is {strategy})")
        return None
    if not isinstance(raw, Mapping):
        problems.add("hyperband", "must be a mapping with min_resource and max_resource")
        return None
    unknown_keys(problems, "hyperband", raw, HYPERBAND_KEYS)
    lo = integer(problems, "hyperband.min_resource", raw.get("min_resource", 1), minimum=1)
    hi = integer(problems, "hyperband.max_resource", raw.get("max_resource"), minimum=1)
    if lo is None or hi is None:
        return None
    if lo >= hi:
        problems.add("hyperband", f"min_resource ({lo}) must be smaller than max_resource ({hi})")
        return None
    return Hyperband(lo, hi)
