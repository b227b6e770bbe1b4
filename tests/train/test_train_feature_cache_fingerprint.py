"""The cache key must change whenever the features could change, and only then."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from byoc_common.architectures import head_name
from container_train.data import load_splits
from container_train.feature_cache import (
    FeatureCache,
    FeatureSet,
    FeatureSpec,
    features_for_splits,
    files_fingerprint,
    weights_fingerprint,
)

ARCH = "resnet18"


def _spec(**over):
    base = dict(arch=ARCH, weights_sha256="w" * 64, image_size=32, resize_size=36, transform="T", views=0)
    base.update(over)
    return FeatureSpec(**base)


def test_files_fingerprint_tracks_content_names_labels_and_is_mount_independent(cache_data, tmp_path):
    train = load_splits({"training": cache_data})["train"]
    fp = files_fingerprint(train.samples, train.root)
    assert fp == files_fingerprint(train.samples, train.root)

    copy = tmp_path / "copy"
    shutil.copytree(cache_data, copy)       # copy2 keeps mtimes: same data at another path
    train2 = load_splits({"training": copy})["train"]
    assert files_fingerprint(train2.samples, train2.root) == fp

    relabelled = [(p, (label + 1) % 3) for p, label in train2.samples]
    assert files_fingerprint(relabelled, train2.root) != fp
    assert files_fingerprint(train2.samples[:-1], train2.root) != fp

    victim = train2.samples[0][0]
    st = os.stat(victim)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))   # touched
    assert files_fingerprint(train2.samples, train2.root) != fp
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert files_fingerprint(train2.samples, train2.root) == fp
    with open(victim, "ab") as f:                                          # content grew
        f.write(b"\0")
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert files_fingerprint(train2.samples, train2.root) != fp


def test_weights_fingerprint_ignores_head_but_not_backbone(make_model):
    a, b = make_model(0), make_model(0)
    head = head_name(ARCH)
    assert weights_fingerprint(a, head) == weights_fingerprint(b, head)
    with torch.no_grad():
        b.fc.weight.add_(1.0)
    assert weights_fingerprint(a, head) == weights_fingerprint(b, head)
    assert weights_fingerprint(a) != weights_fingerprint(b)      # head counted when not excluded
    with torch.no_grad():
        b.layer1[0].conv1.weight[0, 0, 0, 0] += 1e-3
    assert weights_fingerprint(a, head) != weights_fingerprint(b, head)
    c = make_model(0)                                            # buffers count too
    with torch.no_grad():
        c.bn1.running_var[0] += 0.5
    assert weights_fingerprint(a, head) != weights_fingerprint(c, head)
    assert weights_fingerprint(a, head) != weights_fingerprint(make_model(1), head)  # other random init


@pytest.mark.parametrize("field,value", [
    ("arch", "resnet34"), ("weights_sha256", "v" * 64), ("image_size", 64), ("resize_size", 40),
    ("transform", "T2"), ("views", 2), ("torch_version", "0.0.0"), ("format_version", 99),
])
def test_spec_key_changes_with_every_field(field, value):
    assert _spec().key("train", "f") != _spec(**{field: value}).key("train", "f")


def test_spec_key_depends_on_split_and_files():
    assert _spec().key("train", "f") == _spec().key("train", "f")
    assert _spec().key("train", "f") != _spec().key("valid", "f")
    assert _spec().key("train", "f") != _spec().key("train", "g")


def test_changed_data_or_weights_recompute_and_unchanged_reuse(cache_data, tmp_path, cache_config, make_model):
    data = tmp_path / "data"
    shutil.copytree(cache_data, data)
    cache_dir = tmp_path / "cache"
    logs: list[str] = []

    def run(model):
        logs.clear()
        features_for_splits(cache_dir, load_splits({"training": data}), model, ARCH, cache_config,
                            batch_size=16, log=logs.append)
        return sum("wrote" in line for line in logs), sum("hit" in line for line in logs)

    assert run(make_model(0)) == (2, 0)          # train + valid computed
    assert run(make_model(0)) == (0, 2)          # same data, same backbone: both reused
    assert run(make_model(3)) == (2, 0)          # other backbone weights
    extra = next((data / "valid").iterdir()) / "extra.jpg"
    shutil.copy(next((data / "train").rglob("*.jpg")), extra)
    assert run(make_model(0)) == (1, 1)          # only the changed valid split is recomputed


def test_stale_or_garbled_file_is_recomputed(tmp_path):
    cache = FeatureCache(tmp_path)
    fs = FeatureSet(torch.randn(1, 4, 8), torch.tensor([0, 1, 0, 1]))
    got, computed = cache.get_or_compute("train", "k" * 64, lambda _: fs, log=None)
    assert computed and torch.equal(got.features, fs.features)
    got, computed = cache.get_or_compute("train", "k" * 64, lambda _: pytest.fail("recomputed"), log=None)
    assert not computed and torch.equal(got.labels, fs.labels)
    cache.path("train", "k" * 64).write_bytes(b"not a torch file")
    got, computed = cache.get_or_compute("train", "k" * 64, lambda _: fs, log=None)
    assert computed
    assert list(tmp_path.glob(".*.tmp")) == []
