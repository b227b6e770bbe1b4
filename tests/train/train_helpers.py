"""Helpers for the trainer tests (fixtures live in conftest.py and use these)."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch import nn

from byoc_common.architectures import build_classifier
from container_train import engine
from container_train.data import SkipCounter
from container_train.feature_cache import FeatureBatches, FeatureSet
from container_train.precision import choose_precision
from container_train.pretrained import apply_freeze_policy

FLOAT32 = choose_precision(torch.device("cpu"), amp=False, freeze="none")

# Small and fast: resnet18 at 32 px, a couple of epochs, no DataLoader workers unless a test needs them.
FAST_HP = {
    "arch": "resnet18",
    "pretrained": False,
    "freeze": "none",
    "epochs": 2,
    "image-size": 32,
    "batch-size": 16,
    "workers": 0,
    "lr": 0.05,
    "log-interval-s": 1,
}

CACHE_ARCH = "resnet18"
CACHE_CLASSES = 3


def add_odd_images(folder: Path, size: int = 48) -> dict[str, str]:
    """Readable images in unusual modes plus two unreadable files. Returns name -> kind."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("L", (size, size), 128).save(folder / "gray.png")
    Image.new("CMYK", (size, size), (10, 200, 30, 0)).save(folder / "cmyk.jpg")
    Image.new("RGBA", (size, size), (255, 0, 0, 100)).save(folder / "rgba.png")
    Image.new("P", (size, size), 3).save(folder / "palette.gif")
    Image.new("I;16", (size, size), 300).save(folder / "gray16.png")
    good = folder / "whole.jpg"
    Image.effect_noise((size, size), 40).convert("RGB").save(good, quality=95)
    data = good.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    good.unlink()
    (folder / "notes.jpg").write_text("this is a text file with an image extension\n")
    return {"gray.png": "ok", "cmyk.jpg": "ok", "rgba.png": "ok", "palette.gif": "ok", "gray16.png": "ok",
            "truncated.jpg": "unreadable", "notes.jpg": "unreadable"}


def frozen_model(seed: int = 0) -> nn.Module:
    """A randomly initialised (seeded) resnet18 classifier frozen for head-only training."""
    torch.manual_seed(seed)
    model = build_classifier(CACHE_ARCH, CACHE_CLASSES)
    apply_freeze_policy(model, CACHE_ARCH, "head")
    return model


class StopAfter(engine.StopFlag):
    """A stop flag that reads as set from its ``n + 1``-th check on: a SIGTERM arriving after
    exactly ``n`` batches, without a signal or a timer."""

    def __init__(self, n: int):
        super().__init__()
        self.checks_left = n
        self.reason = "SIGTERM"

    def __bool__(self) -> bool:
        self.checks_left -= 1
        return self.checks_left < 0


def train_head_like_the_trainer(head: nn.Module, train: FeatureSet, valid: FeatureSet, *, epochs: int,
                                batch_size: int, optimizer, scheduler, criterion, seed: int) -> list[float]:
    """What ``container_train.train`` does with ``freeze=head``: its epoch loop (engine.train_one_epoch
    and engine.evaluate) over :class:`FeatureBatches`. Returns the validation accuracy per epoch."""
    train_batches = FeatureBatches(train, batch_size, shuffle=True, seed=seed)
    valid_batches = FeatureBatches(valid, batch_size, shuffle=False)
    common = dict(criterion=criterion, device=torch.device("cpu"), precision=FLOAT32, timings=None, skipped=SkipCounter(),
                  stop=engine.StopFlag())
    accuracies = []
    for epoch in range(1, epochs + 1):
        engine.train_one_epoch(head, train_batches, optimizer=optimizer, scheduler=scheduler,
                               scaler=torch.amp.GradScaler("cpu", enabled=False), epoch=epoch, epochs=epochs,
                               total_steps=len(train_batches), set_train_mode=lambda m: m.train(),
                               log_interval_s=60, **common)
        accuracies.append(engine.evaluate(head, valid_batches, epoch=epoch, total_steps=len(valid_batches),
                                          split="valid", **common).accuracy)
    return accuracies
