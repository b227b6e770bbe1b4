"""The vocabulary of a tuning spec and the types of its parts (the whole spec: :mod:`byoc.tuning.spec`).

Every allowed word and key is listed here once, and :mod:`byoc.tuning.validate` checks a file
against them. Parsed values are already SageMaker's spelling (``Maximize``, ``Logarithmic``), so the
request builders copy them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from container_train import contract
from container_train.job_env import TORCH_DISTRIBUTED_HYPERPARAMETER

STRATEGIES = ("Bayesian", "Random", "Grid", "Hyperband")
# The static hyperparameters SageMaker infers Hyperband's MaxResource from, and its limit.
HYPERBAND_EPOCH_KEYS = ("epochs", "numepochs", "n-epochs", "n_epochs", "num_epochs")
HYPERBAND_MAX_RESOURCE = 20_000
DIRECTIONS = ("Maximize", "Minimize")
EARLY_STOPPING = ("Off", "Auto")
KINDS = ("continuous", "integer", "categorical")
# Spec spelling -> SageMaker ScalingType.
SCALINGS = {"linear": "Linear", "log": "Logarithmic", "auto": "Auto"}
MAX_CATEGORICAL_VALUES = 30          # SageMaker's limit per categorical range
# Hosts per training job (ResourceConfig.InstanceCount) and how a multi-host or multi-GPU job is
# launched. Each distribution is the hyperparameter SageMaker's Python SDK sets for it: the PyTorch
# estimator's ``distribution={"torch_distributed": {"enabled": True}}`` becomes
# ``sagemaker_torch_distributed_enabled`` (aws/sagemaker-python-sdk,
# src/sagemaker/pytorch/estimator.py: LAUNCH_TORCH_DISTRIBUTED_ENV_NAME,
# _pytorch_distribution_configuration), which the training toolkit reads as an additional framework
# parameter and answers with its torchrun-based TorchDistributedRunner. No distribution: the image
# decides how to use the hosts it is given.
DEFAULT_INSTANCE_COUNT = 1
# The name of the local Optuna study in its storage (here, not in search.py, so the CLI can show it
# without importing optuna).
DEFAULT_STUDY_NAME = "tuning"
DISTRIBUTIONS = {"torch_distributed": TORCH_DISTRIBUTED_HYPERPARAMETER}

TOP_KEYS = ("objective", "strategy", "max_jobs", "max_parallel_jobs", "early_stopping", "random_seed",
            "hyperband", "parameters", "static", "instance_count", "distribution")
OBJECTIVE_KEYS = ("metric", "direction")
HYPERBAND_KEYS = ("min_resource", "max_resource")
RANGE_KEYS = {"continuous": ("type", "min", "max", "scaling"),
              "integer": ("type", "min", "max", "scaling"),
              "categorical": ("type", "values")}


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
