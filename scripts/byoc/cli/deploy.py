"""``byoc deploy``: add a ``model.tar.gz`` to the multi-model endpoint."""

from __future__ import annotations

from byoc.cli.common import UsageError, add_command
from byoc.console import console


def register(sub, common) -> None:
    p = add_command(sub, "deploy", common, "add a model.tar.gz to the multi-model endpoint",
                    """
                    Locally: unpack the archive under the model root of the endpoint that `byoc serve`
                    recorded in RUN_DIR/endpoint.json and load it (POST /models); --run-dir picks the
                    endpoint (a URL alone cannot say where that server reads its models). On SageMaker: copy it under the endpoint's S3 model prefix; SageMaker
                    loads it on the first invocation with TargetModel=NAME.tar.gz.

                    On SageMaker, --max-instances (with --target-invocations, and optionally
                    --min-instances) also attaches Application Auto Scaling to the endpoint's variant:
                    target tracking keeps each instance near that many invocations per minute, between
                    the minimum and maximum instance count. The endpoint must be InService; deploying
                    again with other numbers updates them.
                    """,
                    """
                    byoc deploy runs/pipeline/models/fashion.tar.gz --name fashion
                    byoc deploy s3://bucket/jobs/best/output/model.tar.gz --name dogs --backend sagemaker
                    byoc deploy runs/pipeline/models/fashion.tar.gz --name fashion --backend sagemaker --min-instances 1 --max-instances 4 --target-invocations 600
                    """)
    p.add_argument("artifact", help="model.tar.gz (local path, or s3:// on SageMaker)")
    p.add_argument("--name", required=True, help="model name to invoke it by")
    g = p.add_argument_group("SageMaker endpoint autoscaling (Application Auto Scaling, target tracking)")
    g.add_argument("--min-instances", type=int, metavar="N",
                   help="fewest instances autoscaling keeps (default: 1)")
    g.add_argument("--max-instances", type=int, metavar="N",
                   help="most instances autoscaling adds; turns autoscaling on")
    g.add_argument("--target-invocations", type=float, metavar="N",
                   help="invocations per instance per minute to keep (CloudWatch InvocationsPerInstance, "
                        "the predefined metric SageMakerVariantInvocationsPerInstance)")
    p.set_defaults(run=run)


def scaling_from_args(args):
    """The three autoscaling flags -> an EndpointScaling, or None when none was given."""
    given = [f for f in ("min_instances", "max_instances", "target_invocations") if getattr(args, f) is not None]
    if not given:
        return None
    missing = [f"--{f.replace('_', '-')}" for f in ("max_instances", "target_invocations") if f not in given]
    if missing:
        raise UsageError(f"autoscaling needs {' and '.join(missing)} as well")
    from byoc.aws.autoscaling import EndpointScaling

    scaling = EndpointScaling(min_instances=1 if args.min_instances is None else args.min_instances,
                              max_instances=args.max_instances, target_invocations=args.target_invocations)
    scaling.validate()
    return scaling


def run(args, backend) -> int:
    target = backend.deploy(args.artifact, args.name, scaling=scaling_from_args(args))
    console.print(f"[green]deployed[/] {args.artifact} as {target}")
    return 0
