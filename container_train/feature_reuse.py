"""Features already computed for the same images by the same backbone: find them and compute only the rest.

The split cache (:mod:`container_train.feature_cache`) keys a file by the split's paths, sizes,
mtimes and labels, so a split it has not seen misses even when every one of its images is on disk
already: the pipeline's second model trains on a class subset of the same JPEGs (hard links,
classes renumbered), a tuning trial's test split holds images another job has computed. On such a
miss this module looks for those images' rows in the other cache files and runs the backbone only
over the images none of them holds.

* **Identity** is the SHA-256 of an image file's bytes: hard links, copies and a container's mount
  of the same JPEG all match, a changed file never does. Labels are not part of it (a subset
  renumbers the classes): the labels of the result are always the asking split's own.
* **Only evaluation views** (``views == 0``): their transform is deterministic, so an image's row is
  the same in any split. Augmented views are random per pass and are never reused.
* **Donors** are the cache files in the same folder whose :class:`FeatureSpec` is equal (any split
  name: a training image's evaluation view is what it would be in ``valid``). Beside each cache file
  ``<split>-<key>.pt`` a sidecar ``<split>-<key>.images.json`` records the spec's digest and the
  SHA-256 of each feature row, so a lookup reads small JSON files and loads only the ``.pt`` files
  that hold needed rows (``weights_only=True``). A sidecar is written atomically after its ``.pt``,
  so one that exists names a whole file; a donor that cannot be read is passed over.

Stopping, kept simple: when some rows are reused, the extraction of the rest runs over a
``Subset`` of the split, whose progress is no resumable progress of the whole split. A stop then
stores no partial file; the restarted job reuses the same donors again and computes the rest
from its first image. An extraction that reuses nothing runs (and resumes) as before.

Cost: hashing reads every image file of the split once per miss (and once for a cache file written
before sidecars existed, the first time it is hit); a JPEG is read much faster than it is decoded.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from byoc_common import durable
from container_train.feature_extraction import (
    Extraction,
    ExtractionStopped,
    FeatureCacheError,
    FeatureSet,
    compute_features,
)

SIDECAR_SUFFIX = ".images.json"
SIDECAR_FORMAT_VERSION = 1
_READ_CHUNK = 1 << 20


def image_sha256(path: str | os.PathLike) -> str | None:
    """SHA-256 of a file's bytes; None when it cannot be read (such a file matches nothing)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_READ_CHUNK):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


class Identities:
    """The SHA-256 of each sample's file, read on first use and then kept (a miss looks them up, the
    sidecar written after the store records them)."""

    def __init__(self, samples: Sequence[tuple[str | os.PathLike, int]]):
        self.samples = samples
        self._hashes: list[str | None] | None = None

    def hashes(self) -> list[str | None]:
        if self._hashes is None:
            self._hashes = [image_sha256(path) for path, _ in self.samples]
        return self._hashes

    def rows(self, fs: FeatureSet) -> list[str | None] | None:
        """The identity of each of ``fs``'s rows (the samples less the skipped files, in order);
        None when they do not line up with ``fs``."""
        skipped = {path for path, _ in fs.skipped_files}
        rows = [h for (path, _), h in zip(self.samples, self.hashes(), strict=True) if str(path) not in skipped]
        return rows if len(rows) == len(fs) and fs.num_views == 1 else None


def sidecar_path(cache_file: Path) -> Path:
    return cache_file.with_suffix(SIDECAR_SUFFIX)


def write_sidecar(cache_file: Path, key: str, spec_digest: str, rows: list[str | None]) -> None:
    durable.write_json(sidecar_path(cache_file), {"format_version": SIDECAR_FORMAT_VERSION, "spec": spec_digest,
                                                  "key": key, "rows": rows}, indent=0)


def _read_sidecar(path: Path, spec_digest: str) -> tuple[str, list] | None:
    """(the cache file's key, its row identities), or None when the sidecar is for another spec or unusable."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(d, dict) or d.get("format_version") != SIDECAR_FORMAT_VERSION
            or d.get("spec") != spec_digest or not isinstance(d.get("rows"), list)):
        return None
    return str(d.get("key")), d["rows"]


def _load_rows(cache_file: Path, key: str, count: int) -> torch.Tensor | None:
    """The donor's ``[count, D]`` evaluation-view features, or None when the file is gone or does not
    match its sidecar."""
    try:
        d = torch.load(cache_file, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - missing, truncated or garbled: not a donor
        return None
    feats = d.get("features") if isinstance(d, dict) and d.get("key") == key else None
    if not isinstance(feats, torch.Tensor) or feats.dim() != 3 or feats.shape[:2] != (1, count):
        return None
    return feats[0]


def find_rows(cache_dir: Path, spec_digest: str, wanted: set[str]) -> dict[str, torch.Tensor]:
    """Identity -> feature row for each of ``wanted`` that a donor in ``cache_dir`` holds. Donors
    holding the most wanted rows are loaded first, and only while rows are still missing."""
    candidates = []
    for sidecar in sorted(cache_dir.glob("*" + SIDECAR_SUFFIX)):
        entry = _read_sidecar(sidecar, spec_digest)
        if entry is None:
            continue
        key, rows = entry
        hits = {h: r for r, h in enumerate(rows) if h in wanted}
        if hits:
            candidates.append((-len(hits), sidecar.name, key, len(rows), hits))
    found: dict[str, torch.Tensor] = {}
    for _, name, key, count, hits in sorted(candidates):
        if all(h in found for h in hits):
            continue
        feats = _load_rows(cache_dir / (name[:-len(SIDECAR_SUFFIX)] + ".pt"), key, count)
        if feats is not None:
            found.update({h: feats[r] for h, r in hits.items() if h not in found})
    return found


def compute_reusing(cache_dir: Path, spec_digest: str, identities: Identities, *, extractor: nn.Module,
                    dataset: Dataset, log: Callable[[str], None] | None = print, **extraction) -> FeatureSet | None:
    """The split's one evaluation view, with each image a donor holds copied from it and the others
    computed; None when no donor holds any (then the caller extracts as usual, resumably).

    ``dataset[i]`` must be ``identities.samples[i]`` through the spec's transform. The rows are the
    samples less the files that cannot be decoded, in the split's order, as :func:`compute_features`
    gives them; labels are the samples'. ``extraction``: :func:`compute_features`' loading options.
    """
    samples, hashes = identities.samples, identities.hashes()
    donated = find_rows(Path(cache_dir), spec_digest, {h for h in hashes if h is not None})
    if not donated:
        return None
    todo = [i for i, h in enumerate(hashes) if h not in donated]
    if log:
        log(f"feature cache: reused {len(samples) - len(todo)} of {len(samples)} images' features (same images, "
            f"same backbone); computing {len(todo)}")
    computed, skipped = _compute_subset(extractor, dataset, samples, todo, log=log, **extraction)
    rows = []
    for i, ((path, _), h) in enumerate(zip(samples, hashes, strict=True)):
        if h in donated:
            rows.append((i, donated[h]))
        elif i in computed:
            rows.append((i, computed[i]))
        elif str(path) not in skipped:
            raise FeatureCacheError(f"no features for {path!r}: the extraction returned other samples")
    return FeatureSet(torch.stack([row for _, row in rows]).unsqueeze(0).contiguous(),
                      torch.tensor([samples[i][1] for i, _ in rows], dtype=torch.int64),
                      list(skipped.items()))


def _compute_subset(extractor: nn.Module, dataset: Dataset, samples: Sequence, todo: list[int], **extraction
                    ) -> tuple[dict[int, torch.Tensor], dict[str, str]]:
    """(sample index -> feature row, path -> reason it was skipped) for the samples ``todo``."""
    if not todo:
        return {}, {}
    try:
        part = compute_features(extractor, Subset(dataset, todo), passes=1, exact_resume=True, **extraction)
    except ExtractionStopped as stopped:
        stopped.progress = Extraction()       # a subset's progress does not resume the split: keep none
        raise
    except FeatureCacheError:
        # Every image left to compute may be undecodable (the readable ones all reused): that is a
        # result, not an error. compute_features raises on a view with no readable image.
        unreadable = [dataset[i] for i in todo]
        if any(sample is not None for sample, _, _ in unreadable):
            raise
        return {}, {path: reason for _, path, reason in unreadable}
    skipped = dict(part.skipped_files)
    kept = [i for i in todo if str(samples[i][0]) not in skipped]
    if len(kept) != len(part):
        raise FeatureCacheError(f"computed {len(part)} images' features, expected {len(kept)}")
    return dict(zip(kept, part.features[0], strict=True)), skipped
