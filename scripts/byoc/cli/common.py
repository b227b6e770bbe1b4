"""What every ``byoc`` subcommand shares: the options that say where it runs, the way a subcommand
registers its parser, ``--hp NAME=VALUE`` parsing and JSON output."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

from byoc.errors import ByocError
from byoc.settings import BACKENDS, Settings, load_settings

# Flags that are settings (byoc.settings.Settings fields): a flag given wins over byoc.yaml and BYOC_*.
SETTING_FLAGS = ("backend", "run_dir", "containers", "region", "role_arn", "bucket", "prefix", "train_image",
                 "serve_image", "endpoint_name", "endpoint_url", "dry_run", "wait", "port",
                 "max_runtime_extraction_s", "max_runtime_trial_s", "max_runtime_final_s", "spot", "max_wait_s",
                 "checkpoint_s3_uri")


class UsageError(ByocError):
    """A flag's value is malformed; the message shows the expected form."""


def common_options() -> argparse.ArgumentParser:
    """Options every subcommand takes (a parent parser, so they work after the subcommand)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("where it runs")
    g.add_argument("--backend", choices=BACKENDS, help="local (default) or sagemaker")
    g.add_argument("--config", metavar="FILE", help="settings file (default: ./byoc.yaml when present)")
    g.add_argument("--run-dir", help="folder for this run's state and artifacts (default: runs/pipeline)")
    g.add_argument("--containers", action="store_true", default=None,
                   help="local backend: run the Docker images (byoc-train, byoc-serve) instead of processes")
    a = p.add_argument_group("SageMaker backend (or set them in byoc.yaml)")
    a.add_argument("--region", help="AWS region, e.g. eu-west-1")
    a.add_argument("--role-arn", help="SageMaker execution role ARN")
    a.add_argument("--bucket", help="S3 bucket for data and artifacts")
    a.add_argument("--prefix", help="S3 key prefix (default: byoc); the run lives under s3://BUCKET/PREFIX/<run>/")
    a.add_argument("--train-image", help="ECR URI of the training image")
    a.add_argument("--serve-image", help="ECR URI of the serving image")
    a.add_argument("--endpoint-name", help="SageMaker endpoint name (default: byoc-<run>)")
    a.add_argument("--aws-endpoint-url", dest="endpoint_url",
                   help="send AWS requests here instead (moto or LocalStack on 127.0.0.1)")
    a.add_argument("--dry-run", action="store_true", default=None,
                   help="print every AWS request (operation and parameters) and send none")
    a.add_argument("--no-wait", dest="wait", action="store_false", default=None,
                   help="start SageMaker jobs/endpoints and return without waiting")
    return p


def add_command(subparsers, name: str, common: argparse.ArgumentParser, help: str, description: str,
                examples: str) -> argparse.ArgumentParser:
    """A subcommand's parser with the common options, its description and examples."""
    return subparsers.add_parser(
        name, parents=[common], help=help,
        description=textwrap.dedent(description).strip(),
        epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {k: getattr(args, k, None) for k in SETTING_FLAGS}
    return load_settings(config_path=args.config, overrides=overrides)


def parse_hp(items: list[str]) -> dict[str, str]:
    """``["lr=0.01", "arch=resnet18"]`` -> ``{"lr": "0.01", "arch": "resnet18"}``."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--hp {item!r}: expected NAME=VALUE, e.g. --hp lr=0.01")
        out[name.strip().lstrip("-")] = value.strip()
    return out


def unknown_arguments_message(unknown: list[str], command: str) -> str:
    """argparse's "unrecognized arguments", plus the ``--hp NAME=VALUE`` meant when a hyperparameter's
    name was given as a flag (``--epochs 3``): hyperparameters are the trainer's table, not flags."""
    from container_train.hyperparameters import HYPERPARAMETERS

    hints = []
    for i, token in enumerate(unknown):
        name, eq, value = token.removeprefix("--").partition("=")
        name = name.replace("_", "-")
        if not token.startswith("--") or name not in HYPERPARAMETERS:
            continue
        if not eq and i + 1 < len(unknown) and not unknown[i + 1].startswith("-"):
            value = unknown[i + 1]
        hints.append(f"--hp {name}={value or 'VALUE'}")
    message = f"unrecognized arguments: {' '.join(unknown)}"
    if not hints:
        return message
    if command in ("train", "tune"):
        return f"{message}; hyperparameters are given as --hp NAME=VALUE: {' '.join(hints)}"
    return f"{message}; {', '.join(h.split()[1].split('=')[0] for h in hints)} is a hyperparameter: " \
           "`byoc train` and `byoc tune` take it as --hp NAME=VALUE"


def check_local_dataset(backend, data: str) -> None:
    """A local dataset folder is checked as ``byoc data`` checks one before a job starts, so a folder
    with ``valid/`` but no class folders in it gets the reason, not the trainer's "no validation data"
    minutes later (S3 prefixes and missing folders are left to the backend)."""
    if backend.name != "local" or "://" in data or not Path(data).is_dir():
        return
    from byoc.datasets.prepare import validate_imagefolder

    validate_imagefolder(data, optional=("test",))


def print_json(result) -> None:
    """A backend's answer (its ``to_dict()``, :mod:`byoc.backends.results`) or plain data, as JSON."""
    data = result.to_dict() if hasattr(result, "to_dict") else result
    print(json.dumps(data, indent=1, default=str))
