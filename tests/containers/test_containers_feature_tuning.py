"""Head-only tuning with the containers, as SageMaker runs it: one extraction job in the training image,
two trials that read only its `features` channel (the extraction's model.tar.gz), the final job on the
same channel, and the final artifact served by the serving image answering a known test image as the
trainer's own evaluation (the head on that image's features) does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from byoc.backends.local import LocalBackend
from byoc.datasets.synthetic import make_dataset
from byoc.local.endpoint import LocalEndpoint
from byoc.settings import load_settings
from byoc_common.artifact import load_model_artifact
from container_serve.model_form import BF16_MAX_PROBABILITY_DIFF

pytestmark = [pytest.mark.container, pytest.mark.slow]

SPEC = {
    "objective": {"metric": "validation:accuracy", "direction": "Maximize"},
    "strategy": "Grid", "max_parallel_jobs": 1, "early_stopping": "Off",
    "parameters": {"lr": {"type": "categorical", "values": [0.02, 0.1]}},
    "static": {"arch": "resnet18", "pretrained": False, "freeze": "head", "image-size": 32, "epochs": 2,
               "batch-size": 8, "workers": 0, "seed": 3, "debugger": False},
}


def _inputs(job_dir: Path) -> list[str]:
    return sorted(json.loads((job_dir / "input" / "config" / "inputdataconfig.json").read_text()))


def _most_confident_test_image(final_model_dir: Path, extraction_model_dir: Path):
    """(file, label, probability) of the test image the trained head is surest about, computed the way a
    features-channel job evaluates: the final model's head on the channel's test features."""
    model, classes, _ = load_model_artifact(final_model_dir)
    test = torch.load(extraction_model_dir / "test.pt", weights_only=True)
    with torch.no_grad():
        probs = torch.softmax(model.fc(test["features"][0]), dim=1)
    top = probs.max(dim=1)
    i = int(top.values.argmax())
    return test["files"][i], classes[int(top.indices[i])], float(top.values[i])


def test_extraction_then_two_trials_on_the_features_channel_then_the_final_job_served(
        train_image, serve_image, tmp_path, give_back_to_user):
    run = tmp_path / "run"
    give_back_to_user(train_image, run)
    data = tmp_path / "data"
    make_dataset(data, num_classes=3, per_class={"train": 12, "valid": 6, "test": 6}, size=40, seed=3)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    settings = load_settings(overrides={"containers": True, "run_dir": str(run), "train_image_local": train_image,
                                        "serve_image_local": serve_image}, environ={})

    result = LocalBackend(settings).tune(str(data), str(spec))

    extraction = Path(result.extraction_job)
    assert not result.features_reused
    assert _inputs(extraction) == ["test", "training", "validation"]            # the only job on the images
    assert "features of train 36 x 1 view(s), valid 18 x 1 view(s), test 18 x 1 view(s)" in \
        (extraction / "training.log").read_text()
    trials = sorted((run / "tune" / "trials").iterdir())
    assert len(trials) == 2
    for job in [*trials, Path(result.final.job_dir)]:
        log = (job / "training.log").read_text()
        assert _inputs(job) == ["features"], job
        assert "/opt/ml/input/data/features" in log and "train split:" not in log   # in the image, no images
        assert "feature cache on (the 'features' channel): training the head" in log
    assert result.final.test["images"] == 18

    again = LocalBackend(settings).tune(str(data), str(spec), final=False)      # same data, image, settings
    assert again.features_reused and again.extraction_job == result.extraction_job

    final_model = Path(result.final.model_dir)
    file, label, probability = _most_confident_test_image(final_model, extraction / "model")
    give_back_to_user(serve_image, tmp_path)
    with LocalEndpoint(model_root=final_model, multi_model=False, image=serve_image,
                       log_file=tmp_path / "endpoint.log") as endpoint:
        status, _, raw = endpoint.client.invoke((data / "test" / file).read_bytes(), "image/jpeg",
                                                accept="application/json")
        assert status == 200, f"{raw[:500]}\n{endpoint.log_text()[-4000:]}"
    answer = json.loads(raw)["predictions"][0]
    assert answer["label"] == label
    assert answer["probability"] == pytest.approx(probability, abs=BF16_MAX_PROBABILITY_DIFF)
