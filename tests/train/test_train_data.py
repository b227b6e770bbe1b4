import shutil

import pytest
import torch

from byoc_common.artifact import ModelConfig
from byoc_common.preprocessing import eval_transform
from container_train.data import (
    ImageFolderDataset,
    SkipCounter,
    class_name_from_folder,
    collate_skipping,
    load_splits,
    make_loader,
    scan_split,
)
from container_train.errors import DataError
from container_train.loader_limits import LoaderPlan
from tests.train.train_helpers import add_odd_images

CONFIG = ModelConfig(arch="resnet18", num_classes=4, image_size=32, resize_size=36)


@pytest.mark.parametrize("folder, name", [("001.Affenpinscher", "Affenpinscher"),
                                          ("117.Norwegian_buhund", "Norwegian_buhund"),
                                          ("cats", "cats"), ("2020.10", "10")])
def test_class_name_from_folder(folder, name):
    assert class_name_from_folder(folder) == name


def test_one_training_channel_holding_train_valid_test(tiny_dataset):
    splits = load_splits({"training": tiny_dataset})
    assert set(splits) == {"train", "valid", "test"}
    assert splits["train"].class_names == ["Class_a", "Class_b", "Class_c", "Class_d"]
    assert len(splits["train"].samples) == 32 and len(splits["valid"].samples) == 16


def test_separate_channels_and_optional_test(tiny_dataset):
    splits = load_splits({"training": tiny_dataset / "train", "validation": tiny_dataset / "valid"})
    assert set(splits) == {"train", "valid"}
    assert splits["valid"].root == tiny_dataset / "valid"


def test_class_mismatch_names_the_classes(dataset_copy):
    shutil.rmtree(dataset_copy / "valid" / "003.Class_c")
    (dataset_copy / "valid" / "009.Extra").mkdir()
    shutil.copy(next((dataset_copy / "valid" / "001.Class_a").iterdir()), dataset_copy / "valid" / "009.Extra")
    with pytest.raises(DataError, match=r"missing from valid: 003.Class_c; only in valid: 009.Extra"):
        load_splits({"training": dataset_copy})


@pytest.mark.parametrize("channels, message", [
    ({}, "'training' channel is missing"),
    ({"training": "EMPTY"}, "'training' channel is empty"),
    ({"training": "TRAIN_ONLY"}, "no validation data"),
])
def test_missing_or_empty_channels(channels, message, tmp_path, tiny_dataset):
    (tmp_path / "empty").mkdir()
    paths = {"EMPTY": tmp_path / "empty", "TRAIN_ONLY": tiny_dataset / "train"}
    with pytest.raises(DataError, match=message):
        load_splits({k: paths[v] for k, v in channels.items()})


def test_split_with_class_folders_but_no_images(tmp_path):
    for c in ("001.a", "002.b"):
        (tmp_path / "valid" / c).mkdir(parents=True)
        (tmp_path / "valid" / c / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="valid split has no images"):
        scan_split("valid", tmp_path / "valid")


def test_unusual_modes_load_as_rgb_and_unreadable_files_are_skipped(tmp_path):
    expected = add_odd_images(tmp_path / "split" / "001.Odd")
    add_odd_images(tmp_path / "split" / "002.Odd2")
    split = scan_split("train", tmp_path / "split")
    dataset = ImageFolderDataset(split, eval_transform(CONFIG))
    for i, (path, _label) in enumerate(split.samples):
        sample, _, reason = dataset[i]
        if expected[path.name] == "ok":
            assert sample is not None, f"{path.name}: {reason}"
            assert sample[0].shape == (3, 32, 32) and sample[0].dtype == torch.float32
        else:
            assert sample is None and reason, path.name

    counter = SkipCounter()
    seen = 0
    for batch in make_loader(dataset, batch_size=5, shuffle=False, plan=LoaderPlan(0), seed=0):
        counter.add(batch.skipped)
        seen += len(batch)
        assert batch.images.shape[0] == batch.labels.shape[0]
    assert counter.count == 4 and seen == len(split.samples) - 4


def test_skipped_files_are_reported_from_dataloader_workers(tmp_path):
    add_odd_images(tmp_path / "split" / "001.Odd")
    add_odd_images(tmp_path / "split" / "002.Odd2")
    dataset = ImageFolderDataset(scan_split("train", tmp_path / "split"), eval_transform(CONFIG))
    counter = SkipCounter()
    for batch in make_loader(dataset, batch_size=4, shuffle=True, plan=LoaderPlan(2, 2, timeout_s=600.0), seed=0):
        counter.add(batch.skipped)
    assert counter.count == 4
    assert {p.rsplit("/", 1)[-1] for p in counter.files} == {"truncated.jpg", "notes.jpg"}


def test_a_batch_of_only_unreadable_files_is_empty_not_an_error():
    batch = collate_skipping([(None, "a.jpg", "bad"), (None, "b.jpg", "bad")])
    assert len(batch) == 0 and len(batch.skipped) == 2
