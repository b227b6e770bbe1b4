"""byoc: prepare data, tune, train, package, serve and explain the image classifier, locally or on SageMaker.

Every subcommand runs locally by default (plain processes; --containers runs the Docker images
instead) and on SageMaker with --backend sagemaker. Settings come from flags, BYOC_* environment
variables and a config file (./byoc.yaml or --config FILE; see scripts/config.py).
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from scripts import commands
from scripts.config import BACKENDS, ConfigError, Settings, load_settings

MAIN_EPILOG = """\
the whole thing, locally, on the offline demo set (no AWS account, no network):
  byoc pipeline                         # data -> tune -> train -> rules/report -> package -> serve -> invoke -> batch -> explain
  byoc pipeline --profile tiny          # same steps, smallest sizes (what the tests run)

one step at a time (local):
  byoc data --source auto --dest data/demo
  byoc tune --data data/demo --spec tuning/local-demo.yaml
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


def _common_options() -> argparse.ArgumentParser:
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


def _sub(subparsers, name: str, common, help: str, description: str, examples: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name, parents=[common], help=help,
        description=textwrap.dedent(description).strip(),
        epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="byoc", description=__doc__, epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    common = _common_options()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = _sub(sub, "data", common, "prepare a train/valid/test image dataset",
             """
             Prepare an ImageFolder dataset (train/ valid/ test/, one folder per class, the dogImages
             layout). Sources: dogimages (download Udacity's dogImages.zip, resumable), fashion-mnist
             (real images from Debian's dataset-fashion-mnist, offline), synthetic (generated shapes),
             or a folder you already have (validated in place). auto picks the best offline source.
             With --backend sagemaker the dataset is then uploaded to s3://BUCKET/PREFIX/<run>/data/.
             """,
             """
             byoc data --source auto --dest data/demo
             byoc data --source dogimages --dest data/dogImages
             byoc data --source ~/datasets/flowers           # validate your own ImageFolder
             byoc data --source fashion-mnist --classes 5 --per-class 100 --size 64
             """)
    p.add_argument("--source", default="auto",
                   help="auto | dogimages | fashion-mnist | synthetic | PATH (default: auto)")
    p.add_argument("--dest", help="where to put it (default: data/<source>)")
    p.add_argument("--classes", type=int, help="fashion-mnist/synthetic: number of classes")
    p.add_argument("--per-class", type=int, default=60, help="fashion-mnist/synthetic: images per class per split")
    p.add_argument("--size", type=int, default=64, help="fashion-mnist/synthetic: image side in pixels")
    p.add_argument("--url", help="dogimages: download URL (default: Udacity's public S3 URL)")
    p.set_defaults(handler="data")

    p = _sub(sub, "tune", common, "hyperparameter search (Optuna locally, a tuning job on SageMaker)",
             """
             Search hyperparameters as described by a tuning spec (ranges, objective, strategy,
             max jobs). Locally each trial is a real training job and trials are ranked by the
             objective parsed from the job log with the same regex SageMaker uses; a killed run resumes.
             On SageMaker this creates a hyperparameter tuning job on the training image.
             """,
             """
             byoc tune --data data/demo --spec tuning/local-demo.yaml
             byoc tune --data data/demo --max-jobs 8 --max-parallel-jobs 2 --hp arch=resnet18
             byoc tune --backend sagemaker --data s3://bucket/byoc/run/data/ --spec tuning/tuning.yaml
             """)
    p.add_argument("--data", required=True, help="dataset folder (or s3:// prefix on SageMaker)")
    p.add_argument("--spec", default="tuning/tuning.yaml", help="tuning spec YAML (default: %(default)s)")
    p.add_argument("--max-jobs", type=int, help="override the spec's max_jobs")
    p.add_argument("--max-parallel-jobs", type=int, help="override the spec's max_parallel_jobs")
    p.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE",
                   help="fixed (static) hyperparameter for every trial; repeatable")
    p.add_argument("--out", help="tuning output folder (default: RUN_DIR/tune)")
    p.set_defaults(handler="tune")

    p = _sub(sub, "train", common, "one training job (with Debugger hook and profiler)",
             """
             Run one training job: the trainer in a SageMaker-shaped /opt/ml tree (process mode, or
             the training image with --containers), or a SageMaker training job with the Debugger
             hook, the built-in rules and the profiler report. Hyperparameters are the trainer's
             (see container_train/hyperparameters.py): lr, batch-size, epochs, arch, freeze, ...
             --from-tuning takes the best hyperparameters of a finished `byoc tune`.
             """,
             """
             byoc train --data data/demo --hp arch=efficientnet_lite0 --hp freeze=head --hp epochs=3
             byoc train --data data/demo --from-tuning runs/pipeline/tune --job-dir runs/best
             byoc train --backend sagemaker --data s3://bucket/byoc/run/data/ --hp epochs=5
             """)
    p.add_argument("--data", required=True, help="dataset folder holding train/ valid/ test/ (or s3:// prefix)")
    p.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE", help="hyperparameter; repeatable")
    p.add_argument("--from-tuning", metavar="DIR", help="start from the best hyperparameters in this tuning folder")
    p.add_argument("--job-dir", help="local job folder (default: RUN_DIR/train)")
    p.set_defaults(handler="train")

    p = _sub(sub, "report", common, "Debugger rules + profiler report for a finished job",
             """
             Evaluate the Debugger rules (vanishing gradient, exploding tensor, loss not decreasing,
             overfit, overtraining, poor weight initialization) on the job's saved tensors and write the
             self-contained profiler-report.html from its step timings and system samples.
             """,
             """
             byoc report --job-dir runs/pipeline/train
             """)
    p.add_argument("--job-dir", required=True, help="local training job folder")
    p.set_defaults(handler="report")

    p = _sub(sub, "package", common, "model dir -> model.tar.gz",
             """
             Tar a trained model directory (model.pth, classes.json, model_config.json) into a flat
             model.tar.gz, the form SageMaker unpacks into /opt/ml/model(s).
             """,
             """
             byoc package runs/pipeline/train/model -o runs/pipeline/models/fashion.tar.gz
             """)
    p.add_argument("model_dir")
    p.add_argument("-o", "--output", help="archive path (default: MODEL_DIR/../model.tar.gz)")
    p.set_defaults(handler="package")

    p = _sub(sub, "serve", common, "start the local multi-model endpoint (Ctrl-C stops it)",
             """
             Start the serving stack (multi-model-server + the handler) as SageMaker would, in
             multi-model mode, on 127.0.0.1. It records its URL and model root in RUN_DIR/endpoint.json
             so deploy/invoke/batch/explain in another terminal find it. Runs until Ctrl-C.
             On SageMaker this creates the multi-model endpoint (model with Mode=MultiModel,
             endpoint config, endpoint) and waits until it is InService.
             """,
             """
             byoc serve --port 8080
             byoc serve --containers                      # the byoc-serve image, --network host
             byoc serve --backend sagemaker
             """)
    p.add_argument("--port", type=int, help="local port (default: 8080)")
    p.add_argument("--model-root", help="local folder the endpoint loads models from (default: RUN_DIR/endpoint/models)")
    p.set_defaults(handler="serve")

    p = _sub(sub, "deploy", common, "add a model.tar.gz to the multi-model endpoint",
             """
             Locally: unpack the archive under the running endpoint's model root and load it
             (POST /models). On SageMaker: copy it under the endpoint's S3 model prefix; SageMaker
             loads it on the first invocation with TargetModel=NAME.tar.gz.
             """,
             """
             byoc deploy runs/pipeline/models/fashion.tar.gz --name fashion
             byoc deploy s3://bucket/jobs/best/output/model.tar.gz --name dogs --backend sagemaker
             """)
    p.add_argument("artifact", help="model.tar.gz (local path, or s3:// on SageMaker)")
    p.add_argument("--name", required=True, help="model name to invoke it by")
    p.add_argument("--url", help="local endpoint URL (default: from RUN_DIR/endpoint.json)")
    p.set_defaults(handler="deploy")

    for name, helptext in (("invoke", "classify one image with a target model"),
                           ("explain", "write a Grad-CAM heatmap PNG for one image")):
        p = _sub(sub, name, common, helptext,
                 """
                 Send one image to the endpoint (locally POST /models/NAME/invoke, on SageMaker
                 InvokeEndpoint with TargetModel). The answer is the top-k labels with probabilities.
                 """ if name == "invoke" else """
                 Ask the endpoint for a Grad-CAM explanation of the top class (custom attribute
                 explain=gradcam) and write the heatmap overlay as a PNG file.
                 """,
                 """
                 byoc invoke shirt.jpg --target-model fashion --topk 3
                 byoc invoke shirt.png --target-model fashion --accept text/csv
                 byoc invoke dog.jpg --target-model dogs --backend sagemaker
                 """ if name == "invoke" else """
                 byoc explain shirt.jpg --target-model fashion -o shirt-gradcam.png
                 """)
        p.add_argument("image", help="image file")
        p.add_argument("--target-model", help="model name (as deployed); omit for a single-model endpoint")
        p.add_argument("--content-type", help="default: from the file extension (image/jpeg, image/png, ...)")
        p.add_argument("--url", help="local endpoint URL (default: from RUN_DIR/endpoint.json)")
        if name == "invoke":
            p.add_argument("--accept", default="application/json", help="application/json (default) or text/csv")
            p.add_argument("--topk", type=int, help="number of classes in the answer")
            p.add_argument("--explain", action="store_true", help="also return a Grad-CAM heatmap (base64 PNG)")
        else:
            p.add_argument("-o", "--output", help="PNG path (default: <image>.gradcam.png)")
        p.set_defaults(handler=name)

    p = _sub(sub, "batch", common, "batch transform over a folder (one <input>.out per input)",
             """
             Classify every image in a folder the way a SageMaker batch transform job does: one
             request per file, one <input file name>.out answer per input in the output folder.
             Locally through the running endpoint; on SageMaker a transform job (CreateTransformJob,
             SplitType=None, BatchStrategy=SingleRecord) over the folder uploaded to S3.
             """,
             """
             byoc batch data/demo/test/001.T-shirt --output runs/preds --target-model fashion
             byoc batch images/ --output preds/ --backend sagemaker --model-data s3://.../model.tar.gz
             """)
    p.add_argument("input", help="folder of images (searched recursively)")
    p.add_argument("--output", required=True, help="folder for the .out files")
    p.add_argument("--target-model", help="local: model name on the endpoint")
    p.add_argument("--model-data", help="SageMaker: model.tar.gz URI (default: the deployed --target-model)")
    p.add_argument("--content-type", help="default: from each file's extension")
    p.add_argument("--accept", default="application/json")
    p.add_argument("--max-payload-mb", type=int, default=6, help="largest request (SageMaker MaxPayloadInMB)")
    p.add_argument("--url", help="local endpoint URL (default: from RUN_DIR/endpoint.json)")
    p.set_defaults(handler="batch")

    p = _sub(sub, "pipeline", common, "all steps in order, resumable",
             """
             data -> tune -> train the best (Debugger + profiler) -> rules + profiler report ->
             package two models -> start the endpoint -> load both -> invoke samples against each ->
             batch transform a folder -> Grad-CAM explanation -> summary of every artifact.
             State lives in RUN_DIR/state.json: re-running skips finished steps; a failed step prints
             its log and the command that resumes. Profiles: demo (default; Fashion-MNIST,
             efficientnet_lite0 with real pretrained weights, head-only fine-tune; ~10 min on 2 CPU
             cores) and tiny (smallest sizes, for tests). Real runs use resnet50 (`byoc train`).
             """,
             """
             byoc pipeline
             byoc pipeline --profile tiny --run-dir /tmp/byoc-tiny
             byoc pipeline --restart                      # forget the state, run everything again
             byoc pipeline --from-step train              # re-run train and everything after it
             byoc pipeline --backend sagemaker --dry-run  # every AWS request the SageMaker run would make
             """)
    p.add_argument("--profile", choices=("demo", "tiny"), default="demo")
    p.add_argument("--tiny", dest="profile", action="store_const", const="tiny", help="same as --profile tiny")
    p.add_argument("--data", help="use this dataset (folder or source name) instead of the profile's")
    p.add_argument("--restart", action="store_true", help="ignore finished steps and start over")
    p.add_argument("--from-step", help="re-run this step and every step after it")
    p.add_argument("--port", type=int, help="local endpoint port (default: a free one)")
    p.set_defaults(handler="pipeline")

    p = _sub(sub, "cleanup", common, "delete what a run created (SageMaker) or stop it (local)",
             """
             SageMaker: delete the endpoint, endpoint configs, models and the S3 objects under the run
             prefix, as recorded in RUN_DIR/aws-resources.json (stops jobs still running).
             Local: stop a `byoc serve` recorded in RUN_DIR/endpoint.json.
             """,
             """
             byoc cleanup --backend sagemaker
             byoc cleanup --backend sagemaker --keep-data --dry-run
             """)
    p.add_argument("--keep-data", action="store_true", help="keep the S3 objects")
    p.set_defaults(handler="cleanup")
    return parser


_SETTING_FLAGS = ("backend", "run_dir", "containers", "region", "role_arn", "bucket", "prefix", "train_image",
                  "serve_image", "endpoint_name", "endpoint_url", "dry_run", "wait", "port")


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {k: getattr(args, k, None) for k in _SETTING_FLAGS}
    return load_settings(config_path=args.config, overrides=overrides)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
        return int(commands.run(args.handler, args, settings) or 0)
    except ConfigError as e:
        print(f"byoc: configuration error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("byoc: interrupted", file=sys.stderr)
        return 130
    except commands.CommandError as e:
        print(f"byoc {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
