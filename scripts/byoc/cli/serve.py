"""``byoc serve``: start the multi-model endpoint (locally until Ctrl-C; on SageMaker until cleanup)."""

from __future__ import annotations

from byoc.cli.common import add_command


def register(sub, common) -> None:
    p = add_command(sub, "serve", common, "start the local multi-model endpoint (Ctrl-C stops it)",
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
    p.set_defaults(run=run)


def run(args, backend) -> int:
    return backend.serve(port=args.port, model_root=args.model_root)
