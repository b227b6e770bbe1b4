"""The tuning spec: one YAML file that both the local Optuna tuner and SageMaker read.

Example (the built-in ``tuning.yaml``, :data:`byoc.tuning.specs.DEFAULT_SPEC`, is the project's own)::

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
    instance_count: 1                  # optional: hosts per training job (ResourceConfig.InstanceCount)
    # distribution: torch_distributed  # optional: how SageMaker launches a multi-host or multi-GPU job

Names of hyperparameters come from ``container_train.hyperparameters`` and every value is checked
with the trainer's own converter, so a spec that would make every training job fail is rejected
before anything starts. The objective's regex is never written here: it is looked up in
``container_train.contract`` (see :attr:`Objective.regex`).

:func:`load_spec` reads and validates a file, or a built-in spec by name (:mod:`byoc.tuning.specs`);
every problem found is reported at once in a :class:`SpecError` whose lines name the key
(``parameters.lr.min: ...``). The words and keys allowed are in :mod:`byoc.tuning.schema`, the
checks of each section in :mod:`byoc.tuning.validate`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from byoc.tuning import specs
from byoc.tuning import validate as v
from byoc.tuning.errors import SpecError
from byoc.tuning.schema import (
    DEFAULT_INSTANCE_COUNT,
    DISTRIBUTIONS,
    EARLY_STOPPING,
    HYPERBAND_EPOCH_KEYS,
    HYPERBAND_MAX_RESOURCE,
    SCALINGS,
    STRATEGIES,
    TOP_KEYS,
    Hyperband,
    Objective,
    ParameterRange,
)
from container_train.hyperparameters import Hyperparameters


@dataclass(frozen=True)
class TuningSpec:
    objective: Objective
    strategy: str
    max_jobs: int
    max_parallel_jobs: int
    early_stopping: str
    parameters: tuple[ParameterRange, ...]
    static: Hyperparameters = field(default_factory=lambda: Hyperparameters.parse({}))   # typed, validated
    random_seed: int | None = None
    hyperband: Hyperband | None = None
    instance_count: int = DEFAULT_INSTANCE_COUNT    # hosts per training job
    distribution: str | None = None                 # a key of schema.DISTRIBUTIONS, or the image decides
    source: str = "<spec>"

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    def grid(self) -> dict[str, list]:
        """Categorical values per parameter (the search space of the Grid strategy)."""
        return {p.name: list(p.values) for p in self.parameters if p.kind == "categorical"}

    def hyperband_resources(self) -> Hyperband:
        """Hyperband's min and max resource (epochs) as SageMaker settles them: the spec's
        ``hyperband`` block, else MaxResource inferred from a static epochs hyperparameter, the keys
        SageMaker reads (API reference, HyperbandStrategyConfig.MaxResource: "attempts to infer
        MaxResource from the following keys ... If HyperbandStrategyConfig is unable to infer a value
        for MaxResource, it generates a validation error. The maximum value is 20,000 epochs")."""
        if self.hyperband is not None:
            resources = self.hyperband
        else:
            inferred = next((self.static[k] for k in HYPERBAND_EPOCH_KEYS if k in self.static), None)
            if inferred is None:
                raise SpecError(self.source, ["strategy Hyperband needs a max resource: give hyperband.max_resource "
                                              f"or a static {HYPERBAND_EPOCH_KEYS[0]} (SageMaker infers it from "
                                              f"{', '.join(HYPERBAND_EPOCH_KEYS)})"])
            resources = Hyperband(1, int(inferred))
        if resources.max_resource > HYPERBAND_MAX_RESOURCE:
            raise SpecError(self.source, [f"Hyperband's max resource is at most {HYPERBAND_MAX_RESOURCE} epochs, "
                                          f"got {resources.max_resource}"])
        return resources

    def with_overrides(self, *, max_jobs: int | None = None, max_parallel_jobs: int | None = None,
                       strategy: str | None = None, static: Mapping[str, Any] | None = None,
                       instance_count: int | None = None, distribution: str | None = None) -> TuningSpec:
        """A copy with command-line overrides applied. Only the overrides are checked, by the rules
        and with the messages of a file (the rest was checked when the spec was parsed); a Grid
        strategy given without ``max_jobs`` runs every combination."""
        problems, changes = v.Problems(), {}
        if max_parallel_jobs is not None:
            changes["max_parallel_jobs"] = v.integer(problems, "max_parallel_jobs", max_parallel_jobs, minimum=1)
        if instance_count is not None:
            changes["instance_count"] = v.integer(problems, "instance_count", instance_count, minimum=1)
        if distribution is not None:
            changes["distribution"] = v.choice(problems, "distribution", distribution, tuple(DISTRIBUTIONS))
        if static:
            changes["static"] = self.static | v.parse_static(problems, static, self.parameter_names)
        new_strategy = self.strategy
        if strategy is not None:
            new_strategy = changes["strategy"] = v.choice(problems, "strategy", strategy, STRATEGIES)
            hyperband = None if self.hyperband is None else asdict(self.hyperband)
            v.parse_hyperband(problems, hyperband, new_strategy, self.early_stopping)
        if new_strategy is not None and (max_jobs is not None or strategy is not None):
            budget = {} if max_jobs is None and new_strategy == "Grid" else \
                {"max_jobs": self.max_jobs if max_jobs is None else max_jobs}
            changes["max_jobs"] = v.parse_max_jobs(problems, budget, new_strategy, list(self.parameters), True)
        if problems:
            raise SpecError(f"{self.source} (with overrides)", list(problems))
        return replace(self, **changes)


def resolve_spec(path_or_name: str | Path) -> Path:
    """A spec file: ``path_or_name`` when that file exists, else the built-in spec of that name."""
    path = Path(path_or_name)
    if path.exists():
        return path
    builtin = specs.builtin_spec(path.name) if path.name == str(path_or_name) else None
    if builtin is None:
        raise SpecError(str(path), [f"no such file, and not the name of a built-in spec "
                                    f"({', '.join(specs.builtin_names())})"])
    return builtin


def load_spec(path_or_name: str | Path) -> TuningSpec:
    """Read and validate a tuning spec: a YAML file, or a built-in spec by name (``tuning``,
    ``local-demo``, with or without ``.yaml``; see :mod:`byoc.tuning.specs`). A file that exists
    wins over the built-in spec of the same name."""
    path = resolve_spec(path_or_name)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(str(path), [f"cannot read the file: {e.strerror or e}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(str(path), [f"not valid YAML: {e}"]) from None
    return parse_spec(raw, source=str(path))


def parse_spec(raw: Any, source: str = "<spec>") -> TuningSpec:
    """Validate plain data (as read from YAML) into a :class:`TuningSpec`."""
    if not isinstance(raw, Mapping):
        raise SpecError(source, ["the file must be a YAML mapping (objective:, strategy:, parameters: ...)"])
    problems = v.Problems()
    v.unknown_keys(problems, "", raw, TOP_KEYS)
    objective = v.parse_objective(problems, raw.get("objective"))
    strategy = v.choice(problems, "strategy", raw.get("strategy", "Bayesian"), STRATEGIES)
    early_stopping = v.choice(problems, "early_stopping", raw.get("early_stopping", "Off"), EARLY_STOPPING)
    max_parallel = v.integer(problems, "max_parallel_jobs", raw.get("max_parallel_jobs", 1), minimum=1)
    random_seed = None
    if raw.get("random_seed") is not None:
        random_seed = v.integer(problems, "random_seed", raw["random_seed"], minimum=0)
    params, tuned_names = v.parse_parameters(problems, raw.get("parameters"))
    static = v.parse_static(problems, raw.get("static"), tuned_names)
    max_jobs = v.parse_max_jobs(problems, raw, strategy, params, len(params) == len(tuned_names))
    hyperband = v.parse_hyperband(problems, raw.get("hyperband"), strategy, early_stopping)
    instance_count = v.integer(problems, "instance_count", raw.get("instance_count", DEFAULT_INSTANCE_COUNT),
                               minimum=1)
    distribution = None
    if raw.get("distribution") is not None:
        distribution = v.choice(problems, "distribution", raw["distribution"], tuple(DISTRIBUTIONS))
    if problems:
        raise SpecError(source, list(problems))
    return TuningSpec(objective=objective, strategy=strategy, max_jobs=max_jobs,
                      max_parallel_jobs=max_parallel, early_stopping=early_stopping,
                      parameters=tuple(params), static=static, random_seed=random_seed,
                      hyperband=hyperband, instance_count=instance_count, distribution=distribution,
                      source=source)


def to_dict(spec: TuningSpec) -> dict[str, Any]:
    """The spec as plain data in the YAML layout (``parse_spec(to_dict(s)) == s``)."""
    spellings = {sagemaker: spelling for spelling, sagemaker in SCALINGS.items()}
    params: dict[str, Any] = {}
    for p in spec.parameters:
        if p.kind == "categorical":
            params[p.name] = {"type": p.kind, "values": list(p.values)}
        else:
            params[p.name] = {"type": p.kind, "min": p.min_value, "max": p.max_value,
                              "scaling": spellings[p.scaling]}
    raw: dict[str, Any] = {
        "objective": {"metric": spec.objective.metric, "direction": spec.objective.direction},
        "strategy": spec.strategy,
        "max_jobs": spec.max_jobs,
        "max_parallel_jobs": spec.max_parallel_jobs,
        "early_stopping": spec.early_stopping,
        "parameters": params,
        "static": dict(spec.static),                      # typed: YAML writes them as they are
    }
    if spec.random_seed is not None:
        raw["random_seed"] = spec.random_seed
    if spec.hyperband is not None:
        raw["hyperband"] = {"min_resource": spec.hyperband.min_resource,
                            "max_resource": spec.hyperband.max_resource}
    # Only when set: a study that was started before these keys existed still matches its spec.
    if spec.instance_count != DEFAULT_INSTANCE_COUNT:
        raw["instance_count"] = spec.instance_count
    if spec.distribution is not None:
        raw["distribution"] = spec.distribution
    return raw


def grid_points(spec: TuningSpec) -> list[dict[str, Any]]:
    """Every combination of the categorical values, in a stable order."""
    grid = spec.grid()
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]


def trial_hyperparameters(spec: TuningSpec, tuned: Mapping[str, Any]) -> Hyperparameters:
    """Static hyperparameters plus one trial's tuned values (tuned wins), typed."""
    return spec.static | tuned


__all__ = ["SpecError", "TuningSpec", "Objective", "ParameterRange", "Hyperband", "load_spec",
           "resolve_spec", "parse_spec", "to_dict", "grid_points", "trial_hyperparameters"]
