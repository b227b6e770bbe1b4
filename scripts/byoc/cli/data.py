"""``byoc data``: prepare a train/valid/test image dataset (and upload it on SageMaker)."""

from __future__ import annotations

from byoc.cli.common import add_command
from byoc.console import console
from byoc.pipeline.profiles import PROFILES

# Without size flags `byoc data` makes the data set `byoc pipeline` makes (the demo profile's), so the
# README's one-step-at-a-time commands reproduce the pipeline's numbers.
DEMO = PROFILES["demo"]


def register(sub, common) -> None:
    p = add_command(sub, "data", common, "prepare a train/valid/test image dataset",
                    """
                    Prepare an ImageFolder dataset (train/ valid/ test/, one folder per class, the dogImages
                    layout). Sources: dogimages (download Udacity's dogImages.zip, resumable), fashion-mnist
                    (real images from Debian's dataset-fashion-mnist, offline), synthetic (generated shapes),
                    or a folder you already have (validated in place). auto picks the best offline source.
                    The sizes default to the demo pipeline's, so `--source auto` makes the data set
                    `byoc pipeline` trains on.
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
    p.add_argument("--classes", type=int,
                   help=f"fashion-mnist/synthetic: number of classes (default: {DEMO.num_classes}, as the pipeline)")
    p.add_argument("--per-class", type=int,
                   help="fashion-mnist/synthetic: images per class in every split (default: the pipeline's, "
                        + ", ".join(f"{split} {n}" for split, n in DEMO.per_class.items()) + ")")
    p.add_argument("--size", type=int,
                   help=f"fashion-mnist/synthetic: image side in pixels (default: {DEMO.image_size}, as the pipeline)")
    p.add_argument("--url", help="dogimages: download URL (default: Udacity's public S3 URL)")
    p.set_defaults(run=run)


def run(args, backend) -> int:
    summary = backend.data(args.source, args.dest, num_classes=args.classes or DEMO.num_classes,
                           per_class=args.per_class or DEMO.per_class, size=args.size or DEMO.image_size,
                           url=args.url)
    if summary.note:
        console.print(f"[yellow]{summary.note}[/]")
    console.print(f"[green]dataset ready[/]: {summary.describe()}; jobs read it from {summary.location}")
    return 0
