"""``byoc deploy``: add a ``model.tar.gz`` to the multi-model endpoint."""

from __future__ import annotations

from byoc.cli.common import add_command
from byoc.console import console


def register(sub, common) -> None:
    p = add_command(sub, "deploy", common, "add a model.tar.gz to the multi-model endpoint",
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
    p.set_defaults(run=run)


def run(args, backend) -> int:
    target = backend.deploy(args.artifact, args.name, url=args.url)
    console.print(f"[green]deployed[/] {args.artifact} as {target}")
    return 0
