"""Real training jobs with the Debugger hook on every step, small enough for a shared 2-core machine:
what the rules and the profiler-report tests run their checks on."""

from __future__ import annotations

from pathlib import Path

TRAINER_BASE_HP = {
    "arch": "resnet18", "pretrained": "false", "freeze": "none", "batch-size": 8, "image-size": 32,
    "workers": 0, "debugger-save-interval": 1, "lr-scheduler": "none", "log-interval-s": 5,
    "checkpoint": "false", "seed": 7,
}


def make_rules_dataset(root: Path) -> Path:
    from byoc.datasets.synthetic import make_dataset

    make_dataset(root, num_classes=4, per_class=8, size=40)   # 4 training steps of 8 images per epoch
    return root


def channels(root: Path) -> dict[str, Path]:
    return {"training": root / "train", "validation": root / "valid"}


def run_trainer(job_dir: Path, dataset: Path, **hp):
    """A real local training job (process mode) with the Debugger hook saving every step."""
    from byoc.local.training_job import run_training_job

    result = run_training_job(job_dir, {**TRAINER_BASE_HP, **hp}, channels(dataset), timeout=900)
    assert result.returncode == 0, f"training job failed: {result.failure_reason}\n{result.log_text[-3000:]}"
    return result


def run_healthy_job(job_dir: Path, dataset: Path):
    """ResNet18 from random weights, full-batch SGD (the 32 training images in one step) at lr 0.003,
    12 epochs: the training loss falls step after step (1.65 -> 0.02 here). Mini-batches of 8 made the
    per-step loss jump between 0.15 and 1.5, and Overtraining's patience of 5 steps then fired or not
    by chance."""
    return run_trainer(job_dir, dataset, lr=0.003, epochs=12, **{"batch-size": 32})
