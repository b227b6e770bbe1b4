"""Which specs tune on a features channel, what the extraction job gets, and when an extraction is reused."""

from __future__ import annotations

import os

import pytest

from byoc.tuning.features_flow import blocker, extraction_hyperparameters, features_key, folder_version
from byoc.tuning.spec import load_spec, parse_spec, to_dict
from byoc.tuning.specs import DEMO_SPEC


@pytest.fixture
def demo():
    return load_spec(DEMO_SPEC)


def test_the_demo_search_is_head_only(demo):
    assert blocker(demo) is None


@pytest.mark.parametrize(("static", "reason"), [
    ({"freeze": "layer4"}, "trains backbone layers (freeze=layer4)"),
    ({"feature-cache": "false"}, "feature cache off"),
])
def test_a_spec_that_needs_the_images_says_why(demo, static, reason):
    assert reason in blocker(demo.with_overrides(static=static))


def test_tuning_what_decides_the_features_needs_the_images(demo):
    d = to_dict(demo)
    d["parameters"]["image-size"] = {"type": "categorical", "values": [64, 96]}
    d["static"].pop("image-size")
    assert "tunes image-size, which decide the features" in blocker(parse_spec(d))


def test_the_extraction_job_takes_what_decides_the_features_and_not_the_search(demo):
    hps = extraction_hyperparameters(demo.with_overrides(static={"workers": 1, "seed": 3}))
    assert hps == {"arch": "efficientnet_lite0", "pretrained": "true", "image-size": "96", "resize-size": "96",
                   "workers": "1", "seed": "3", "task": "extract-features", "freeze": "head",
                   "debugger": "false", "checkpoint": "true"}
    assert "lr" not in hps and "epochs" not in hps and "label-smoothing" not in hps


def test_the_key_changes_with_the_image_the_data_and_the_settings(tmp_path, demo):
    (tmp_path / "train" / "a").mkdir(parents=True)
    image = tmp_path / "train" / "a" / "0.jpg"
    image.write_bytes(b"jpeg")
    hps = extraction_hyperparameters(demo)
    before = features_key("byoc-train:1", folder_version(tmp_path), hps)
    assert before == features_key("byoc-train:1", folder_version(tmp_path), hps)
    assert before != features_key("byoc-train:2", folder_version(tmp_path), hps)
    assert before != features_key("byoc-train:1", folder_version(tmp_path), {**hps, "image-size": "64"})
    os.utime(image, ns=(1, 1))                                   # a replaced or touched image
    assert before != features_key("byoc-train:1", folder_version(tmp_path), hps)


def test_the_key_changes_with_the_features_format(monkeypatch, demo):
    """An image tag or a process-mode run names no code version: a trainer whose features are another
    format (2 added the backbone's dtype) must not be handed an older extraction job's channel."""
    from byoc.tuning import features_flow

    hps = extraction_hyperparameters(demo)
    before = features_key("process mode", "data", hps)
    monkeypatch.setattr(features_flow, "FEATURE_FORMAT_VERSION", features_flow.FEATURE_FORMAT_VERSION + 1)
    assert before != features_key("process mode", "data", hps)
