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

one step at a time (local; after `byoc pipeline`, in this order):
  byoc data --source auto --dest data/demo
  byoc tune --data data/demo --spec local-demo --out runs/tune
  byoc train --data data/demo --from-tuning runs/tune --job-dir runs/train
  byoc report --job-dir runs/train
  byoc package runs/train/model -o runs/train/model.tar.gz
  byoc serve --port 8080 &              # multi-model endpoint; Ctrl-C or `byoc cleanup` stops it
  byoc deploy runs/train/model.tar.gz --name fashion
  byoc invoke data/demo/test/003.Pullover/0000.jpg --target-model fashion --topk 3
  byoc batch data/demo/test/001.T-shirt_top --output runs/preds --target-model fashion
  byoc explain data/demo/test/001.T-shirt_top/0000.jpg --target-model fashion -o runs/tshirt-gradcam.png

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


NO_CREDENTIALS_HINT = ("give byoc AWS credentials the way the AWS CLI takes them: `aws configure` (or "
                       "`aws sso login`) and AWS_PROFILE, AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY, or an "
                       "instance/container role; --dry-run needs none")


def explained(error: BaseException) -> str:
    """The error's own message, plus how to fix it where botocore's says only what is missing."""
    if type(error).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
        return f"{error}: {NO_CREDENTIALS_HINT}"
    return str(error)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="byoc", description=__doc__, epilog=MAIN_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    options = common.common_options()
    for command in COMMANDS:
        command.register(sub, options)
    return parser


def command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The subcommand's own parser (its usage line goes with its errors)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("SMDEBUG_LOG_LEVEL", "warning")  # smdebug logs at INFO on import and every rule step
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command_parser(parser, args.command).error(common.unknown_arguments_message(unknown, args.command))
    try:
        from byoc.backends import backend_for

        backend = backend_for(common.settings_from_args(args))
        try:
            return int(args.run(args, backend) or 0)
        except reported_as_is() as e:
            raise ByocError(explained(e)) from e
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
