"""What each ``byoc`` subcommand does: pick the backend, call it, print the result.

The backends (:mod:`scripts.local_backend`, :mod:`scripts.sagemaker_backend`) expose the same
functions; this module turns parsed flags into their arguments and known failures into one clear
line (:class:`CommandError`). Heavy imports (torch, boto3) happen inside the functions so that
``byoc --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scripts.config import Settings
from scripts.progress import console


class CommandError(RuntimeError):
    """A command failed for a reason the user can act on; printed without a traceback."""


def parse_hp(items: list[str]) -> dict[str, str]:
    """``["lr=0.01", "arch=resnet18"]`` -> ``{"lr": "0.01", "arch": "resnet18"}``."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CommandError(f"--hp {item!r}: expected NAME=VALUE, e.g. --hp lr=0.01")
        out[name.strip().lstrip("-")] = value.strip()
    return out


def _backend(settings: Settings):
    if settings.backend == "sagemaker":
        from scripts import sagemaker_backend

        return sagemaker_backend
    from scripts import local_backend

    return local_backend


def _known_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is the whole story (no traceback needed)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from byoc_common.artifact import ModelArtifactError
    from container_serve.model_archive import UnsafeArchiveError
    from scripts.aws.s3_data import S3UriError
    from scripts.aws.sagemaker_training import LaunchError
    from scripts.datasets import DatasetError
    from scripts.endpoint_client import EndpointError
    from scripts.local_backend import TrainingFailed
    from scripts.local_endpoint import EndpointError as LocalEndpointError
    from scripts.pipeline import StepFailed
    from scripts.tuning.local_tuner import TuningError
    from scripts.tuning.spec import SpecError

    return (DatasetError, ModelArtifactError, EndpointError, FileNotFoundError, FileExistsError,
            TrainingFailed, StepFailed, UnsafeArchiveError, LocalEndpointError, TuningError, SpecError,
            BotoCoreError, ClientError, S3UriError, LaunchError)


def run(handler: str, args: argparse.Namespace, settings: Settings) -> int:
    fn = globals()[f"cmd_{handler}"]
    try:
        return fn(args, settings) or 0
    except CommandError:
        raise
    except _known_errors() as e:
        raise CommandError(str(e)) from e


# ---- one function per subcommand ------------------------------------------------------------------

def cmd_data(args, settings: Settings) -> int:
    summary = _backend(settings).data(settings, source=args.source, dest=args.dest, num_classes=args.classes,
                                      per_class=args.per_class, size=args.size, url=args.url)
    if summary.note:
        console.print(f"[yellow]{summary.note}[/]")
    console.print(f"[green]dataset ready[/]: {summary.describe()}")
    return 0


def cmd_tune(args, settings: Settings) -> int:
    result = _backend(settings).tune(settings, data=args.data, spec_path=args.spec, max_jobs=args.max_jobs,
                                     max_parallel_jobs=args.max_parallel_jobs, static=parse_hp(args.hp),
                                     out_dir=args.out)
    print(json.dumps(result, indent=1, default=str))
    return 0


def cmd_train(args, settings: Settings) -> int:
    hps = {}
    if args.from_tuning:
        hps.update(read_best_hyperparameters(args.from_tuning))
    hps.update(parse_hp(args.hp))
    result = _backend(settings).train(settings, data=args.data, hyperparameters=hps, job_dir=args.job_dir)
    print(json.dumps(result, indent=1, default=str))
    return 0


def read_best_hyperparameters(tune_dir: str | Path) -> dict[str, str]:
    path = Path(tune_dir) / "best_hyperparameters.json"
    if not path.is_file():
        raise CommandError(f"{path} does not exist: run `byoc tune` first (or pass --hp values)")
    data = json.loads(path.read_text())
    # The local tuner writes {"hyperparameters": {...}, "tuned": ..., "objective": ...}; SageMaker
    # runs (scripts.sagemaker_backend.tune) write the flat mapping.
    hps = data.get("hyperparameters", data) if isinstance(data.get("hyperparameters"), dict) else data
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in hps.items()}


def cmd_report(args, settings: Settings) -> int:
    result = _backend(settings).report(settings, job_dir=args.job_dir)
    print(json.dumps(result, indent=1, default=str))
    return 0


def cmd_package(args, settings: Settings) -> int:
    from scripts.packaging import archive_members, package_model

    out = package_model(args.model_dir, args.output)
    console.print(f"[green]wrote[/] {out} ({', '.join(archive_members(out))})")
    return 0


def cmd_serve(args, settings: Settings) -> int:
    return _backend(settings).serve(settings, port=args.port, model_root=args.model_root) or 0


def cmd_deploy(args, settings: Settings) -> int:
    target = _backend(settings).deploy(settings, artifact=args.artifact, name=args.name, url=args.url)
    console.print(f"[green]deployed[/] {args.artifact} as {target}")
    return 0


def cmd_invoke(args, settings: Settings) -> int:
    content_type, body = _backend(settings).invoke(
        settings, image=args.image, target_model=args.target_model, content_type=args.content_type,
        accept=args.accept, topk=args.topk, explain=args.explain, url=args.url)
    if content_type.startswith("application/json") and body:
        print(json.dumps(json.loads(body), indent=1))   # plain JSON: pipe it into jq or a file
    elif body:
        print(body.decode(errors="replace"))
    return 0


def cmd_explain(args, settings: Settings) -> int:
    out = args.output or str(Path(args.image).with_suffix("")) + ".gradcam.png"
    prediction = _backend(settings).explain(settings, image=args.image, target_model=args.target_model,
                                            content_type=args.content_type, output=out, url=args.url)
    console.print(f"[green]Grad-CAM[/] for {prediction.get('label')!r} written to {out}")
    return 0


def cmd_batch(args, settings: Settings) -> int:
    result = _backend(settings).batch(
        settings, input_dir=args.input, output_dir=args.output, target_model=args.target_model,
        model_data=args.model_data, content_type=args.content_type, accept=args.accept,
        max_payload_mb=args.max_payload_mb, url=args.url)
    console.print(f"[green]{len(result['outputs'])} outputs[/] in {args.output}")
    for name, why in result.get("failures", {}).items():
        console.print(f"[red]failed[/] {name}: {why}")
    return 1 if result.get("failures") else 0


def cmd_pipeline(args, settings: Settings) -> int:
    from scripts.pipeline import run_pipeline

    return run_pipeline(settings, profile=args.profile, data=args.data, restart=args.restart,
                        from_step=args.from_step, port=args.port)


def cmd_cleanup(args, settings: Settings) -> int:
    return _backend(settings).cleanup(settings, keep_data=args.keep_data) or 0
