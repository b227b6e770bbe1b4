"""``byoc tune``: hyperparameter search (Optuna locally, a tuning job on SageMaker)."""

from __future__ import annotations

from byoc.cli.common import add_command, check_local_dataset, parse_hp, print_json
from byoc.cli.train import add_job_limit_options, add_scale_out_options, instance_count
from byoc.tuning.schema import DEFAULT_STUDY_NAME
from byoc.tuning.specs import DEFAULT_SPEC


def register(sub, common) -> None:
    p = add_command(sub, "tune", common, "hyperparameter search (Optuna locally, a tuning job on SageMaker)",
                    """
                    Search hyperparameters as described by a tuning spec (ranges, objective, strategy,
                    max jobs): a YAML file, or a built-in spec by name (tuning: the 2x2x2 grid on
                    ResNet50; local-demo: the pipeline's search). Locally each trial is a real training
                    job and trials are ranked by the objective parsed from the job log with the same regex
                    SageMaker uses; a killed run resumes. On SageMaker this creates a hyperparameter tuning
                    job on the training image.

                    A head-only spec (static freeze: head, nothing tuned that decides the
                    features) tunes on a features channel on SageMaker and locally with
                    --containers: one extraction job computes the backbone's features of the data
                    (or the run's earlier one with the same image, data and settings is reused),
                    every trial reads only its output, then the final training job runs on it
                    with the best hyperparameters and Debugger (--dry-run shows all three).

                    Several machines can work on one local study: give each `byoc tune` the same
                    --storage (a database every machine reaches, e.g. PostgreSQL) and --study-name, and
                    its own --out. Together they run the spec's max_jobs trials once, no trial twice;
                    each trial's job runs (and leaves its files) on the machine that took it.
                    """,
                    """
                    byoc tune --data data/demo --spec local-demo
                    byoc tune --data data/demo --max-jobs 8 --max-parallel-jobs 2 --hp arch=resnet18
                    byoc tune --backend sagemaker --data s3://bucket/byoc/run/data/ --spec my-spec.yaml
                    byoc tune --data data/demo --storage postgresql+psycopg2://byoc:PASSWORD@db-host/optuna
                    byoc tune --backend sagemaker --data s3://bucket/byoc/run/data/ --instance-count 2 --distribution torch_distributed
                    """)
    p.add_argument("--data", required=True, help="dataset folder (or s3:// prefix on SageMaker)")
    p.add_argument("--spec", default=DEFAULT_SPEC.stem,
                   help="tuning spec: a YAML file or a built-in name (default: %(default)s)")
    p.add_argument("--max-jobs", type=int, help="override the spec's max_jobs")
    p.add_argument("--max-parallel-jobs", type=int, help="override the spec's max_parallel_jobs")
    p.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE",
                   help="fixed (static) hyperparameter for every trial; repeatable")
    p.add_argument("--out", help="tuning output folder (default: RUN_DIR/tune)")
    p.add_argument("--storage", metavar="URL",
                   help="local: keep the study in this database (SQLAlchemy URL, e.g. "
                        "postgresql+psycopg2://user:password@host:5432/db) to share it with tuners on other "
                        "machines (default: OUT/study.db, SQLite)")
    p.add_argument("--study-name", metavar="NAME",
                   help=f"local: the study's name in --storage (default: {DEFAULT_STUDY_NAME})")
    add_scale_out_options(p, spec_default=True)
    add_job_limit_options(p, ("extraction", "trial", "final"))
    p.set_defaults(run=run)


def run(args, backend) -> int:
    check_local_dataset(backend, args.data)
    count = None if args.instance_count is None else instance_count(args.instance_count)
    print_json(backend.tune(args.data, args.spec, max_jobs=args.max_jobs, max_parallel_jobs=args.max_parallel_jobs,
                            static=parse_hp(args.hp), out_dir=args.out, instance_count=count,
                            distribution=args.distribution, storage=args.storage, study_name=args.study_name))
    return 0
