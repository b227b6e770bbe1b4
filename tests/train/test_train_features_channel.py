"""Features as a dataset: a task=extract-features job writes every split's backbone features, and a
head-only job given them as its `features` channel trains without reading an image, exactly as the
same job on the images with the feature cache does, and saves the full classifier."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
import torch

from byoc.local.training_job import run_training_job
from byoc.packaging import package_job_output
from byoc_common.artifact import load_model_artifact
from container_train import contract
from container_train.features_dataset import FeaturesChannelError, locate
from tests.helpers.training_jobs import channels

HEAD_ONLY = {"arch": "resnet18", "pretrained": "false", "freeze": "head", "image-size": "32", "batch-size": "8",
             "epochs": "2", "workers": "0", "lr": "0.05", "seed": "7", "log-interval-s": "5", "debugger": "false"}


def _ok(result):
    assert result.returncode == 0, f"{result.failure_reason}\n{result.log_text[-3000:]}"
    return result


@pytest.fixture(scope="module")
def extraction(tiny_dataset, tmp_path_factory):
    job = tmp_path_factory.mktemp("extract")
    data = {"training": tiny_dataset / "train", "validation": tiny_dataset / "valid", "test": tiny_dataset / "test"}
    result = _ok(run_training_job(job, {**HEAD_ONLY, "task": "extract-features"}, data, timeout=600))
    return result


def test_extraction_writes_every_split_with_its_fingerprint(extraction):
    manifest = json.loads((extraction.model_dir / contract.FEATURES_MANIFEST).read_text())
    assert manifest["class_names"] == ["Class_a", "Class_b", "Class_c", "Class_d"]     # as the artifact names them
    assert {n: (e["images"], e["views"], e["dim"]) for n, e in manifest["splits"].items()} == {
        "train": (32, 1, 512), "valid": (16, 1, 512), "test": (16, 1, 512)}
    fingerprint = manifest["splits"]["train"]["fingerprint"]
    assert fingerprint["arch"] == "resnet18" and fingerprint["image_size"] == 32 and fingerprint["views"] == 0
    assert fingerprint["torch_version"] == torch.__version__
    assert extraction.metrics["task"] == "extract-features" and extraction.metrics["status"] == "completed"
    test = torch.load(extraction.model_dir / "test.pt", weights_only=True)
    assert test["files"][:2] == ["001.Class_a/0000.jpg", "001.Class_a/0001.jpg"]      # row i is that image
    assert len(test["files"]) == len(test["labels"]) == 16
    assert not contract.parse_metric("validation:accuracy", extraction.log_text)   # no training happened


def test_a_features_channel_trains_the_head_like_the_images_do(extraction, tiny_dataset, tmp_path):
    channel = package_job_output(extraction.model_dir, tmp_path / "channel" / "model.tar.gz").parent
    from_features = _ok(run_training_job(tmp_path / "features-job", HEAD_ONLY, {"features": channel}, timeout=600))
    data = {**channels(tiny_dataset), "test": tiny_dataset / "test"}
    from_images = _ok(run_training_job(tmp_path / "images-job", HEAD_ONLY, data, timeout=600))

    assert "training the head on cached backbone features" in from_features.log_text
    assert "train split:" not in from_features.log_text          # no image split was scanned
    for metric in ("validation:accuracy", "validation:loss", "test:accuracy"):
        got, want = (contract.parse_metric(metric, r.log_text) for r in (from_features, from_images))
        assert len(got) == len(want) > 0
        assert got == pytest.approx(want, abs=1e-4), metric
    assert from_features.metrics["features_channel"] is True
    assert from_features.metrics["images"] == {"train": 32, "valid": 16, "test": 16}

    # The artifact is the whole classifier, and it gives the test images the test features' answers.
    model, classes, config = load_model_artifact(from_features.model_dir)
    reference, _, _ = load_model_artifact(from_images.model_dir)
    assert classes == json.loads((extraction.model_dir / contract.FEATURES_MANIFEST).read_text())["class_names"]
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, reference.state_dict()[name], atol=1e-5, rtol=1e-4, msg=name)


def test_a_channel_for_another_input_size_fails_with_what_differs(extraction, tmp_path):
    result = run_training_job(tmp_path / "job", {**HEAD_ONLY, "image-size": "40"},
                              {"features": extraction.model_dir}, timeout=600)
    assert result.returncode == 1
    assert "image_size: channel 32, this job 40" in result.failure_reason
    assert "transform:" in result.failure_reason


def test_a_channel_needs_a_head_only_job(extraction, tmp_path):
    result = run_training_job(tmp_path / "job", {**HEAD_ONLY, "freeze": "layer4"},
                              {"features": extraction.model_dir}, timeout=600)
    assert result.returncode == 1
    assert "needs freeze=head" in result.failure_reason


def test_an_archive_with_a_path_out_of_the_folder_is_refused(tmp_path):
    channel = tmp_path / "channel"
    channel.mkdir()
    with tarfile.open(channel / "model.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("../escape.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(FeaturesChannelError, match="not a plain file or folder inside the archive"):
        locate(channel, tmp_path / "scratch")
    assert not (tmp_path / "escape.json").exists()


def test_a_channel_without_features_says_what_it_found(tmp_path):
    channel = tmp_path / "channel"
    channel.mkdir()
    (channel / "notes.txt").write_text("hello")
    with pytest.raises(FeaturesChannelError, match="found: notes.txt"):
        locate(channel, tmp_path / "scratch")
