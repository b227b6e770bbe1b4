"""Every hyperparameter the trainer accepts, defined once.

SageMaker writes hyperparameters to ``/opt/ml/input/config/hyperparameters.json`` with every value
as a string; the ``sagemaker-training`` toolkit turns them into command-line arguments
(``--lr 0.01 --batch-size 32 --pretrained true``). :func:`parse_hyperparameters` reads those back,
converts and validates them, and rejects names it does not know, so a typo in a tuning job or
estimator fails the job at once with a clear message instead of being silently ignored.

The operator side (CLI flags, tuning specs, the pipeline) validates what it is given once, at its
edge, with :meth:`Hyperparameters.parse` against the same table: the result is a typed, read-only
mapping that travels to the backend as it is, and becomes SageMaker's strings
(:func:`to_sagemaker_strings`) only where a request or ``hyperparameters.json`` is written. A typo
therefore fails before any job is created, not inside a billed one.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from byoc_common.arch_names import DEFAULT_ARCH, SUPPORTED_ARCHS
from byoc_common.artifact_files import MAX_IMAGE_SIZE, MAX_RESIZE_SIZE, MIN_IMAGE_SIZE
from byoc_common.booleans import parse_bool
from container_train.contract import FEATURES_CHANNEL, TASK_EXTRACT_FEATURES, TASK_TRAIN, TASKS


class HyperparameterError(ValueError):
    """A hyperparameter is unknown or has a value the trainer cannot use."""


@dataclass(frozen=True)
class Hyperparameter:
    name: str                     # as passed on the command line, without the leading dashes
    type: Callable[[str], Any]    # str -> value (int, float, str, parse_bool)
    default: Any
    help: str
    choices: tuple | None = None
    check: Callable[[Any], bool] | None = None   # extra validation on the converted value
    check_text: str = ""                          # what check() requires, for the error message
    # True: the value shapes the training run, so a checkpoint is resumed only by a job with the
    # same value (container_train.checkpointing). False: job plumbing a restart may change.
    resume_must_match: bool = True

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    def convert(self, raw: str) -> Any:
        try:
            value = self.type(raw)
        except (TypeError, ValueError) as e:
            kind = {int: "an integer", float: "a number", parse_bool: "true or false"}.get(self.type, "a string")
            raise HyperparameterError(f"hyperparameter {self.name}={raw!r} is not {kind} ({e})") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise HyperparameterError(f"hyperparameter {self.name}={raw!r} must be a finite number")
        if self.choices is not None and value not in self.choices:
            raise HyperparameterError(
                f"hyperparameter {self.name}={raw!r} is not one of: {', '.join(map(str, self.choices))}"
            )
        if self.check is not None and not self.check(value):
            raise HyperparameterError(f"hyperparameter {self.name}={raw!r} must be {self.check_text}")
        return value


def _lower(text: str) -> str:
    # The toolkit may pass a JSON boolean through as "True"; choices are lower-case words.
    return str(text).strip().lower()


def _positive(v):
    return v > 0


def _non_negative(v):
    return v >= 0


_TABLE: tuple[Hyperparameter, ...] = (
    # --- what the tuning job searches ----------------------------------------------------------
    Hyperparameter("lr", float, 0.01, "initial learning rate (peak after warmup)", check=_positive,
                   check_text="> 0"),
    Hyperparameter("batch-size", int, 32, "images per training step", check=_positive, check_text="> 0"),
    Hyperparameter("epochs", int, 5, "passes over the training set", check=_positive, check_text="> 0"),
    # --- model ---------------------------------------------------------------------------------
    Hyperparameter("arch", str, DEFAULT_ARCH, "network architecture", choices=SUPPORTED_ARCHS),
    Hyperparameter("pretrained", parse_bool, True,
                   "start from ImageNet weights (pretrained channel > pretrained-weights file > "
                   "torchvision download); false trains from random weights"),
    Hyperparameter("pretrained-weights", str, "",
                   "path to a .pth ImageNet state_dict for the backbone (used when no pretrained channel)"),
    Hyperparameter("freeze", str, "layer4",
                   "which layers train: head = only the new head, layer4 = last stage + head, none = all",
                   choices=("head", "layer4", "none")),
    # --- optimisation --------------------------------------------------------------------------
    Hyperparameter("optimizer", str, "sgd", "optimizer", choices=("sgd", "adam", "adamw")),
    Hyperparameter("momentum", float, 0.9, "SGD momentum", check=lambda v: 0 <= v < 1,
                   check_text="in [0, 1)"),
    Hyperparameter("weight-decay", float, 1e-4, "L2 weight decay", check=_non_negative, check_text=">= 0"),
    Hyperparameter("lr-scheduler", str, "cosine", "learning-rate schedule after warmup",
                   choices=("cosine", "step", "none")),
    Hyperparameter("lr-step-size", int, 3, "epochs between x0.1 decays (lr-scheduler=step)",
                   check=_positive, check_text="> 0"),
    Hyperparameter("warmup-epochs", float, 0.0, "linear learning-rate warmup length in epochs",
                   check=_non_negative, check_text=">= 0"),
    Hyperparameter("label-smoothing", float, 0.0, "cross-entropy label smoothing",
                   check=lambda v: 0 <= v < 1, check_text="in [0, 1)"),
    Hyperparameter("amp", parse_bool, True,
                   "mixed precision: float16 on a GPU; bfloat16 + channels-last on a CPU with AVX-512 BF16 or AMX "
                   "(ml.c7i/m7i); float32 elsewhere. freeze=head: the head trains in float32 and the frozen "
                   "backbone computes the cached features in this precision (container_train/precision.py)"),
    Hyperparameter("early-stopping-patience", int, 0,
                   "stop after this many epochs without a better validation accuracy (0 = never)",
                   check=_non_negative, check_text=">= 0", resume_must_match=False),
    # --- data ----------------------------------------------------------------------------------
    Hyperparameter("image-size", int, 224, "training crop size in pixels (eval: resize then centre crop)",
                   check=lambda v: MIN_IMAGE_SIZE <= v <= MAX_IMAGE_SIZE,
                   check_text=f"in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}] (the endpoint's bounds)"),
    Hyperparameter("resize-size", int, 0,
                   "evaluation resize before the centre crop, in pixels: 0 = image-size x 256/224 (ImageNet's "
                   "87.5%% crop), image-size = no crop (items that fill the frame); the endpoint does the same",
                   check=lambda v: 0 <= v <= MAX_RESIZE_SIZE,
                   check_text=f"in [0, {MAX_RESIZE_SIZE}] (the endpoint's bound)"),
    Hyperparameter("workers", int, 2,
                   "DataLoader worker processes (0 = load in the main process; fewer when /dev/shm is small)",
                   check=_non_negative, check_text=">= 0", resume_must_match=False),
    Hyperparameter("loader-timeout-s", float, 600.0,
                   "seconds to wait for one batch from a DataLoader worker before failing the job (0 = forever)",
                   check=_non_negative, check_text=">= 0", resume_must_match=False),
    Hyperparameter("seed", int, 42, "random seed (data order, augmentation, head initialisation)"),
    Hyperparameter("max-steps-per-epoch", int, 0,
                   "cap on training and evaluation steps per epoch (0 = the whole split); for smoke runs",
                   check=_non_negative, check_text=">= 0"),
    Hyperparameter("feature-cache", _lower, "auto",
                   "train the head on cached backbone features: auto = when freeze=head "
                   "(see container_train.feature_cache)", choices=("auto", "true", "false")),
    Hyperparameter("feature-cache-dir", str, "",
                   "feature cache directory shared by trials (default $BYOC_FEATURE_CACHE_DIR, else "
                   "<checkpoint dir>/feature-cache)", resume_must_match=False),
    Hyperparameter("feature-cache-views", int, 0,
                   "0 = one eval-transform view per image (no augmentation); n = n augmented views "
                   "cycled over epochs", check=_non_negative, check_text=">= 0"),
    Hyperparameter("task", _lower, TASK_TRAIN,
                   f"{TASK_TRAIN} = fine-tune; {TASK_EXTRACT_FEATURES} = write the frozen backbone's features of "
                   f"every split as the model artifact, for later head-only jobs' '{FEATURES_CHANNEL}' channel "
                   "(container_train.features_dataset)", choices=TASKS),
    # --- job plumbing --------------------------------------------------------------------------
    Hyperparameter("checkpoint", parse_bool, True,
                   "write a checkpoint every epoch and resume from this job's checkpoint in the checkpoint dir",
                   resume_must_match=False),
    Hyperparameter("debugger", parse_bool, True,
                   "attach the smdebug hook (on SageMaker only when the job has a DebugHookConfig)",
                   resume_must_match=False),
    Hyperparameter("debugger-save-interval", int, 10,
                   "steps between tensor saves of the local Debugger hook", check=_positive,
                   check_text="> 0", resume_must_match=False),
    Hyperparameter("log-interval-s", float, 10.0, "seconds between progress lines",
                   check=_positive, check_text="> 0", resume_must_match=False),
)

HYPERPARAMETERS: dict[str, Hyperparameter] = {h.name: h for h in _TABLE}
DEFAULTS: dict[str, Any] = {h.name: h.default for h in _TABLE}
# What the tuning job searches.


# SageMaker adds hyperparameters of its own to tuning jobs (``_tuning_objective_metric``); they
# describe the job, not the model, and are dropped rather than rejected as unknown.
RESERVED_PREFIXES: tuple[str, ...] = ("_tuning_",)


def _drop_reserved(argv: Sequence[str]) -> list[str]:
    """Remove ``--_tuning_x value`` and ``--_tuning_x=value`` pairs from a toolkit argv."""
    kept: list[str] = []
    skip_value = False
    for token in argv:
        if skip_value:
            skip_value = False
            if not token.startswith("--"):
                continue
        name = token[2:].split("=", 1)[0] if token.startswith("--") else ""
        if name.startswith(RESERVED_PREFIXES):
            skip_value = "=" not in token
            continue
        kept.append(token)
    return kept


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage and exit 2; raise ours instead
        raise HyperparameterError(message)


def build_arg_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="train.py", description="Fine-tune an image classifier (SageMaker training job).",
                     allow_abbrev=False)
    for h in _TABLE:
        # Convert in parse_hyperparameters() so errors name the hyperparameter the SageMaker way.
        parser.add_argument(f"--{h.name}", dest=h.dest, type=str, default=None, help=h.help)
    return parser


def parse_hyperparameters(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line arguments (as the toolkit passes them) -> a namespace of typed values.

    Attribute names use underscores (``args.batch_size``). Unknown names raise
    :class:`HyperparameterError` listing them.
    """
    parser = build_arg_parser()
    known, unknown = parser.parse_known_args(_drop_reserved(list(argv or [])))
    if unknown:
        names = sorted({u.lstrip("-").split("=", 1)[0] for u in unknown if u.startswith("-")}) or unknown
        raise HyperparameterError(_unknown(names))
    values = {}
    for h in _TABLE:
        raw = getattr(known, h.dest)
        values[h.dest] = h.default if raw is None else h.convert(raw)
    return argparse.Namespace(**values)


def to_dict(args: argparse.Namespace) -> dict[str, Any]:
    """Typed values keyed by hyperparameter name (dashes), e.g. for metrics.json and checkpoints."""
    return {h.name: getattr(args, h.dest) for h in _TABLE}


def resume_relevant(values: dict[str, Any]) -> dict[str, Any]:
    """The entries of a hyperparameter dict (as :func:`to_dict` returns it) a resumed checkpoint
    must share; a name missing from ``values`` (an older checkpoint) counts as its default."""
    return {h.name: values.get(h.name, h.default) for h in _TABLE if h.resume_must_match}


def _unknown(names) -> str:
    return f"unknown hyperparameter(s): {', '.join(names)}; known: {', '.join(sorted(HYPERPARAMETERS))}"


def sagemaker_string(value: Any) -> str:
    """One value as SageMaker hands it to a job: a string, booleans lower-case."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def to_sagemaker_strings(values: Mapping[str, Any]) -> dict[str, str]:
    """A hyperparameter mapping as SageMaker stores it (``HyperParameters`` of a request,
    ``hyperparameters.json``): every value a string, booleans lower-case."""
    return {str(k): sagemaker_string(v) for k, v in values.items()}


@dataclass(frozen=True)
class Pending:
    """A value that exists only once an earlier job has ended (the best of a tuning job): what a dry
    run shows in the place the value will take. Never validated; never sent."""

    source: str

    def __str__(self) -> str:
        return f"<best of {self.source}>"


def convert_value(name: str, value: Any) -> Any:
    """``value`` (a string as SageMaker passes it, or a YAML/Python scalar) as the trainer will read it:
    turned into the string the job receives, then through the trainer's own converter and checks."""
    return HYPERPARAMETERS[name].convert(sagemaker_string(value))


class Hyperparameters(dict):
    """Hyperparameters of one job, validated against the table: name -> typed value (``lr`` -> 0.01,
    ``pretrained`` -> True). Only the names given; the trainer applies the defaults of the rest.

    Build it at the edge (a flag, a spec, a file) with :meth:`parse` (or the constructor, which is the
    same); :meth:`of` passes one through untouched, so the layers below never validate twice. It is a
    read-only dict (JSON writes it as it is); ``|`` merges, the right side wins and is validated."""

    __slots__ = ()

    def __init__(self, raw: Mapping[str, Any] | None = None, *, _checked: bool = False):
        super().__init__(raw if _checked else _validated(raw or {}))

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> Hyperparameters:
        """Validate every name and value of ``raw``; all problems in one :class:`HyperparameterError`."""
        return cls(raw)

    @classmethod
    def of(cls, values: Mapping[str, Any] | None) -> Hyperparameters:
        """``values`` when already validated, else :meth:`parse` of it."""
        return values if isinstance(values, cls) else cls(values)

    def __or__(self, other: Mapping[str, Any]) -> Hyperparameters:
        return Hyperparameters({**self, **Hyperparameters.of(other)}, _checked=True)

    def without(self, *names: str) -> Hyperparameters:
        return Hyperparameters({k: v for k, v in self.items() if k not in names}, _checked=True)

    @property
    def pending(self) -> bool:
        """Whether a value still waits for an earlier job (a dry run's placeholder)."""
        return any(isinstance(v, Pending) for v in self.values())

    def _read_only(self, *args, **kwargs):
        raise TypeError("Hyperparameters are read-only: merge with | (which validates the new values)")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self):
        return (Hyperparameters, (dict(self),), None)

    def __repr__(self) -> str:
        return f"Hyperparameters({dict(self)!r})"


def _validated(raw: Mapping[str, Any]) -> dict[str, Any]:
    problems, unknown, values = [], [], {}
    for name, value in raw.items():
        name = str(name)
        if name not in HYPERPARAMETERS:
            unknown.append(name)
        elif isinstance(value, Pending):
            values[name] = value
        else:
            try:
                values[name] = convert_value(name, value)
            except HyperparameterError as e:
                problems.append(str(e))
    if unknown:
        problems.insert(0, _unknown(sorted(unknown)))
    if problems:
        raise HyperparameterError("; ".join(problems))
    return values
