"""Head training on cached features matches the image loop, and the result is a normal artifact."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from byoc_common.artifact import load_model_artifact, save_model_artifact
from byoc_common.preprocessing import eval_transform
from container_train import engine
from container_train.data import ImageFolderDataset, SkipCounter, collate_skipping, train_transform
from container_train.feature_cache import (
    FeatureBatches,
    FeatureSet,
    enabled,
    features_for_splits,
    head_module,
)
from container_train.precision import choose_precision
from container_train.pretrained import set_train_mode
from tests.train.train_helpers import train_head_like_the_trainer

FLOAT32 = choose_precision(torch.device("cpu"), amp=False, freeze="none")

ARCH, EPOCHS, BATCH, SEED = "resnet18", 4, 8, 7


def _optim(head: nn.Module, steps_per_epoch: int):
    opt = torch.optim.SGD(head.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS * steps_per_epoch)
    return opt, sched, nn.CrossEntropyLoss(label_smoothing=0.1)


def _image_loop_head_only(model, splits, config):
    """The trainer's ordinary head-only loop (engine.train_one_epoch over image batches, whole
    frozen-backbone model per step), in the same per-epoch order the feature loop uses."""
    train = ImageFolderDataset(splits["train"], eval_transform(config))
    valid = DataLoader(ImageFolderDataset(splits["valid"], eval_transform(config)), batch_size=BATCH,
                       collate_fn=collate_skipping)
    steps = -(-len(train) // BATCH)
    opt, sched, crit = _optim(model.fc, steps)
    common = dict(criterion=crit, device=torch.device("cpu"), precision=FLOAT32, timings=None, skipped=SkipCounter(),
                  stop=engine.StopFlag())
    accs = []
    for epoch in range(1, EPOCHS + 1):
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(SEED + epoch - 1)).tolist()
        loader = DataLoader(train, batch_size=BATCH, sampler=order, collate_fn=collate_skipping)
        engine.train_one_epoch(model, loader, optimizer=opt, scheduler=sched, scaler=torch.amp.GradScaler(
            "cpu", enabled=False), epoch=epoch, epochs=EPOCHS, total_steps=steps, set_train_mode=set_train_mode,
            log_interval_s=60, **common)
        accs.append(engine.evaluate(model, valid, epoch=epoch, total_steps=len(valid), split="valid",
                                    **common).accuracy)
    return accs


def _feature_loop(model, splits, config, cache_dir, views=0):
    feats = features_for_splits(cache_dir, splits, model, ARCH, config, views=views, batch_size=16, log=None)
    head = head_module(model, ARCH)
    opt, sched, crit = _optim(head, -(-len(feats["train"]) // BATCH))
    accs = train_head_like_the_trainer(head, feats["train"], feats["valid"], epochs=EPOCHS, batch_size=BATCH,
                                       optimizer=opt, scheduler=sched, criterion=crit, seed=SEED)
    return accs, feats


def test_cached_head_training_matches_image_loop(cache_splits, cache_config, make_model, tmp_path):
    reference = make_model(0)
    ref_accs = _image_loop_head_only(reference, cache_splits, cache_config)
    model = make_model(0)
    accs, _ = _feature_loop(model, cache_splits, cache_config, tmp_path)
    assert accs == pytest.approx(ref_accs, abs=1 / 18 + 1e-9)     # at most one image differs
    assert accs[-1] > 1 / 3 + 0.2                                  # learned something (chance is 1/3)
    torch.testing.assert_close(model.fc.weight, reference.fc.weight, atol=1e-4, rtol=1e-3)
    # The backbone was not touched: only the head changed.
    fresh = make_model(0)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        if not name.startswith("fc."):
            assert torch.equal(a, b), name


def test_artifact_from_cached_training_predicts_like_the_trained_head(cache_splits, cache_config, make_model,
                                                                      tmp_path):
    model = make_model(0)
    _, feats = _feature_loop(model, cache_splits, cache_config, tmp_path / "cache")
    save_model_artifact(tmp_path / "model", model, cache_splits["train"].class_names, cache_config)
    loaded, classes, loaded_config = load_model_artifact(tmp_path / "model")
    assert classes == cache_splits["train"].class_names and loaded_config == cache_config
    valid = DataLoader(ImageFolderDataset(cache_splits["valid"], eval_transform(loaded_config)), batch_size=64,
                       collate_fn=collate_skipping)
    with torch.no_grad():
        served = torch.cat([loaded(b.images) for b in valid])
        from_head = model.fc(feats["valid"].view(0))
    torch.testing.assert_close(served, from_head, atol=1e-4, rtol=1e-4)
    assert torch.equal(served.argmax(1), from_head.argmax(1))


def test_augmented_views_are_distinct_and_cycled(cache_splits, cache_config, make_model, tmp_path):
    model = make_model(0)
    feats = features_for_splits(tmp_path, cache_splits, model, ARCH, cache_config, views=2, batch_size=16, log=None)
    train, valid = feats["train"], feats["valid"]
    assert train.num_views == 2 and valid.num_views == 1
    assert not torch.allclose(train.features[0], train.features[1])      # two different augmentations
    assert torch.equal(train.view(0), train.features[0]) and torch.equal(train.view(3), train.features[1])
    # Views are seeded: recomputing (new cache dir) gives the same tensors.
    again = features_for_splits(tmp_path / "again", cache_splits, make_model(0), ARCH, cache_config, views=2,
                                batch_size=16, log=None)
    torch.testing.assert_close(again["train"].features, train.features)
    # ... and they are not the evaluation view.
    evalv = features_for_splits(tmp_path / "eval", cache_splits, make_model(0), ARCH, cache_config, views=0,
                                batch_size=16, log=None)
    assert not torch.allclose(evalv["train"].features[0], train.features[0])
    assert repr(train_transform(cache_config)) != repr(eval_transform(cache_config))


def test_unreadable_images_are_skipped_and_counted(cache_data, tmp_path, cache_config, make_model):
    import shutil

    from container_train.data import load_splits

    data = tmp_path / "data"
    shutil.copytree(cache_data, data)
    bad = next((data / "train").iterdir()) / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    feats = features_for_splits(tmp_path / "cache", load_splits({"training": data}), make_model(0), ARCH,
                                cache_config, batch_size=4, log=None)
    assert feats["train"].skipped == 1 and len(feats["train"]) == 30
    assert feats["train"].skipped_files[0][0].endswith("broken.jpg")
    again = features_for_splits(tmp_path / "cache", load_splits({"training": data}), make_model(0), ARCH,
                                cache_config, batch_size=4, log=None)          # from the cache file
    assert again["train"].skipped_files == feats["train"].skipped_files
    first = next(iter(FeatureBatches(again["train"], 8, shuffle=True)))
    counter = SkipCounter()
    counter.add(first.skipped)                  # the trainer's counter sees it as in the image loop
    assert counter.count == 1


@pytest.mark.parametrize("freeze,value,expected", [
    ("head", "auto", True), ("layer4", "auto", False), ("none", "auto", False),
    ("head", "true", True), ("head", "false", False), ("head", "False", False),
])
def test_enabled_policy(freeze, value, expected):
    assert enabled(freeze, value) is expected


@pytest.mark.parametrize("freeze,value", [("layer4", "true"), ("head", "maybe")])
def test_enabled_rejects_impossible_settings(freeze, value):
    with pytest.raises(ValueError):
        enabled(freeze, value)


def test_feature_batches_split_like_a_dataloader_and_replay_after_resume():
    fs = FeatureSet(torch.arange(2 * 10 * 3, dtype=torch.float32).reshape(2, 10, 3), torch.arange(10))
    batches = FeatureBatches(fs, 4, shuffle=True, seed=5)
    assert len(batches) == 3
    epoch1, epoch2 = list(batches), list(batches)
    assert [len(b) for b in epoch1] == [4, 4, 2]
    labels1 = torch.cat([b.labels for b in epoch1])
    assert sorted(labels1.tolist()) == list(range(10))                   # a permutation of all samples
    assert not torch.equal(labels1, torch.cat([b.labels for b in epoch2]))  # reshuffled per epoch
    b = epoch2[0]
    torch.testing.assert_close(b.images, fs.features[1][b.labels])      # epoch 2 uses view 1
    resumed = FeatureBatches(fs, 4, shuffle=True, seed=5, first_epoch=1)
    assert all(torch.equal(x.images, y.images) for x, y in zip(list(resumed), epoch2, strict=True))
    fixed = list(FeatureBatches(fs, 4, shuffle=False))
    assert torch.equal(torch.cat([b.labels for b in fixed]), torch.arange(10))
