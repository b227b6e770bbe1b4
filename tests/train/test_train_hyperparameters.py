import copy
import pickle

import pytest

from container_train.hyperparameters import (
    DEFAULTS,
    HyperparameterError,
    Hyperparameters,
    Pending,
    parse_hyperparameters,
    to_dict,
    to_sagemaker_strings,
)


def test_defaults_when_nothing_is_passed():
    args = parse_hyperparameters([])
    assert to_dict(args) == DEFAULTS
    assert args.arch == "resnet50" and args.pretrained is True and args.batch_size == 32


def test_values_arrive_as_strings_the_way_the_toolkit_passes_them():
    args = parse_hyperparameters(["--lr", "0.003", "--batch-size", "8", "--pretrained", "False",
                                  "--amp", "true", "--freeze", "head", "--warmup-epochs", "0.5"])
    assert args.lr == pytest.approx(0.003)
    assert args.batch_size == 8
    assert args.pretrained is False and args.amp is True
    assert args.freeze == "head" and args.warmup_epochs == 0.5


@pytest.mark.parametrize("argv, message", [
    (["--learning-rate", "0.1"], "unknown hyperparameter(s): learning-rate"),
    (["--lr", "-1"], "lr='-1' must be > 0"),
    (["--lr", "nan"], "must be a finite number"),
    (["--batch-size", "abc"], "batch-size='abc' is not an integer"),
    (["--batch-size", "0"], "must be > 0"),
    (["--pretrained", "maybe"], "pretrained='maybe' is not true or false"),
    (["--arch", "vgg16"], "arch='vgg16' is not one of: resnet18"),
    (["--freeze", "all"], "freeze='all' is not one of: head, layer4, none"),
    (["--momentum", "1.5"], "momentum='1.5' must be in [0, 1)"),
    (["--epochs"], "expected one argument"),
    # The endpoint's bounds on model_config.json (byoc_common.artifact_files): a job never trains a
    # model the server would refuse to load.
    (["--image-size", "1025"], "image-size='1025' must be in [16, 1024]"),
    (["--resize-size", "4096"], "resize-size='4096' must be in [0, 2048]"),
])
def test_bad_hyperparameters_are_clear_errors(argv, message):
    with pytest.raises(HyperparameterError) as e:
        parse_hyperparameters(argv)
    assert message in str(e.value)


def test_sagemaker_tuning_hyperparameters_are_dropped_not_rejected():
    # A SageMaker tuning job adds _tuning_objective_metric to every training job it starts.
    args = parse_hyperparameters(["--_tuning_objective_metric", "valid_acc", "--lr", "0.02",
                                  "--_tuning_other=x", "--epochs", "3"])
    assert args.lr == pytest.approx(0.02) and args.epochs == 3
    with pytest.raises(HyperparameterError, match="unknown hyperparameter"):
        parse_hyperparameters(["--tuning_objective_metric", "valid_acc"])


@pytest.mark.parametrize("raw, expected", [("True", "true"), ("FALSE", "false"), (" auto ", "auto")])
def test_feature_cache_accepts_json_booleans_as_the_toolkit_renders_them(raw, expected):
    assert parse_hyperparameters(["--feature-cache", raw]).feature_cache == expected


def test_operator_side_values_are_validated_once_and_typed():
    # What a flag, a spec or a file gives (strings or YAML scalars) becomes the trainer's typed values.
    hps = Hyperparameters.parse({"lr": "0.01", "pretrained": "False", "epochs": 3, "feature-cache": "True"})
    assert dict(hps) == {"lr": 0.01, "pretrained": False, "epochs": 3, "feature-cache": "true"}
    assert Hyperparameters.of(hps) is hps                       # passed through, never parsed again
    assert to_sagemaker_strings(hps) == {"lr": "0.01", "pretrained": "false", "epochs": "3", "feature-cache": "true"}
    # The strings a job receives parse back to the same values in the trainer.
    args = parse_hyperparameters([f"--{k}={v}" for k, v in to_sagemaker_strings(hps).items()])
    assert (args.lr, args.pretrained, args.epochs) == (0.01, False, 3)
    merged = hps | {"lr": "0.1"}
    assert merged["lr"] == 0.1 and hps["lr"] == 0.01 and merged.without("lr").keys() == {"pretrained", "epochs",
                                                                                         "feature-cache"}
    with pytest.raises(HyperparameterError):
        Hyperparameters({"lr": "nonsense"})                     # the constructor validates too
    with pytest.raises(TypeError, match="read-only"):
        hps["lr"] = "nonsense"                                  # nothing bypasses the checks
    assert pickle.loads(pickle.dumps(hps)) == hps and copy.deepcopy(hps) == hps


def test_every_problem_of_a_set_is_named_at_once():
    with pytest.raises(HyperparameterError) as e:
        Hyperparameters.parse({"learning-rate": "0.1", "epochs": "two", "lr": "-1"})
    message = str(e.value)
    assert message.startswith("unknown hyperparameter(s): learning-rate; known: ")
    assert "epochs='two' is not an integer" in message and "lr='-1' must be > 0" in message


def test_a_pending_value_shows_where_a_tuned_value_will_go():
    hps = Hyperparameters.parse({"lr": Pending("hpo-1"), "epochs": "2"})
    assert hps.pending and not Hyperparameters.parse({"epochs": "2"}).pending
    assert to_sagemaker_strings(hps) == {"lr": "<best of hpo-1>", "epochs": "2"}
