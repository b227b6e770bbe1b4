"""Operator settings for ``byoc``: a YAML file, overridden by command-line flags.

Lookup order for every setting (later wins)::

    built-in default  <  byoc.yaml (or the file given with --config)  <  BYOC_* environment  <  flag

Example ``byoc.yaml`` for the SageMaker backend::

    backend: sagemaker
    region: eu-west-1
    role_arn: arn:aws:iam::123456789012:role/SageMakerExecutionRole
    bucket: my-ml-bucket
    prefix: byoc                    # every S3 object of a run lives under s3://bucket/prefix/<run>/
    train_image: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/byoc-train:latest
    serve_image: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/byoc-serve:latest
    train_instance_type: ml.g4dn.xlarge
    endpoint_instance_type: ml.m5.large
    transform_instance_type: ml.m5.large
    max_runtime_trial_s: 7200       # MaxRuntimeInSeconds per job kind: _extraction_s, _trial_s, _final_s (86400)
    spot: true                      # managed spot; with it, checkpoints under <run>/jobs/checkpoints/<job>/
    max_wait_s: 14400               # spot: MaxWaitTimeInSeconds (>= the runtime; default twice the runtime)

Local mode needs none of this.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from byoc.errors import ByocError
from byoc_common.booleans import parse_bool
from container_serve.settings import DEFAULT_PORT

DEFAULT_CONFIG_FILE = "byoc.yaml"
BACKENDS = ("local", "sagemaker")


class ConfigError(ByocError, ValueError):
    """A setting is missing or malformed; the message says which and how to set it."""


@dataclass(frozen=True)
class Settings:
    backend: str = "local"
    run_dir: str = "runs/pipeline"
    # --- local backend
    containers: bool = False           # run the Docker images instead of processes
    train_image_local: str = "byoc-train:latest"
    serve_image_local: str = "byoc-serve:latest"
    port: int = DEFAULT_PORT           # the serving image's own default (SAGEMAKER_BIND_TO_PORT)
    # --- SageMaker backend
    region: str | None = None
    role_arn: str | None = None
    bucket: str | None = None
    prefix: str = "byoc"
    train_image: str | None = None
    serve_image: str | None = None
    train_instance_type: str = "ml.g4dn.xlarge"
    endpoint_instance_type: str = "ml.m5.large"
    transform_instance_type: str = "ml.m5.large"
    endpoint_name: str | None = None   # default: byoc-<run name>
    # MaxRuntimeInSeconds per job kind. 24 h is the SageMaker Python SDK's default (EstimatorBase
    # max_run=24 * 60 * 60, src/sagemaker/estimator.py); AWS allows up to 28 days (StoppingCondition).
    max_runtime_extraction_s: int = 24 * 60 * 60   # the features job of a head-only tuning run
    max_runtime_trial_s: int = 24 * 60 * 60        # every tuning trial
    max_runtime_final_s: int = 24 * 60 * 60        # byoc train, and the final job after tuning
    spot: bool = False                 # EnableManagedSpotTraining on every training job and trial
    max_wait_s: int | None = None      # spot: MaxWaitTimeInSeconds (>= the runtime; default 2x the runtime)
    checkpoint_s3_uri: str | None = None   # default with spot: <run prefix>/jobs/checkpoints/
    endpoint_url: str | None = None    # for moto / LocalStack; never set for real AWS
    dry_run: bool = False
    wait: bool = True

    @property
    def run_name(self) -> str:
        """Short, AWS-safe name derived from the run dir (``runs/pipeline`` -> ``pipeline``)."""
        name = re.sub(r"[^a-zA-Z0-9-]+", "-", Path(self.run_dir).resolve().name).strip("-")
        return name or "run"

    @property
    def s3_run_prefix(self) -> str:
        """``s3://bucket/prefix/<run>/``: everything this run writes to S3 lives below it."""
        self.require("bucket")
        prefix = self.prefix.strip("/")
        return f"s3://{self.bucket}/{prefix + '/' if prefix else ''}{self.run_name}/"

    def require(self, *names: str) -> None:
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            flags = ", ".join("--" + n.replace("_", "-") for n in missing)
            raise ConfigError(
                f"the {self.backend} backend needs {', '.join(missing)}: pass {flags} or set "
                f"{', '.join(missing)} in {DEFAULT_CONFIG_FILE} (see `byoc --help`)"
            )


_FIELD_NAMES = {f.name for f in fields(Settings)}
_BOOL_FIELDS = {"containers", "dry_run", "wait", "spot"}
_INT_FIELDS = {"port", "max_runtime_extraction_s", "max_runtime_trial_s", "max_runtime_final_s", "max_wait_s"}


def _coerce(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _BOOL_FIELDS:
        try:
            return parse_bool(value)
        except ValueError as e:
            raise ConfigError(f"{name}: {e}") from None
    if name in _INT_FIELDS:
        try:
            return int(value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{name} must be an integer, got {value!r}") from e
    return str(value)


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of settings, got {type(data).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - _FIELD_NAMES)
    if unknown:
        raise ConfigError(f"{p}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(_FIELD_NAMES))}")
    return data


def load_settings(config_path: str | None = None, overrides: dict[str, Any] | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    """Merge defaults, the config file, ``BYOC_<NAME>`` environment variables and ``overrides``.

    ``config_path=None`` reads ``./byoc.yaml`` when it exists. ``None`` values in ``overrides``
    mean "flag not given" and do not override.
    """
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    if config_path is not None:
        merged.update(read_config_file(config_path))
    elif Path(DEFAULT_CONFIG_FILE).is_file():
        merged.update(read_config_file(DEFAULT_CONFIG_FILE))
    for name in _FIELD_NAMES:
        env_value = environ.get("BYOC_" + name.upper())
        if env_value is not None and env_value != "":
            merged[name] = env_value
    for name, value in (overrides or {}).items():
        if value is not None and name in _FIELD_NAMES:
            merged[name] = value
    settings = replace(Settings(), **{k: _coerce(k, v) for k, v in merged.items()})
    if settings.backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {settings.backend!r}")
    if settings.role_arn and not settings.role_arn.startswith("arn:"):
        raise ConfigError(f"role_arn must be an IAM role ARN (arn:aws:iam::<account>:role/<name>), "
                          f"got {settings.role_arn!r}")
    if settings.bucket and settings.bucket.startswith("s3://"):
        raise ConfigError(f"bucket is a bucket name, not a URI: use {settings.bucket[5:].split('/')[0]!r}")
    return settings
