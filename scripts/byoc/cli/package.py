"""``byoc package``: a trained model folder -> the flat ``model.tar.gz`` SageMaker unpacks."""

from __future__ import annotations

from byoc.cli.common import add_command
from byoc.console import console


def register(sub, common) -> None:
    p = add_command(sub, "package", common, "model dir -> model.tar.gz",
                    """
                    Tar a trained model directory (model.pth, classes.json, model_config.json) into a flat
                    model.tar.gz, the form SageMaker unpacks into /opt/ml/model(s).
                    """,
                    """
                    byoc package runs/pipeline/train/model -o runs/pipeline/models/fashion.tar.gz
                    """)
    p.add_argument("model_dir")
    p.add_argument("-o", "--output", help="archive path (default: MODEL_DIR/../model.tar.gz)")
    p.set_defaults(run=run)


def run(args, backend) -> int:
    from byoc.packaging import archive_members, package_model

    out = package_model(args.model_dir, args.output)
    console.print(f"[green]wrote[/] {out} ({', '.join(archive_members(out))})")
    return 0
