"""``byoc train``: one training job (with the Debugger hook and the profiler)."""

from __future__ import annotations

from byoc.cli.common import UsageError, add_command, check_local_dataset, parse_hp, print_json
from byoc.tuning.schema import DISTRIBUTIONS

SCALE_OUT_HELP = ("The global batch is batch-size x world size (hosts x devices per host); the learning "
                  "rate stays the one you give: scale it yourself if you want.")


def add_scale_out_options(p, spec_default: bool) -> None:
    """--instance-count and --distribution (train and tune): the hosts of a job and their launcher."""
    default = "the spec's instance_count" if spec_default else "1"
    p.add_argument("--instance-count", type=int, metavar="N", default=None,
                   help=f"hosts per training job (SageMaker ResourceConfig.InstanceCount; default: {default}). "
                        + SCALE_OUT_HELP)
    p.add_argument("--distribution", choices=tuple(DISTRIBUTIONS),
                   help="how SageMaker launches a multi-host or multi-GPU job: torch_distributed is the "
                        "torchrun launcher the PyTorch estimator's distribution={'torch_distributed': "
                        "{'enabled': True}} selects (default: " + ("the spec's; " if spec_default else "")
                        + "none, the image decides)")


def add_job_limit_options(p, kinds: tuple[str, ...]) -> None:
    """SageMaker: each job kind's time limit (--max-runtime for the one job of `byoc train`), managed spot
    and checkpoints (settings max_runtime_<kind>_s, spot, max_wait_s, checkpoint_s3_uri)."""
    g = p.add_argument_group("SageMaker job limits, spot and checkpoints (or set them in byoc.yaml)")
    for kind in kinds:
        flag = "--max-runtime" if kinds == ("final",) else f"--max-runtime-{kind}"
        what = "training job" if kinds == ("final",) else f"{kind} job{'s' if kind == 'trial' else ''}"
        g.add_argument(flag, dest=f"max_runtime_{kind}_s", type=int, metavar="SECONDS",
                       help=f"MaxRuntimeInSeconds of the {what} (default "
                            "86400, the SageMaker Python SDK's; a job stopped at it keeps the model it saved)")
    g.add_argument("--spot", action="store_true", default=None,
                   help="managed spot training (EnableManagedSpotTraining); jobs checkpoint to S3 and resume")
    g.add_argument("--max-wait", dest="max_wait_s", type=int, metavar="SECONDS",
                   help="with --spot: MaxWaitTimeInSeconds, >= the runtime (default: twice the runtime)")
    g.add_argument("--checkpoint-s3-uri", metavar="S3_URI",
                   help="checkpoint base: each job syncs /opt/ml/checkpoints with <base>/<job name>/ "
                        "(default with --spot: the run's jobs/checkpoints/)")


def register(sub, common) -> None:
    p = add_command(sub, "train", common, "one training job (with Debugger hook and profiler)",
                    """
                    Run one training job: the trainer in a SageMaker-shaped /opt/ml tree (process mode, or
                    the training image with --containers), or a SageMaker training job with the Debugger
                    hook, the built-in rules and the profiler report. Hyperparameters are the trainer's
                    (`python -m container_train.train --help`): lr, batch-size, epochs, arch, freeze, ...
                    --from-tuning takes the best hyperparameters of a finished `byoc tune`. Locally,
                    --stop-on RULE watches the job's Debugger tensors and stops the job when the rule
                    fires (SageMaker's StopTraining rule action); the job saves its checkpoint and model.
                    --instance-count N trains data-parallel on N hosts (each with all its GPUs):
                    the global batch is batch-size x world size; the learning rate is yours to choose.
                    """,
                    """
                    byoc train --data data/demo --hp arch=efficientnet_lite0 --hp freeze=head --hp epochs=3
                    byoc train --data data/demo --from-tuning runs/pipeline/tune --job-dir runs/best
                    byoc train --data data/demo --hp lr=5 --stop-on LossNotDecreasing,ExplodingTensor
                    byoc train --backend sagemaker --data s3://bucket/byoc/run/data/ --hp epochs=5
                    byoc train --backend sagemaker --data s3://bucket/byoc/run/data/ --instance-count 2 --distribution torch_distributed --hp batch-size=32
                    """)
    p.add_argument("--data", required=True, help="dataset folder holding train/ valid/ test/ (or s3:// prefix)")
    p.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE", help="hyperparameter; repeatable")
    p.add_argument("--from-tuning", metavar="DIR", help="start from the best hyperparameters in this tuning folder")
    p.add_argument("--job-dir", help="local job folder (default: RUN_DIR/train)")
    p.add_argument("--stop-on", metavar="RULE[,RULE]", default="",
                   help="local: stop the job when one of these Debugger rules fires")
    p.add_argument("--rule-param", action="append", default=[], metavar="RULE.NAME=VALUE",
                   help="a --stop-on rule's parameter, SageMaker's names (e.g. LossNotDecreasing.num_steps=4)")
    p.add_argument("--no-debugger", dest="debugger", action="store_false",
                   help="no Debugger hook (hyperparameter debugger=false); on SageMaker also no built-in "
                        "rules and no profiler")
    add_scale_out_options(p, spec_default=False)
    add_job_limit_options(p, ("final",))
    p.set_defaults(run=run)


def run(args, backend) -> int:
    hps = training_hyperparameters(args.from_tuning, args.hp)      # before any job, on every backend
    check_local_dataset(backend, args.data)
    print_json(backend.train(args.data, hps, job_dir=args.job_dir, stop_on=stop_rules(args.stop_on, args.rule_param),
                             debugger=args.debugger, instance_count=instance_count(args.instance_count),
                             distribution=args.distribution))
    return 0


def training_hyperparameters(from_tuning: str | None, items: list[str]):
    """``--from-tuning`` DIR's best hyperparameters with the ``--hp`` values on top, checked against the
    trainer's table here, so a typo costs no job (:class:`~container_train.hyperparameters.Hyperparameters`)."""
    from byoc.tuning.best import read_best_hyperparameters
    from container_train.hyperparameters import HyperparameterError, Hyperparameters

    base = read_best_hyperparameters(from_tuning) if from_tuning else Hyperparameters.parse({})
    try:
        return base | parse_hp(items)
    except HyperparameterError as e:
        raise UsageError(f"--hp: {e}") from None


def instance_count(value: int | None, default: int = 1) -> int:
    if value is None:
        return default
    if value < 1:
        raise UsageError(f"--instance-count {value}: a job needs at least one host")
    return value


def stop_rules(names: str, params: list[str]) -> dict[str, dict[str, str]]:
    """``"A,B"`` and ``["A.x=1"]`` -> ``{"A": {"x": "1"}, "B": {}}``."""
    rules: dict[str, dict[str, str]] = {n.strip(): {} for n in names.split(",") if n.strip()}
    for item in params:
        key, sep, value = item.partition("=")
        rule, dot, name = key.partition(".")
        if not sep or not dot:
            raise UsageError(f"--rule-param {item!r}: expected RULE.NAME=VALUE")
        if rule not in rules:
            raise UsageError(f"--rule-param {item!r}: {rule} is not a --stop-on rule")
        rules[rule][name] = value
    return rules
