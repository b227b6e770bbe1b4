"""byoc: prepare data, tune, train, package, serve and explain the image classifier, locally or on SageMaker.

Every subcommand runs locally by default (plain processes; --containers runs the Docker images
instead) and on SageMaker with --backend sagemaker. Settings come from flags, BYOC_* environment
variables and a config file (./byoc.yaml or --config FILE; see byoc/settings.py).
"""

from __future__ import annotations

import argparse
import os
import sys

from byoc.cli import (
    batch,
    cleanup,
    common,
    data,
    deploy,
    invoke,
    package,
    pipeline,
    report,
    serve,
    train,
    tune,
)
from byoc.errors import ByocError
from byoc.settings import ConfigError

# One module per subcommand, each registering its own parser (in `byoc --help` order).
COMMANDS = (data, tune, train, report, package, serve, deploy, invoke, batch, pipeline, cleanup)

MAIN_EPILOG = """\
the whole thing, locally, on the offline demo set (no AWS account, no network):
  byoc pipeline                         # data -> tune -> train -> rules/report -> package -> serve -> invoke -> batch -> explain
  byoc pipeline --profile tiny          # same steps, smallest sizes (what the tests run)

one step at a time (local):
  byoc data --source auto --dest data/demo
  byoc tune --data data/demo --spec local-demo
  byoc train --data data/demo --hp arch=efficientnet_lite0 --hp epochs=2 --job-dir runs/train
  byoc report --job-dir runs/train
  byoc package runs/train/model -o runs/train/model.tar.gz
  byoc serve --port 8080 &              # multi-model endpoint; Ctrl-C stops it
  byoc deploy runs/train/model.tar.gz --name fashion
  byoc invoke shirt.jpg --target-model fashion --topk 3
  byoc batch images/ --output preds/ --target-model fashion
  byoc explain shirt.jpg --target-model fashion -o shirt-gradcam.png

on SageMaker (same commands, one flag; put region/role/bucket/images in byoc.yaml):
  byoc data --source dogimages --backend sagemaker          # download, then upload to S3
  byoc pipeline --backend sagemaker --dry-run               # print every AWS request, send none
  byoc cleanup --backend sagemaker                          # delete what the run created

run `byoc <command> --help` for each command's options and examples.
"""


# Errors outside ByocError whose message is the whole story (no traceback): the images' own contract
# errors and AWS's answers, as (module, class names).
REPORTED_AS_IS = (("byoc_common.artifact", ("ModelArtifactError",)),
                  ("container_serve.model_archive", ("UnsafeArchiveError",)),
                  ("botocore.exceptions", ("BotoCoreError", "ClientError")))


def reported_as_is() -> tuple[type[BaseException], ...]:
    """:data:`REPORTED_AS_IS` and a missing or existing file. A module that the command never loaded
    raised nothing, so it is looked up in ``sys.modules`` rather than imported: importing it here
    would cost every command torch's (or botocore's) start-up time."""
    errors: tuple[type[BaseException], ...] = (FileNotFoundError, FileExistsError)
    for module_name, names in REPORTED_AS_IS:
        module = sys.modules.get(module_name)
        if module is not None:
            errors += tuple(getattr(module, name) for name in names)
    return errors


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="byoc", description=__doc__, epilog=MAIN_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    options = common.common_options()
    for command in COMMANDS:
        command.register(sub, options)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("SMDEBUG_LOG_LEVEL", "warning")  # smdebug logs at INFO on import and every rule step
    args = build_parser().parse_args(argv)
    try:
        from byoc.backends import backend_for

        backend = backend_for(common.settings_from_args(args))
        try:
            return int(args.run(args, backend) or 0)
        except reported_as_is() as e:
            raise ByocError(str(e)) from e
    except KeyboardInterrupt:
        print("byoc: interrupted", file=sys.stderr)
        return 130
    except ConfigError as e:
        print(f"byoc: configuration error: {e}", file=sys.stderr)
        return 2
    except ByocError as e:
        print(f"byoc {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
