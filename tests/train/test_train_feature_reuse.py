"""A split the cache has not seen reuses the features of the images it already holds (issue 25): matched
by the bytes of each image, under an equal backbone and transform only, never for augmented views; and a
trial that waits for another process's cache lock records the wait as its own phase."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from byoc_common.architectures import split_backbone_head
from byoc_common.artifact import ModelConfig
from container_train.data import ImageFolderDataset, load_splits, scan_split
from container_train.feature_cache import (
    ExtractionStopped,
    FeatureCache,
    cached_split_features,
    files_fingerprint,
    split_specs,
)
from container_train.feature_reuse import sidecar_path
from tests.train.train_helpers import CACHE_ARCH, CACHE_CLASSES, StopAfter, add_odd_images, frozen_model

REPO = Path(__file__).resolve().parents[2]


class CountingExtractor(nn.Module):
    """The backbone, counting the images it is given: what an extraction really computed."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        return self.inner(x)


@pytest.fixture(scope="module")
def model():
    return frozen_model(0)


def features(cache_dir: Path, split, model, config, *, name: str = "train", views: int = 0, logs=None, stop=None):
    """(the split's FeatureSet through the cache, images the backbone computed for it)."""
    spec, transform = split_specs(model, CACHE_ARCH, config, [name], views=views)[name]
    counting = CountingExtractor(split_backbone_head(model, CACHE_ARCH)[0])
    fs = cached_split_features(FeatureCache(cache_dir), name, extractor=counting,
                               dataset=ImageFolderDataset(split, transform), samples=split.samples, root=split.root,
                               spec=spec, log=(logs.append if logs is not None else None), batch_size=16, stop=stop)
    return fs, counting.seen


def link_classes(src: Path, dest: Path, folders: list[str]) -> Path:
    """``dest/<folder>/*`` hard links of ``src/<folder>/*``: the pipeline's class subset (subset_dataset)."""
    for folder in folders:
        (dest / folder).mkdir(parents=True)
        for f in sorted((src / folder).iterdir()):
            os.link(f, dest / folder / f.name)
    return dest


def rows_by_inode(split, fs) -> dict[tuple[int, int], torch.Tensor]:
    skipped = {p for p, _ in fs.skipped_files}
    paths = [p for p, _ in split.samples if str(p) not in skipped]
    return {(os.stat(p).st_dev, os.stat(p).st_ino): row for p, row in zip(paths, fs.features[0], strict=True)}


def test_class_subset_computes_nothing_and_copies_the_rows_with_its_own_labels(cache_data, cache_config, model,
                                                                               tmp_path):
    cache = tmp_path / "cache"
    full = load_splits({"training": cache_data})["train"]
    donor, seen = features(cache, full, model, cache_config)
    assert seen == len(full.samples) == len(donor)
    assert sidecar_path(next(cache.glob("train-*.pt"))).is_file()

    folders = list(full.class_folders[1:])                     # labels 1, 2 there; 0, 1 here
    subset = scan_split("train", link_classes(cache_data / "train", tmp_path / "subset" / "train", folders))
    logs: list[str] = []
    fs, seen = features(cache, subset, model, cache_config, logs=logs)
    assert seen == 0
    n = len(subset.samples)
    assert f"feature cache: reused {n} of {n} images' features (same images, same backbone); computing 0" in logs
    donor_rows = rows_by_inode(full, donor)
    assert torch.equal(fs.features[0], torch.stack([donor_rows[k] for k in rows_by_inode(subset, fs)]))
    assert torch.equal(fs.labels, torch.tensor([label for _, label in subset.samples]))
    assert set(fs.labels.tolist()) == {0, 1} and fs.skipped_files == []

    # stored as the subset's own cache file, with its sidecar: the next ask is a plain hit
    assert len(list(cache.glob("train-*.images.json"))) == 2
    again, seen = features(cache, subset, model, cache_config)
    assert seen == 0 and torch.equal(again.features, fs.features) and torch.equal(again.labels, fs.labels)


def test_a_cache_file_from_before_sidecars_gets_one_on_its_next_hit(cache_data, cache_config, model, tmp_path):
    cache = tmp_path / "cache"
    valid = load_splits({"training": cache_data})["valid"]
    features(cache, valid, model, cache_config, name="valid")
    sidecar = sidecar_path(next(cache.glob("valid-*.pt")))
    rows = json.loads(sidecar.read_text())["rows"]
    sidecar.unlink()
    _, seen = features(cache, valid, model, cache_config, name="valid")
    assert seen == 0 and json.loads(sidecar.read_text())["rows"] == rows


def test_partial_overlap_computes_only_the_new_images(cache_data, cache_config, model, tmp_path):
    cache = tmp_path / "cache"
    splits = load_splits({"training": cache_data})
    donor, _ = features(cache, splits["train"], model, cache_config)
    # a "valid" split holding class 0's training images (linked) and class 0's validation images (new)
    folder = splits["train"].class_folders[0]
    mixed = tmp_path / "mixed" / "valid"
    link_classes(cache_data / "train", mixed, [folder])
    new = sorted((cache_data / "valid" / folder).iterdir())
    for f in new:
        shutil.copy2(f, mixed / folder / f"new-{f.name}")
    split = scan_split("valid", mixed)
    logs: list[str] = []
    fs, seen = features(cache, split, model, cache_config, name="valid", logs=logs)
    assert seen == len(new)
    assert any(f"reused {len(split.samples) - len(new)} of {len(split.samples)}" in line for line in logs), logs
    donor_rows = rows_by_inode(splits["train"], donor)
    for (path, _), row in zip(split.samples, fs.features[0], strict=True):
        key = (os.stat(path).st_dev, os.stat(path).st_ino)
        if not Path(path).name.startswith("new-"):
            assert torch.equal(row, donor_rows[key])
    # the computed rows are the images' own features: as an extraction from scratch gives them
    fresh, seen = features(tmp_path / "fresh-cache", split, model, cache_config, name="valid")
    assert seen == len(split.samples)
    torch.testing.assert_close(fs.features, fresh.features, rtol=1e-4, atol=1e-5)
    assert torch.equal(fs.labels, fresh.labels)


def test_another_image_size_reuses_nothing(cache_data, cache_config, model, tmp_path):
    cache = tmp_path / "cache"
    valid = load_splits({"training": cache_data})["valid"]
    features(cache, valid, model, cache_config, name="valid")
    bigger = ModelConfig(CACHE_ARCH, CACHE_CLASSES, image_size=40, resize_size=44)
    subset = scan_split("valid", link_classes(cache_data / "valid", tmp_path / "subset", list(valid.class_folders)))
    logs: list[str] = []
    _, seen = features(cache, subset, model, bigger, name="valid", logs=logs)
    assert seen == len(subset.samples)
    assert not any("reused" in line for line in logs), logs


def test_a_file_whose_bytes_changed_is_recomputed(cache_data, cache_config, model, tmp_path):
    data = Path(shutil.copytree(cache_data, tmp_path / "data"))
    cache = tmp_path / "cache"
    valid = load_splits({"training": data})["valid"]
    before, _ = features(cache, valid, model, cache_config, name="valid")
    victim = valid.samples[0][0]
    victim.write_bytes((data / "test" / valid.class_folders[0]).iterdir().__next__().read_bytes())
    valid = scan_split("valid", valid.root)
    logs: list[str] = []
    after, seen = features(cache, valid, model, cache_config, name="valid", logs=logs)
    assert seen == 1
    assert any(f"reused {len(valid.samples) - 1} of {len(valid.samples)}" in line for line in logs), logs
    assert not torch.equal(after.features[0, 0], before.features[0, 0])
    assert torch.equal(after.features[0, 1:], before.features[0, 1:])


def test_undecodable_files_are_skipped_as_before(cache_data, cache_config, model, tmp_path):
    data = Path(shutil.copytree(cache_data, tmp_path / "data"))
    kinds = add_odd_images(data / "valid" / scan_split("valid", data / "valid").class_folders[0])
    unreadable = sorted(name for name, kind in kinds.items() if kind == "unreadable")
    cache = tmp_path / "cache"
    valid = scan_split("valid", data / "valid")
    donor, _ = features(cache, valid, model, cache_config, name="valid")
    assert sorted(Path(p).name for p, _ in donor.skipped_files) == unreadable
    # the same files again (linked) as another split: every readable one reused, the unreadable ones
    # tried and skipped (as the same split at another path it would be a plain hit: the paths are relative)
    linked = scan_split("test", link_classes(valid.root, tmp_path / "linked", list(valid.class_folders)))
    fs, seen = features(cache, linked, model, cache_config, name="test")
    assert seen == 0
    assert [Path(p).name for p, _ in fs.skipped_files] == [Path(p).name for p, _ in donor.skipped_files]
    assert all(Path(p).is_relative_to(linked.root) for p, _ in fs.skipped_files)
    assert [r.split(":")[0] for _, r in fs.skipped_files] == [r.split(":")[0] for _, r in donor.skipped_files]
    assert torch.equal(fs.features, donor.features) and torch.equal(fs.labels, donor.labels)


def test_augmented_views_never_reuse_and_are_never_donors(cache_data, cache_config, model, tmp_path):
    cache = tmp_path / "cache"
    train = load_splits({"training": cache_data})["train"]
    _, seen = features(cache, train, model, cache_config, views=1)
    assert seen == len(train.samples)
    assert list(cache.glob("*.images.json")) == []            # augmented rows are no donors
    features(cache, train, model, cache_config, name="valid")  # an evaluation view of the same images
    logs: list[str] = []
    _, seen = features(cache, train, model, cache_config, views=2, logs=logs)
    assert seen == 2 * len(train.samples)
    assert not any("reused" in line for line in logs), logs


def test_a_stop_while_reusing_keeps_no_partial_and_the_restart_reuses_again(cache_data, cache_config, model,
                                                                            tmp_path):
    cache = tmp_path / "cache"
    splits = load_splits({"training": cache_data})
    features(cache, splits["train"], model, cache_config)
    mixed = tmp_path / "mixed"
    link_classes(cache_data / "train", mixed, list(splits["train"].class_folders))
    for folder in splits["valid"].class_folders:
        for f in (cache_data / "valid" / folder).iterdir():
            shutil.copy2(f, mixed / folder / f"new-{f.name}")
    split = scan_split("train", mixed)
    new = len(splits["valid"].samples)
    with pytest.raises(ExtractionStopped) as stopped:
        features(cache, split, model, cache_config, stop=StopAfter(0))
    assert stopped.value.kept_in == cache and list(cache.glob("*.partial.pt")) == []
    logs: list[str] = []
    fs, seen = features(cache, split, model, cache_config, logs=logs)
    assert seen == new and len(fs) == len(split.samples)
    assert not any("resuming" in line for line in logs), logs


# ---- the wait for another process's lock is a phase of its own --------------------------------

WAITER = textwrap.dedent("""
    import sys, types
    from pathlib import Path
    import torch
    from container_train import distributed, engine, head_features
    from container_train.data import load_splits
    from container_train.job_parts import Context, Data, Network
    from container_train.loader_limits import LoaderPlan
    from container_train.profiling import Phases, StepTimings
    from byoc_common.artifact import ModelConfig
    from tests.train.train_helpers import CACHE_ARCH, CACHE_CLASSES, frozen_model

    data, cache_dir, out = map(Path, sys.argv[1:])
    model = frozen_model(0)
    args = types.SimpleNamespace(arch=CACHE_ARCH, feature_cache_views=0, batch_size=16, seed=0, amp=False)
    phases = Phases(out)
    ctx = Context(args=args, paths=None, stop=engine.StopFlag(), device=torch.device("cpu"), precision=None,
                  ranks=distributed.SINGLE, phases=phases, timings=StepTimings(out))
    config = ModelConfig(CACHE_ARCH, CACHE_CLASSES, image_size=32, resize_size=36)
    parts = Data(class_names=[], config=config, plan=LoaderPlan(0), splits=load_splits({"training": data}))
    head_features.extract(ctx, parts, Network(model, model, model, True), cache_dir, ("valid",))
    phases.close()
""")


def _blocked_on(inode: int) -> bool:
    """Whether /proc/locks lists a request blocked ("->") on the file with this inode."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and fields[-3].rsplit(":", 1)[-1] == str(inode):
            return True
    return False


def test_waiting_for_another_process_lock_is_recorded_as_its_own_phase(cache_data, cache_config, model,
                                                                              tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    valid = load_splits({"training": cache_data})["valid"]
    spec, _ = split_specs(model, CACHE_ARCH, cache_config, ["valid"])["valid"]
    lock = FeatureCache(cache).path("valid", spec.key("valid", files_fingerprint(valid.samples, valid.root)))
    lock = lock.with_suffix(".lock")
    cache.mkdir()
    script = tmp_path / "waiter.py"
    script.write_text(WAITER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with open(lock, "a+") as held:                       # "another process" computing the cache
        fcntl.flock(held, fcntl.LOCK_EX)
        waiter = subprocess.Popen([sys.executable, str(script), str(cache_data), str(cache), str(out)], cwd=REPO,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not _blocked_on(os.fstat(held.fileno()).st_ino):
            assert waiter.poll() is None, waiter.communicate()
            assert time.monotonic() < deadline, "the waiter never asked for the lock"
            time.sleep(0.05)
        time.sleep(0.6)      # it is blocked now: hold on past the 0.5 s below which a wait is not reported
        fcntl.flock(held, fcntl.LOCK_UN)
    _, err = waiter.communicate(timeout=180)
    assert waiter.returncode == 0, err
    records = [json.loads(line) for line in (out / "profiler" / "phases.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in records] == ["waiting", "feature extraction"]   # written as each ends
    waiting, extraction = records
    assert waiting["seconds"] > 0.5
    assert extraction["start"] <= waiting["start"] + 0.002      # the wait happened inside the extraction block
    # (whose record leaves the wait's seconds out: tests/train/test_train_profiling.py)
