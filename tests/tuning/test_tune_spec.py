"""Tuning spec validation: good specs parse, each kind of mistake gives a message naming the key."""

from __future__ import annotations

import copy

import pytest

from byoc.errors import ByocError
from byoc.tuning.spec import SpecError, grid_points, load_spec, parse_spec, to_dict
from byoc.tuning.specs import DEFAULT_SPEC, DEMO_SPEC, builtin_names
from container_train import contract

GOOD = {
    "objective": {"metric": "validation:accuracy", "direction": "Maximize"},
    "strategy": "Bayesian",
    "max_jobs": 6,
    "max_parallel_jobs": 2,
    "early_stopping": "Auto",
    "parameters": {
        "lr": {"type": "continuous", "min": 0.0001, "max": 0.1, "scaling": "log"},
        "epochs": {"type": "integer", "min": 1, "max": 4},
        "batch-size": {"type": "categorical", "values": [16, 32]},
    },
    "static": {"arch": "resnet18", "pretrained": False},
}


def with_changes(**changes):
    raw = copy.deepcopy(GOOD)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = raw
        for key in path:
            node = node[key]
        if value is DELETE:
            node.pop(last)
        else:
            node[last] = value
    return raw


DELETE = object()


def problems_of(raw) -> list[str]:
    assert issubclass(SpecError, ByocError)
    with pytest.raises(SpecError) as info:
        parse_spec(raw, source="t.yaml")
    assert str(info.value).startswith("invalid tuning spec t.yaml:")
    return info.value.problems


def test_good_spec_parses_and_round_trips():
    spec = parse_spec(GOOD)
    assert spec.strategy == "Bayesian" and spec.early_stopping == "Auto"
    lr = spec.parameters[0]
    assert (lr.kind, lr.min_value, lr.max_value, lr.scaling) == ("continuous", 0.0001, 0.1, "Logarithmic")
    assert spec.parameters[1].scaling == "Linear"
    assert spec.objective.regex == contract.METRIC_REGEX["validation:accuracy"]
    assert spec.static == {"arch": "resnet18", "pretrained": False}           # typed, validated once
    assert parse_spec(to_dict(spec)) == parse_spec(GOOD)


def test_builtin_specs_are_valid_and_found_by_name():
    default = load_spec(DEFAULT_SPEC)
    assert default.strategy == "Grid" and default.max_jobs == 8
    assert default.parameter_names == ("lr", "batch-size", "epochs")
    assert all(len(p.values) == 2 for p in default.parameters)
    assert len(grid_points(default)) == 8
    demo = load_spec(DEMO_SPEC)
    assert demo.max_jobs == 4 and demo.early_stopping == "Auto"
    assert builtin_names() == ["local-demo", "tuning"]
    for name in ("tuning", "tuning.yaml"):
        assert load_spec(name) == default
    assert load_spec("local-demo") == demo


def test_builtin_specs_are_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_spec("tuning").source == str(DEFAULT_SPEC)
    # A file in the current directory wins over the built-in spec of the same name.
    (tmp_path / "tuning.yaml").write_text("objective: {metric: validation:loss, direction: Minimize}\n"
                                          "strategy: Random\nmax_jobs: 1\n"
                                          "parameters: {lr: {type: continuous, min: 0.01, max: 0.1}}\n")
    assert load_spec("tuning.yaml").strategy == "Random"
    with pytest.raises(SpecError, match=r"no such file, and not the name of a built-in spec \(local-demo, tuning\)"):
        load_spec("tuning/local-demo.yaml")     # a path is never looked up by name


@pytest.mark.parametrize("changes, expected", [
    ({"colour": "blue"}, "colour: unknown key 'colour'; allowed keys: objective"),
    ({"objective__metric": "val_acc"}, "objective.metric: unknown metric 'val_acc'; the trainer emits: "
                                       "train:loss, validation:loss"),
    ({"objective__direction": "up"}, "objective.direction: must be one of Maximize, Minimize, got 'up'"),
    ({"objective__direction": "Minimize"}, "objective.direction: validation:accuracy is an accuracy: "
                                           "use Maximize"),
    ({"objective__regex": "x"}, "objective.regex: unknown key 'regex'"),
    ({"strategy": "Genetic"}, "strategy: must be one of Bayesian, Random, Grid, Hyperband, got 'Genetic'"),
    ({"max_jobs": 0}, "max_jobs: must be >= 1, got 0"),
    ({"max_jobs": DELETE}, "max_jobs: required with strategy Bayesian"),
    ({"max_parallel_jobs": "two"}, "max_parallel_jobs: must be an integer, got 'two'"),
    ({"early_stopping": "Sometimes"}, "early_stopping: must be one of Off, Auto"),
    ({"parameters__lr__min": 0.5}, "parameters.lr: min (0.5) must be smaller than max (0.1)"),
    ({"parameters__lr__min": 0.0}, "parameters.lr.scaling: log scaling needs min > 0, got min=0.0"),
    ({"parameters__lr__min": -1.0, "parameters__lr__scaling": "linear"},
     "parameters.lr.min: hyperparameter lr='-1.0' must be > 0"),
    ({"parameters__lr__scaling": "cubic"}, "parameters.lr.scaling: must be one of linear, log, auto"),
    ({"parameters__lr__step": 0.1}, "parameters.lr.step: unknown key 'step'; allowed keys: type, min, max"),
    ({"parameters__lr__max": "big"}, "parameters.lr.max: must be a finite number, got 'big'"),
    ({"parameters__lr__type": "float"}, "parameters.lr.type: must be one of continuous, integer, "
                                        "categorical, got 'float'"),
    ({"parameters__epochs__type": "continuous"}, "parameters.epochs.type: epochs cannot have a continuous "
                                                 "range; it takes an integer"),
    ({"parameters__epochs__min": 1.5}, "parameters.epochs.min: must be an integer, got 1.5"),
    ({"parameters__epochs__max": DELETE}, "parameters.epochs: missing 'max'"),
    ({"parameters__batch-size__values": []}, "parameters.batch-size.values: must be a non-empty list"),
    ({"parameters__batch-size__values": [16, 16]}, "parameters.batch-size.values: has duplicates"),
    ({"parameters__batch-size__values": [16, "big"]},
     "parameters.batch-size.values[1]: hyperparameter batch-size='big' is not an integer"),
    ({"parameters__learning-rate": {"type": "continuous", "min": 0.1, "max": 1.0}},
     "parameters.learning-rate: unknown hyperparameter 'learning-rate'; the trainer knows: "),
    ({"parameters__freeze": {"type": "integer", "min": 1, "max": 2}},
     "parameters.freeze.type: freeze cannot have an integer range; it is not numeric: use type: categorical"),
    ({"parameters__arch": {"type": "categorical", "values": ["resnet18", "vgg16"]}},
     "parameters.arch.values[1]: hyperparameter arch='vgg16' is not one of: resnet18"),
    ({"parameters": {}}, "parameters: required: a mapping of hyperparameter name -> range"),
    ({"static__lr": 0.1}, "static.lr: lr is also a tuned parameter; keep it in one place"),
    ({"static__arch": "resnet9"}, "static.arch: hyperparameter arch='resnet9' is not one of"),
    ({"static__typo": 1}, "static.typo: unknown hyperparameter 'typo'"),
    ({"hyperband": {"min_resource": 1, "max_resource": 3}},
     "hyperband: only allowed with strategy Hyperband (strategy is Bayesian)"),
])
def test_each_mistake_is_reported_by_key(changes, expected):
    problems = problems_of(with_changes(**changes))
    assert any(expected in p for p in problems), problems


def test_all_problems_are_reported_at_once():
    problems = problems_of(with_changes(strategy="Genetic", max_jobs=-1, static__typo=1))
    assert len(problems) == 3


def test_grid_rules():
    grid = with_changes(strategy="Grid", max_jobs=DELETE)
    assert any("Grid supports only categorical parameters; not categorical: lr, epochs" in p
               for p in problems_of(grid))
    only_categorical = with_changes(strategy="Grid", max_jobs=DELETE)
    only_categorical["parameters"] = {"lr": {"type": "categorical", "values": [0.1, 0.01, 0.001]},
                                      "batch-size": {"type": "categorical", "values": [16, 32]}}
    spec = parse_spec(only_categorical)
    assert spec.max_jobs == 6          # the number of combinations
    assert grid_points(spec)[0] == {"lr": 0.1, "batch-size": 16}
    only_categorical["max_jobs"] = 5
    assert any("with Grid it must equal the number of combinations (6), got 5" in p
               for p in problems_of(only_categorical))


def test_hyperband_rules():
    hb = with_changes(strategy="Hyperband", early_stopping="Auto")
    assert any("early_stopping: must be Off with Hyperband" in p for p in problems_of(hb))
    hb = with_changes(strategy="Hyperband", early_stopping="Off",
                      hyperband={"min_resource": 3, "max_resource": 3})
    assert any("min_resource (3) must be smaller than max_resource (3)" in p for p in problems_of(hb))
    hb["hyperband"] = {"min_resource": 1, "max_resource": 4}
    assert parse_spec(hb).hyperband.max_resource == 4


def test_yaml_off_and_file_errors(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("objective: {metric: validation:loss, direction: minimize}\nstrategy: random\n"
                    "max_jobs: 2\nearly_stopping: Off\nparameters:\n  lr: {type: continuous, min: 0.01, "
                    "max: 0.1}\n")
    spec = load_spec(path)            # YAML reads a bare Off as false; it still means Off
    assert (spec.early_stopping, spec.strategy, spec.objective.direction) == ("Off", "Random", "Minimize")
    path.write_text("objective: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)
    with pytest.raises(SpecError, match="missing.yaml:\n  - no such file, and not the name of a built-in spec"):
        load_spec(tmp_path / "missing.yaml")
    with pytest.raises(SpecError, match="cannot read the file"):
        load_spec(tmp_path)
    path.write_text("- a list\n")
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load_spec(path)


def test_overrides_are_validated():
    spec = parse_spec(GOOD)
    assert spec.with_overrides(max_jobs=2, max_parallel_jobs=1).max_jobs == 2
    with pytest.raises(SpecError, match="max_parallel_jobs: must be >= 1"):
        spec.with_overrides(max_parallel_jobs=0)
    assert spec.with_overrides(static={"image-size": 32}).static["image-size"] == 32
    with pytest.raises(SpecError, match="static.epochs: epochs is also a tuned parameter"):
        spec.with_overrides(static={"epochs": 1})
