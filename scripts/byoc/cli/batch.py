"""``byoc batch``: batch transform over a folder, one ``<input>.out`` per input."""

from __future__ import annotations

from byoc.cli.common import add_command
from byoc.console import console
from container_serve import content_types as ct


def register(sub, common) -> None:
    p = add_command(sub, "batch", common, "batch transform over a folder (one <input>.out per input)",
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
    p.add_argument("--accept", default=ct.JSON)
    p.add_argument("--max-payload-mb", type=int, default=6, help="largest request (SageMaker MaxPayloadInMB)")
    p.add_argument("--url", help="local endpoint URL (default: from RUN_DIR/endpoint.json)")
    p.set_defaults(run=run)


def run(args, backend) -> int:
    result = backend.batch(args.input, args.output, target_model=args.target_model, model_data=args.model_data,
                           content_type=args.content_type, accept=args.accept,
                           max_payload_mb=args.max_payload_mb, url=args.url)
    console.print(f"[green]{len(result.outputs)} outputs[/] in {args.output}")
    for name, why in result.failures.items():
        console.print(f"[red]failed[/] {name}: {why}")
    return 1 if result.failures else 0
