"""Backbone features as a dataset: what a ``task=extract-features`` job writes and a ``features`` channel reads.

On SageMaker every tuning trial is its own job on its own instance, so the local feature cache
(:mod:`container_train.feature_cache`) cannot be shared between trials. Instead one job computes the
frozen backbone's features of the train, validation and test splits once and writes them as its model
artifact; SageMaker tars that folder into ``model.tar.gz``, and every trial gets it as its ``features``
channel (an ``S3Prefix`` on that object puts ``/opt/ml/input/data/features/model.tar.gz`` in the
container). A trial then trains and evaluates the head on those tensors without reading an image, and
still saves the full classifier (its own pretrained backbone + the new head), which is exactly what the
serving image loads.

Layout (the folder, or the same files inside a ``.tar.gz`` in the channel)::

    features.json   {"format": "byoc-features", "format_version": 1, "class_names": [...],
                     "splits": {"train": {"file": "train.pt", "images": N, "views": V, "dim": D,
                                          "skipped": k, "files_sha256": ..., "fingerprint": {...}}, ...}}
    train.pt valid.pt test.pt   {"features": float32 [V, N, D], "labels": int64 [N],
                                 "files": [N paths relative to the split's folder: row i's image],
                                 "skipped_files": [[path, reason], ...]}  (torch.save of plain tensors
                                 and lists; read with torch.load(weights_only=True))

The ``fingerprint`` of a split is :class:`~container_train.feature_cache.FeatureSpec`: the
architecture, a hash of the backbone weights, image and resize size, the transform, the number of
views, the torch version and the cache format. A job reading the channel computes the fingerprint its
own hyperparameters and backbone would give and refuses the channel, naming each field that differs,
when they are not equal: features of another backbone or input size would train a head that the saved
classifier then feeds something else.
"""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import asdict
from pathlib import Path

import torch

from byoc_common import durable
from container_train.contract import FEATURES_MANIFEST, quote_path
from container_train.errors import TrainingError
from container_train.feature_cache import FeatureSpec
from container_train.feature_extraction import FeatureSet

FORMAT = "byoc-features"
FORMAT_VERSION = 1


class FeaturesChannelError(TrainingError):
    """The features channel is missing a file, unreadable, or was computed for another model or input."""


def write_features_dataset(out_dir: str | os.PathLike, feats: dict[str, FeatureSet], specs: dict[str, FeatureSpec],
                           class_names: list[str], files: dict[str, list[str]],
                           files_sha256: dict[str, str] | None = None) -> Path:
    """Write ``feats`` (split name -> features) with their fingerprints ``specs`` and the image each
    row came from (``files``); returns the manifest path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = {}
    for name, fs in feats.items():
        file = f"{name}.pt"
        if len(files[name]) != len(fs):
            raise ValueError(f"{len(files[name])} file names for {len(fs)} {name} feature rows")
        record = {"features": fs.features.contiguous(), "labels": fs.labels, "files": list(files[name]),
                  "skipped_files": [list(x) for x in fs.skipped_files]}
        durable.write_with(out / file, lambda f, r=record: torch.save(r, f))
        splits[name] = {"file": file, "images": len(fs), "views": fs.num_views, "dim": int(fs.features.shape[-1]),
                        "skipped": fs.skipped, "files_sha256": (files_sha256 or {}).get(name, ""),
                        "fingerprint": asdict(specs[name])}
    manifest = out / FEATURES_MANIFEST
    durable.write_json(manifest, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                     "class_names": list(class_names), "splits": splits})
    return manifest


def locate(channel: Path, scratch: Path) -> Path:
    """The folder holding ``features.json``: the channel itself, or the one ``.tar.gz`` in it (an
    extraction job's ``model.tar.gz``) unpacked under ``scratch``. Only plain files and folders with
    relative names and no ``..`` are unpacked (:func:`_plain_members`); anything else refuses the archive."""
    if (channel / FEATURES_MANIFEST).is_file():
        return channel
    archives = sorted(p for p in channel.iterdir() if p.name.endswith(".tar.gz") and p.is_file())
    if len(archives) != 1:
        found = ", ".join(sorted(p.name for p in channel.iterdir())[:10]) or "nothing"
        raise FeaturesChannelError(
            f"the features channel {quote_path(channel)} holds neither {FEATURES_MANIFEST} nor exactly one "
            f".tar.gz (an extraction job's model.tar.gz); found: {found}")
    dest = scratch / archives[0].name.removesuffix(".tar.gz")
    if not (dest / FEATURES_MANIFEST).is_file():
        dest.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(archives[0], "r:gz") as tar:
                tar.extractall(dest, members=_plain_members(tar, archives[0]))
        except (tarfile.TarError, OSError) as e:
            raise FeaturesChannelError(f"cannot unpack {quote_path(archives[0])}: {e}") from None
    if not (dest / FEATURES_MANIFEST).is_file():
        raise FeaturesChannelError(f"{quote_path(archives[0])} holds no {FEATURES_MANIFEST}: is it the model.tar.gz "
                                   "of a task=extract-features job?")
    return dest


def _plain_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """The archive's members when every one is a plain file or folder under a relative name without
    ``..`` (what tarfile's ``data`` filter, PEP 706, allows; checked here because the images' Python
    may predate it); raises otherwise."""
    members = tar.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if not (m.isfile() or m.isdir()) or Path(m.name).is_absolute() or ".." in parts:
            raise FeaturesChannelError(f"{quote_path(archive)} holds {m.name!r}, which is not a plain file or "
                                       "folder inside the archive; refusing to unpack it")
    return members


def read_manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / FEATURES_MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise FeaturesChannelError(f"cannot read {quote_path(folder / FEATURES_MANIFEST)}: {e}") from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise FeaturesChannelError(f"{quote_path(folder / FEATURES_MANIFEST)} is not a {FORMAT} manifest of "
                                   f"version {FORMAT_VERSION}")
    if not {"train", "valid"} <= set(manifest.get("splits", {})):
        raise FeaturesChannelError("the features channel needs train and valid features; it has "
                                   f"{', '.join(manifest.get('splits', {})) or 'none'}")
    names = manifest.get("class_names")
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise FeaturesChannelError("the features channel's class_names must list at least 2 class names")
    return manifest


def mismatches(expected: FeatureSpec, stored: dict) -> list[str]:
    """``field: channel X, this job Y`` for every fingerprint field that differs."""
    want = asdict(expected)
    return [f"{k}: channel {stored.get(k)!r}, this job {v!r}" for k, v in want.items() if stored.get(k) != v]


def read_features_dataset(folder: Path, manifest: dict, expected: dict[str, FeatureSpec], head_inputs: int
                          ) -> dict[str, FeatureSet]:
    """The splits of ``expected`` that the channel has, checked against their fingerprints, the
    head's input width and the class count. Raises :class:`FeaturesChannelError` naming what differs."""
    num_classes = len(manifest["class_names"])
    out = {}
    for name, spec in expected.items():
        entry = manifest["splits"].get(name)
        if entry is None:
            continue
        differ = mismatches(spec, entry.get("fingerprint", {}))
        if differ:
            raise FeaturesChannelError(
                f"the features channel's {name} split was computed for another backbone or input than this "
                f"job's ({'; '.join(differ)}); run a task=extract-features job with this job's arch, "
                "pretrained weights, image-size, resize-size and feature-cache-views")
        path = folder / str(entry.get("file", ""))
        if path.parent != folder or not path.is_file():
            raise FeaturesChannelError(f"the features channel lists {name} in {entry.get('file')!r}, which is "
                                       "not a file beside its manifest")
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
            fs = FeatureSet(d["features"].float(), d["labels"].to(torch.int64),
                            [(str(p), str(r)) for p, r in d.get("skipped_files", [])])
        except Exception as e:  # noqa: BLE001 - any unreadable or malformed file is the channel's fault
            raise FeaturesChannelError(f"cannot read {quote_path(path)}: {e}") from None
        if fs.features.shape[-1] != head_inputs:
            raise FeaturesChannelError(f"{name} features have {fs.features.shape[-1]} values per image, the head "
                                       f"takes {head_inputs}")
        if len(fs) and (int(fs.labels.min()) < 0 or int(fs.labels.max()) >= num_classes):
            raise FeaturesChannelError(f"{name} labels fall outside the {num_classes} classes")
        out[name] = fs
    return out
