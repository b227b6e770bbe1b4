"""What the trainer's phases build and hand on to the next ones (:func:`container_train.train.run`).

Each phase returns its part and later phases take the parts they read as arguments, as in
torchvision's reference ``main`` (``references/classification/train.py``): ``load_data`` gives
:class:`Data`, ``make_model`` a :class:`Network`, ``make_optimisation`` an :class:`Optimisation`;
:func:`container_train.head_features.prepare` returns new ``Data`` and ``Network`` (feature batches
and the head) rather than changing them. :class:`Fit` is the one record that grows: the epoch loop's
progress, kept in one place because checkpoints, the Debugger hook and the summary all read it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from byoc_common.artifact import ModelConfig
from container_train import checkpointing, debugger, distributed, engine
from container_train.data import SkipCounter
from container_train.job_env import JobPaths
from container_train.loader_limits import LoaderPlan
from container_train.precision import Precision
from container_train.profiling import Phases, StepTimings


@dataclass(frozen=True)
class Context:
    """What every phase reads and none changes: the settings, where things go, how this rank runs."""

    args: object
    paths: JobPaths
    stop: engine.StopFlag            # agreed between the ranks (distributed.agreed_stop)
    device: torch.device
    precision: Precision
    ranks: distributed.Ranks
    phases: Phases
    timings: StepTimings
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class FeaturesChannel:
    """An opened ``features`` channel (container_train.features_dataset): its manifest, the folder
    holding it and the scratch folder it was unpacked into, removed once read."""

    manifest: dict
    folder: Path
    scratch: Path


@dataclass(frozen=True)
class Data:
    """The classes and model config the data implies, and one loader per split."""

    class_names: list[str]
    config: ModelConfig
    plan: LoaderPlan
    splits: dict = field(default_factory=dict)        # name -> data.Split (none with a features channel)
    loaders: dict = field(default_factory=dict)
    steps: dict = field(default_factory=dict)         # name -> steps per epoch
    features: FeaturesChannel | None = None

    def image_counts(self) -> dict[str, int]:
        if self.features is not None:
            return {name: entry["images"] for name, entry in self.features.manifest["splits"].items()}
        return {name: len(split.samples) for name, split in self.splits.items()}


@dataclass(frozen=True)
class Network:
    """The model and the modules that train and test: the model itself, or its head on features."""

    model: nn.Module
    train_module: nn.Module
    test_module: nn.Module
    use_cache: bool


@dataclass(frozen=True)
class Optimisation:
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler


@dataclass
class Fit:
    """The training's record: progress (best weights, history), where it resumed, why it stopped."""

    progress: checkpointing.TrainingState = field(default_factory=checkpointing.TrainingState)
    resumed_from: int | None = None
    stopped_reason: str | None = None
    hook: object = None
    epoch_loss: debugger.EpochLoss = field(default_factory=debugger.EpochLoss)
    skipped: SkipCounter = field(default_factory=SkipCounter)
