"""``byoc pipeline``: every step in order, resumable (the main job)."""

from __future__ import annotations

from byoc.cli.common import add_command


def register(sub, common) -> None:
    from byoc.pipeline.profiles import PROFILES

    p = add_command(sub, "pipeline", common, "all steps in order, resumable",
                    """
                    data -> tune -> train the best (Debugger + profiler) -> rules + profiler report ->
                    a second model -> package both -> start the endpoint -> load both -> invoke samples
                    against each -> batch transform a folder -> Grad-CAM explanation -> summary of every
                    artifact. State lives in RUN_DIR/state.json: re-running skips finished steps; a failed
                    step prints its log and the command that resumes. Profiles: demo (default;
                    Fashion-MNIST, efficientnet_lite0 with real pretrained weights, head-only fine-tune;
                    minutes on 2 CPU cores: README gives the measured figure) and tiny (smallest sizes, for tests). Real runs use resnet50
                    (`byoc train`). With --backend sagemaker the same steps are SageMaker jobs and an endpoint.
                    """,
                    """
                    byoc pipeline
                    byoc pipeline --profile tiny --run-dir /tmp/byoc-tiny
                    byoc pipeline --restart                      # forget the state, run everything again
                    byoc pipeline --from-step train              # re-run train and everything after it
                    byoc pipeline --backend sagemaker --dry-run  # every AWS request the SageMaker run would make
                    """)
    p.add_argument("--profile", choices=tuple(PROFILES), default="demo")
    p.add_argument("--tiny", dest="profile", action="store_const", const="tiny", help="same as --profile tiny")
    p.add_argument("--data", help="use this dataset (folder or source name) instead of the profile's")
    p.add_argument("--restart", action="store_true", help="ignore finished steps and start over")
    p.add_argument("--from-step", help="re-run this step and every step after it")
    p.add_argument("--port", type=int, help="local endpoint port (default: a free one)")
    p.set_defaults(run=run)


def run(args, backend) -> int:
    from byoc.pipeline.runner import run_pipeline

    return run_pipeline(backend, profile=args.profile, data=args.data, restart=args.restart,
                        from_step=args.from_step, port=args.port)
