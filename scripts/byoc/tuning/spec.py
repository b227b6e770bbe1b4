"""The tuning spec: one YAML file that both the local Optuna tuner and SageMaker read.

Example (``tuning/tuning.yaml`` is the project's own)::

    objective:
      metric: validation:accuracy      # a name from container_train.contract.METRIC_DEFINITIONS
      direction: Maximize              # or Minimize
    strategy: Grid                     # Bayesian | Random | Grid | Hyperband
    max_jobs: 8                        # Grid: the number of combinations (may be left out)
    max_parallel_jobs: 2
    early_stopping: Off                # Off | Auto (Hyperband stops jobs itself: must be Off)
    random_seed: 42                    # optional: sampler seed / SageMaker RandomSeed
    hyperband:                         # optional, only with strategy Hyperband
      min_resource: 1                  # epochs
      max_resource: 10
    parameters:
      lr:         {type: continuous, min: 0.0001, max: 0.1, scaling: log}
      epochs:     {type: integer, min: 2, max: 6}            # scaling: linear (default) | log | auto
      batch-size: {type: categorical, values: [32, 64]}
    static:                            # fixed hyperparameters for every trial
      arch: resnet50

Names of hyperparameters come from ``container_train.hyperparameters`` and every value is checked
with the trainer's own converter, so a spec that would make every training job fail is rejected
before anything starts. The objective's regex is never written here: it is looked up in
``container_train.contract`` (see :attr:`Objective.regex`).

:func:`load_spec` reads and validates a file; every problem found is reported at once in a
:class:`SpecError` whose lines name the key (``parameters.lr.min: ...``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from container_train import contract
from container_train.hyperparameters import HYPERPARAMETERS, HyperparameterError, to_sagemaker_strings

STRATEGIES = ("Bayesian", "Random", "Grid", "Hyperband")
DIRECTIONS = ("Maximize", "Minimize")
EARLY_STOPPING = ("Off", "Auto")
KINDS = ("continuous", "integer", "categorical")
# Spec spelling -> SageMaker ScalingType.
SCALINGS = {"linear": "Linear", "log": "Logarithmic", "auto": "Auto"}
MAX_CATEGORICAL_VALUES = 30          # SageMaker's limit per categorical range

_TOP_KEYS = ("objective", "strategy", "max_jobs", "max_parallel_jobs", "early_stopping", "random_seed",
             "hyperband", "parameters", "static")
_OBJECTIVE_KEYS = ("metric", "direction")
_HYPERBAND_KEYS = ("min_resource", "max_resource")
_RANGE_KEYS = {"continuous": ("type", "min", "max", "scaling"),
               "integer": ("type", "min", "max", "scaling"),
               "categorical": ("type", "values")}


class SpecError(ValueError):
    """The tuning spec is invalid; the message lists every problem, one per line."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid tuning spec {source}:\n{lines}")


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str                    # "Maximize" | "Minimize"

    @property
    def regex(self) -> str:
        """The regex SageMaker uses for this metric (from the trainer's contract, not a copy)."""
        return contract.METRIC_REGEX[self.metric]

    @property
    def maximize(self) -> bool:
        return self.direction == "Maximize"


@dataclass(frozen=True)
class ParameterRange:
    name: str
    kind: str                                 # continuous | integer | categorical
    min_value: float | int | None = None
    max_value: float | int | None = None
    scaling: str = "Linear"                   # SageMaker ScalingType: Linear | Logarithmic | Auto
    values: tuple = ()                        # categorical only

    @property
    def log(self) -> bool:
        return self.scaling == "Logarithmic"


@dataclass(frozen=True)
class Hyperband:
    min_resource: int
    max_resource: int


@dataclass(frozen=True)
class TuningSpec:
    objective: Objective
    strategy: str
    max_jobs: int
    max_parallel_jobs: int
    early_stopping: str
    parameters: tuple[ParameterRange, ...]
    static: dict[str, Any] = field(default_factory=dict)
    random_seed: int | None = None
    hyperband: Hyperband | None = None
    source: str = "<spec>"

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    def grid(self) -> dict[str, list]:
        """Categorical values per parameter (the search space of the Grid strategy)."""
        return {p.name: list(p.values) for p in self.parameters if p.kind == "categorical"}

    def grid_size(self) -> int:
        return math.prod(len(p.values) for p in self.parameters if p.kind == "categorical")

    def static_strings(self) -> dict[str, str]:
        """Static hyperparameters as SageMaker stores them (strings, booleans lower-case)."""
        return to_sagemaker_strings(self.static)

    def with_overrides(self, *, max_jobs: int | None = None, max_parallel_jobs: int | None = None,
                       strategy: str | None = None, static: Mapping[str, Any] | None = None) -> TuningSpec:
        """A copy with command-line overrides applied, validated again like a file."""
        raw = to_dict(self)
        if max_jobs is not None:
            raw["max_jobs"] = max_jobs
        if max_parallel_jobs is not None:
            raw["max_parallel_jobs"] = max_parallel_jobs
        if strategy is not None:
            raw["strategy"] = strategy
            if strategy.capitalize() == "Grid" and max_jobs is None:
                raw.pop("max_jobs", None)
        if static:
            raw["static"] = {**raw.get("static", {}), **dict(static)}
        return parse_spec(raw, source=f"{self.source} (with overrides)")


def load_spec(path: str | Path) -> TuningSpec:
    """Read and validate a tuning spec YAML file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(str(path), [f"cannot read the file: {e.strerror or e}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(str(path), [f"not valid YAML: {e}"]) from None
    return parse_spec(raw, source=str(path))


def to_dict(spec: TuningSpec) -> dict[str, Any]:
    """The spec as plain data in the YAML layout (``parse_spec(to_dict(s)) == s``)."""
    params: dict[str, Any] = {}
    for p in spec.parameters:
        if p.kind == "categorical":
            params[p.name] = {"type": p.kind, "values": list(p.values)}
        else:
            scaling = {v: k for k, v in SCALINGS.items()}[p.scaling]
            params[p.name] = {"type": p.kind, "min": p.min_value, "max": p.max_value, "scaling": scaling}
    raw: dict[str, Any] = {
        "objective": {"metric": spec.objective.metric, "direction": spec.objective.direction},
        "strategy": spec.strategy,
        "max_jobs": spec.max_jobs,
        "max_parallel_jobs": spec.max_parallel_jobs,
        "early_stopping": spec.early_stopping,
        "parameters": params,
        "static": dict(spec.static),
    }
    if spec.random_seed is not None:
        raw["random_seed"] = spec.random_seed
    if spec.hyperband is not None:
        raw["hyperband"] = {"min_resource": spec.hyperband.min_resource,
                            "max_resource": spec.hyperband.max_resource}
    return raw


# ---- validation -----------------------------------------------------------------------------------

class _Problems(list):
    def add(self, where: str, message: str) -> None:
        self.append(f"{where}: {message}" if where else message)


def _unknown_keys(problems: _Problems, where: str, data: Mapping, allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            path = f"{where}.{key}" if where else str(key)
            problems.add(path, f"unknown key {key!r}; allowed keys: {', '.join(allowed)}")


def _choice(problems: _Problems, where: str, value: Any, choices: tuple[str, ...]) -> str | None:
    # YAML 1.1 reads a bare Off as False; accept it for early_stopping.
    if value is False and "Off" in choices:
        return "Off"
    if isinstance(value, str):
        for c in choices:
            if value.strip().lower() == c.lower():
                return c
    problems.add(where, f"must be one of {', '.join(choices)}, got {value!r}")
    return None


def _int(problems: _Problems, where: str, value: Any, minimum: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(where, f"must be an integer, got {value!r}")
        return None
    if value < minimum:
        problems.add(where, f"must be >= {minimum}, got {value}")
        return None
    return value


def _number(problems: _Problems, where: str, value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        problems.add(where, f"must be a finite number, got {value!r}")
        return None
    return value


def _check_value(problems: _Problems, where: str, name: str, value: Any) -> None:
    """Run the trainer's own converter on ``value`` exactly as the job would receive it."""
    text = to_sagemaker_strings({name: value})[name]
    try:
        HYPERPARAMETERS[name].convert(text)
    except HyperparameterError as e:
        problems.add(where, str(e))


def _known_name(problems: _Problems, where: str, name: Any) -> bool:
    if name not in HYPERPARAMETERS:
        problems.add(where, f"unknown hyperparameter {name!r}; the trainer knows: "
                            f"{', '.join(sorted(HYPERPARAMETERS))}")
        return False
    return True


def _parse_range(problems: _Problems, name: str, raw: Any) -> ParameterRange | None:
    where = f"parameters.{name}"
    if not _known_name(problems, where, name):
        return None
    if not isinstance(raw, Mapping):
        problems.add(where, "must be a mapping with a 'type' (continuous, integer or categorical)")
        return None
    kind = raw.get("type")
    if kind not in KINDS:
        problems.add(f"{where}.type", f"must be one of {', '.join(KINDS)}, got {kind!r}")
        return None
    _unknown_keys(problems, where, raw, _RANGE_KEYS[kind])
    hp = HYPERPARAMETERS[name]

    if kind == "categorical":
        values = raw.get("values")
        if not isinstance(values, list) or not values:
            problems.add(f"{where}.values", "must be a non-empty list")
            return None
        if len(values) > MAX_CATEGORICAL_VALUES:
            problems.add(f"{where}.values", f"has {len(values)} values; SageMaker allows at most "
                                            f"{MAX_CATEGORICAL_VALUES}")
        for i, v in enumerate(values):
            if not isinstance(v, str | int | float | bool):
                problems.add(f"{where}.values[{i}]", f"must be a string, number or boolean, got {v!r}")
            else:
                _check_value(problems, f"{where}.values[{i}]", name, v)
        strings = to_sagemaker_strings({str(i): v for i, v in enumerate(values)}).values()
        if len(set(strings)) != len(values):
            problems.add(f"{where}.values", f"has duplicates: {values}")
        return ParameterRange(name, kind, values=tuple(values))

    expected = int if kind == "integer" else float
    if hp.type is not expected:
        if hp.type is int:
            hint = "it takes an integer: use type: integer or categorical"
        elif hp.type is float:
            hint = "it takes a number: use type: continuous or categorical"
        else:
            hint = "it is not numeric: use type: categorical"
        article = "an" if kind[0] in "aeiou" else "a"
        problems.add(f"{where}.type", f"{name} cannot have {article} {kind} range; {hint}")
        return None
    bounds = []
    for key in ("min", "max"):
        if key not in raw:
            problems.add(where, f"missing '{key}'")
            bounds.append(None)
        elif kind == "integer":
            bounds.append(_int(problems, f"{where}.{key}", raw[key], minimum=-(2**31)))
        else:
            bounds.append(_number(problems, f"{where}.{key}", raw[key]))
    scaling_raw = raw.get("scaling", "linear")
    scaling = SCALINGS.get(str(scaling_raw).lower()) if isinstance(scaling_raw, str) else None
    if scaling is None:
        problems.add(f"{where}.scaling", f"must be one of {', '.join(SCALINGS)}, got {scaling_raw!r}")
    lo, hi = bounds
    if lo is None or hi is None or scaling is None:
        return None
    if not lo < hi:
        problems.add(where, f"min ({lo}) must be smaller than max ({hi})")
        return None
    if scaling == "Logarithmic" and lo <= 0:
        problems.add(f"{where}.scaling", f"log scaling needs min > 0, got min={lo}")
        return None
    _check_value(problems, f"{where}.min", name, lo)
    _check_value(problems, f"{where}.max", name, hi)
    if kind == "continuous":
        lo, hi = float(lo), float(hi)
    return ParameterRange(name, kind, min_value=lo, max_value=hi, scaling=scaling)


def parse_spec(raw: Any, source: str = "<spec>") -> TuningSpec:
    """Validate plain data (as read from YAML) into a :class:`TuningSpec`."""
    problems = _Problems()
    if not isinstance(raw, Mapping):
        raise SpecError(source, ["the file must be a YAML mapping (objective:, strategy:, parameters: ...)"])
    _unknown_keys(problems, "", raw, _TOP_KEYS)

    # objective
    objective = None
    obj_raw = raw.get("objective")
    if not isinstance(obj_raw, Mapping):
        problems.add("objective", "required: a mapping with 'metric' and 'direction'")
    else:
        _unknown_keys(problems, "objective", obj_raw, _OBJECTIVE_KEYS)
        metric = obj_raw.get("metric", contract.DEFAULT_OBJECTIVE)
        direction = _choice(problems, "objective.direction", obj_raw.get("direction"), DIRECTIONS)
        if metric not in contract.METRIC_REGEX:
            problems.add("objective.metric", f"unknown metric {metric!r}; the trainer emits: "
                                             f"{', '.join(contract.METRIC_REGEX)}")
        elif direction is not None:
            if metric.endswith(":loss") and direction == "Maximize":
                problems.add("objective.direction", f"{metric} is a loss: use Minimize")
            elif metric.endswith(":accuracy") and direction == "Minimize":
                problems.add("objective.direction", f"{metric} is an accuracy: use Maximize")
            else:
                objective = Objective(metric, direction)

    strategy = _choice(problems, "strategy", raw.get("strategy", "Bayesian"), STRATEGIES)
    early_stopping = _choice(problems, "early_stopping", raw.get("early_stopping", "Off"), EARLY_STOPPING)
    max_parallel = _int(problems, "max_parallel_jobs", raw.get("max_parallel_jobs", 1), minimum=1)
    random_seed = None
    if raw.get("random_seed") is not None:
        random_seed = _int(problems, "random_seed", raw["random_seed"], minimum=0)

    # parameters
    params: list[ParameterRange] = []
    params_raw = raw.get("parameters")
    if not isinstance(params_raw, Mapping) or not params_raw:
        problems.add("parameters", "required: a mapping of hyperparameter name -> range")
        params_raw = {}
    else:
        for name, prange in params_raw.items():
            parsed = _parse_range(problems, str(name), prange)
            if parsed is not None:
                params.append(parsed)
    all_ranges_valid = len(params) == len(params_raw)

    # static hyperparameters
    static_raw = raw.get("static") or {}
    static: dict[str, Any] = {}
    if not isinstance(static_raw, Mapping):
        problems.add("static", "must be a mapping of hyperparameter name -> value")
    else:
        for name, value in static_raw.items():
            where = f"static.{name}"
            if not _known_name(problems, where, name):
                continue
            if name in params_raw:
                problems.add(where, f"{name} is also a tuned parameter; keep it in one place")
                continue
            if not isinstance(value, str | int | float | bool):
                problems.add(where, f"must be a string, number or boolean, got {value!r}")
                continue
            _check_value(problems, where, name, value)
            static[name] = value

    # strategy-specific rules (SageMaker's, so a spec that works locally also works there)
    max_jobs = None
    if strategy == "Grid":
        not_categorical = [p.name for p in params if p.kind != "categorical"]
        if not_categorical:
            problems.add("strategy", f"Grid supports only categorical parameters; not categorical: "
                                     f"{', '.join(not_categorical)}")
        size = math.prod(len(p.values) for p in params if p.kind == "categorical")
        if raw.get("max_jobs") is None:
            max_jobs = size
        else:
            max_jobs = _int(problems, "max_jobs", raw["max_jobs"], minimum=1)
            if max_jobs is not None and all_ranges_valid and not not_categorical and max_jobs != size:
                problems.add("max_jobs", f"with Grid it must equal the number of combinations ({size}), "
                                         f"got {max_jobs}; leave it out to use {size}")
    elif "max_jobs" not in raw:
        problems.add("max_jobs", f"required with strategy {strategy}")
    else:
        max_jobs = _int(problems, "max_jobs", raw["max_jobs"], minimum=1)

    hyperband = None
    hb_raw = raw.get("hyperband")
    if hb_raw is not None:
        if strategy != "Hyperband":
            problems.add("hyperband", f"only allowed with strategy Hyperband (strategy is {strategy})")
        elif not isinstance(hb_raw, Mapping):
            problems.add("hyperband", "must be a mapping with min_resource and max_resource")
        else:
            _unknown_keys(problems, "hyperband", hb_raw, _HYPERBAND_KEYS)
            lo = _int(problems, "hyperband.min_resource", hb_raw.get("min_resource", 1), minimum=1)
            hi = _int(problems, "hyperband.max_resource", hb_raw.get("max_resource"), minimum=1)
            if lo is not None and hi is not None:
                if lo >= hi:
                    problems.add("hyperband", f"min_resource ({lo}) must be smaller than max_resource ({hi})")
                else:
                    hyperband = Hyperband(lo, hi)
    if strategy == "Hyperband" and early_stopping == "Auto":
        problems.add("early_stopping", "must be Off with Hyperband (Hyperband stops poor jobs itself)")

    if problems:
        raise SpecError(source, list(problems))
    return TuningSpec(objective=objective, strategy=strategy, max_jobs=max_jobs,
                      max_parallel_jobs=max_parallel, early_stopping=early_stopping,
                      parameters=tuple(params), static=static, random_seed=random_seed,
                      hyperband=hyperband, source=source)


def grid_points(spec: TuningSpec) -> list[dict[str, Any]]:
    """Every combination of the categorical values, in a stable order."""
    grid = spec.grid()
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]


def trial_hyperparameters(spec: TuningSpec, tuned: Mapping[str, Any]) -> dict[str, Any]:
    """Static hyperparameters plus one trial's tuned values (tuned wins; both are validated)."""
    return {**spec.static, **dict(tuned)}


__all__ = ["SpecError", "TuningSpec", "Objective", "ParameterRange", "Hyperband", "load_spec",
           "parse_spec", "to_dict", "grid_points", "trial_hyperparameters"]
