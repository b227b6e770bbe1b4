"""``byoc cleanup``: delete what a run created (SageMaker) or stop its endpoint (local)."""

from __future__ import annotations

from byoc.cli.common import add_command


def register(sub, common) -> None:
    p = add_command(sub, "cleanup", common, "delete what a run created (SageMaker) or stop it (local)",
                    """
                    SageMaker: delete the endpoint, endpoint configs, models and the S3 objects under the run
                    prefix, as recorded in RUN_DIR/aws-resources.json (stops jobs still running).
                    Local: stop a `byoc serve` recorded in RUN_DIR/endpoint.json.
                    """,
                    """
                    byoc cleanup --backend sagemaker
                    byoc cleanup --backend sagemaker --keep-data --dry-run
                    """)
    p.add_argument("--keep-data", action="store_true", help="SageMaker: keep the S3 objects")
    p.set_defaults(run=run)


def run(args, backend) -> int:
    return backend.cleanup(keep_data=args.keep_data)
