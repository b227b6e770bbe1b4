"""``byoc pipeline --backend sagemaker``: the same steps as the local pipeline, as SageMaker
resources. With ``--dry-run`` it prints every request and sends none (then nothing waits, and the
model artifact URIs are the ones SageMaker would write:
``<S3OutputPath>/<TrainingJobName>/output/model.tar.gz``).

Steps: upload data -> tuning job -> final training job with the best hyperparameters (Debugger
rules + profiler report) -> a second training job (resnet18, a different architecture) -> the
multi-model endpoint -> both artifacts under its prefix -> an invocation of each with TargetModel
-> a batch transform job over the test images -> a Grad-CAM explanation. ``byoc cleanup --backend
sagemaker`` deletes what it created.
"""

from __future__ import annotations

import json
from pathlib import Path

from scripts import sagemaker_backend as sm_backend
from scripts.aws import s3_data
from scripts.config import Settings
from scripts.progress import console


def _model_data(settings: Settings, train_result: dict) -> str:
    if train_result.get("model_data"):
        return train_result["model_data"]
    jobs = s3_data.join_s3(settings.s3_run_prefix, "jobs")
    return f"{jobs}/{train_result['training_job']}/output/model.tar.gz"


def run_sagemaker_pipeline(settings: Settings, profile, data: str | None = None) -> int:
    from scripts.pipeline import DEMO_SPEC, DEMO_STATIC_HPS

    run_dir = Path(settings.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    console.rule("[1/8] data: prepare locally, upload to S3")
    summary = sm_backend.data(settings, data or "auto", str(run_dir / "data"), num_classes=profile.num_classes,
                              per_class=profile.per_class, size=profile.image_size)
    console.print(summary.note)
    data_uri = sm_backend.data_uri(settings)
    static = {**DEMO_STATIC_HPS, "image-size": str(profile.train_size), "epochs": str(profile.tune_epochs)}

    console.rule("[2/8] tune: hyperparameter tuning job")
    tuned = sm_backend.tune(settings, data_uri, DEMO_SPEC, max_jobs=profile.tune_jobs,
                            max_parallel_jobs=profile.tune_parallel, static=static)
    best = tuned.get("best_hyperparameters") or {**static, "lr": "0.01", "batch-size": "32"}

    console.rule("[3/8] train: best hyperparameters, Debugger rules, profiler report")
    first = sm_backend.train(settings, data_uri, {**best, "epochs": str(profile.train_epochs)})
    console.rule("[4/8] train a second model (resnet18 from scratch)")
    second = sm_backend.train(settings, data_uri, {**best, "arch": "resnet18", "pretrained": "false",
                                                   "freeze": "none"})

    console.rule("[5/8] serve: multi-model endpoint, both artifacts under its prefix")
    sm_backend.serve(settings)
    targets = {}
    for name, result in (("demo-all", first), ("demo-resnet18", second)):
        targets[name] = sm_backend.deploy(settings, _model_data(settings, result), name)

    console.rule("[6/8] invoke each model")
    sample = next(Path(summary.root, "test").rglob("*.jpg"))
    for name in targets:
        _, body = sm_backend.invoke(settings, str(sample), name, None, "application/json", 3, False)
        if body:
            console.print(f"{name}: {json.loads(body)['predictions'][0]['label']}")

    console.rule("[7/8] batch transform job")
    batch_dir = Path(summary.root) / "test" / summary.classes[0]
    sm_backend.batch(settings, str(batch_dir), str(run_dir / "batch-output"), "demo-all",
                     _model_data(settings, first), "image/jpeg", "application/json", 6)

    console.rule("[8/8] explain")
    sm_backend.explain(settings, str(sample), "demo-all", None, str(run_dir / "explain.png"))
    console.print(f"created resources are listed in {run_dir / 'aws-resources.json'}; "
                  f"delete them with: byoc cleanup --backend sagemaker --run-dir {run_dir}")
    return 0
