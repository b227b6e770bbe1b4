"""Head-only tuning on a ``features`` channel: the frozen backbone runs once per dataset, not once per trial.

On SageMaker each tuning trial is its own job on its own instance, so nothing a trial computes reaches
another; a head-only search would push every image through the same frozen backbone once per trial.
For a head-only spec (:func:`blocker` says which qualify) the tuning runs in three steps instead, the
same on SageMaker (:mod:`byoc.aws.feature_jobs`) and locally with the containers
(:mod:`byoc.backends.local`):

1. **extraction**: one ``task=extract-features`` job on the images writes every split's features as its
   ``model.tar.gz`` (:mod:`container_train.features_dataset`); a run that already has one under the same
   :func:`features_key` reuses it;
2. **tuning**: every trial gets that archive as its only channel, ``features``, and trains the head on it;
3. **final job**: the best hyperparameters, on the same channel, with Debugger; its artifact is the full
   classifier the serving image loads.

The trainer checks the channel's fingerprint (architecture, backbone weights, input size, transform,
views, torch version) itself, so a wrong channel fails the trial with the reason; the key here only
decides when an earlier extraction may be reused without starting a job.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from byoc.tuning.spec import TuningSpec
from container_train.contract import (
    FEATURE_FORMAT_VERSION,
    FEATURE_HYPERPARAMETERS,
    FEATURES_CHANNEL,
    TASK_EXTRACT_FEATURES,
)
from container_train.hyperparameters import DEFAULTS, to_sagemaker_strings

CHANNEL = FEATURES_CHANNEL
# Static hyperparameters the extraction job takes from the spec besides the feature-deciding ones:
# how it loads and batches images (they do not change the features).
_EXTRACTION_PLUMBING = ("batch-size", "workers", "loader-timeout-s", "seed")


def blocker(spec: TuningSpec) -> str | None:
    """Why ``spec`` cannot tune on a features channel, or None when it can: it must train only the head
    (static ``freeze=head``, the cache not switched off) and tune nothing that decides the features."""
    static = spec.static
    freeze = str(static.get("freeze", DEFAULTS["freeze"]))
    if freeze != "head":
        return f"the spec trains backbone layers (freeze={freeze}), whose features change every step"
    if str(static.get("feature-cache", DEFAULTS["feature-cache"])).lower() == "false":
        return "the spec switches the feature cache off (feature-cache=false)"
    if str(static.get("task", DEFAULTS["task"])) != DEFAULTS["task"]:
        return f"the spec's static task is {static.get('task')}"
    tuned = sorted(set(spec.parameter_names) & {*FEATURE_HYPERPARAMETERS, "freeze", "feature-cache"})
    if tuned:
        return f"the spec tunes {', '.join(tuned)}, which decide the features"
    return None


def extraction_hyperparameters(spec: TuningSpec) -> dict[str, str]:
    """The extraction job's hyperparameters: the spec's feature-deciding and loading ones, the task."""
    static = spec.static
    chosen: dict[str, Any] = {k: static[k] for k in (*FEATURE_HYPERPARAMETERS, *_EXTRACTION_PLUMBING) if k in static}
    chosen.update(task=TASK_EXTRACT_FEATURES, freeze="head", debugger=False, checkpoint=True)
    return to_sagemaker_strings(chosen)


def features_key(image: str, data_version: str, hyperparameters: dict[str, str]) -> str:
    """What an extraction's output depends on, hashed: the training image, the dataset (its location and a
    version of its contents: object ETags, or file sizes and times), the extraction's hyperparameters and
    the features' format version (an image tag or a process-mode run names no code version)."""
    payload = json.dumps({"image": image, "data": data_version, "hyperparameters": hyperparameters,
                          "format": FEATURE_FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def folder_version(root: str | os.PathLike) -> str:
    """A local dataset's version: its absolute path and every file's relative path, size and mtime."""
    root = Path(root).resolve()
    h = hashlib.sha256(str(root).encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        st = path.stat()
        h.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
