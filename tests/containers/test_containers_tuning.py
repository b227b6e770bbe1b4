"""Container mode of the local tuner: every trial runs in the training image (docker run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from byoc.datasets.synthetic import make_dataset
from byoc.tuning.local_tuner import channels_from_data_dir, run_local_tuning
from byoc.tuning.spec import parse_spec

pytestmark = [pytest.mark.container, pytest.mark.slow]


def test_trials_run_in_the_training_image(train_image, tmp_path, give_back_to_user):
    give_back_to_user(train_image, tmp_path / "tune")
    data = tmp_path / "data"
    make_dataset(data, num_classes=3, per_class=6, size=32, seed=2)
    spec = parse_spec({
        "objective": {"metric": "validation:loss", "direction": "Minimize"},
        "strategy": "Grid", "max_parallel_jobs": 1, "early_stopping": "Off",
        "parameters": {"lr": {"type": "categorical", "values": [0.01, 0.02]}},
        "static": {"arch": "resnet18", "pretrained": False, "freeze": "none", "image-size": 32, "epochs": 1,
                   "batch-size": 8, "workers": 0, "debugger": False},
    })
    result = run_local_tuning(spec, channels_from_data_dir(data), tmp_path / "tune", image=train_image,
                              progress=False)

    assert result.counts["complete"] == 2, result.leaderboard
    for row in result.leaderboard:
        job_dir = Path(row["job_dir"])
        # The job ran inside the image (/opt/ml paths in its log) and left its model behind.
        assert "/opt/ml/input/data/training" in (job_dir / "training.log").read_text()
        assert (job_dir / "model" / "model.pth").is_file()
