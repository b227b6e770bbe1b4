"""``byoc report``: Debugger rules and the profiler report of a finished job."""

from __future__ import annotations

import os

from byoc.cli.common import add_command, print_json


def register(sub, common) -> None:
    p = add_command(sub, "report", common, "Debugger rules + profiler report for a finished job",
                    """
                    Evaluate the Debugger rules (vanishing gradient, exploding tensor, loss not decreasing,
                    overfit, overtraining, poor weight initialization) on the job's saved tensors and write the
                    self-contained profiler-report.html from its step timings and system samples. On SageMaker,
                    --job-dir is the training job's name: its rule statuses and the ProfilerReport's HTML.
                    """,
                    """
                    byoc report --job-dir runs/pipeline/train
                    byoc report --backend sagemaker --job-dir byoc-pipeline-train-261201-101500
                    """)
    p.add_argument("--job-dir", required=True, help="local training job folder (SageMaker: the job name)")
    p.set_defaults(run=run)


def run(args, backend) -> int:
    os.environ.setdefault("SMDEBUG_LOG_LEVEL", "warning")  # smdebug logs every rule step at INFO
    print_json(backend.report(args.job_dir))
    return 0
