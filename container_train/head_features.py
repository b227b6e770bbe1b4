"""Where a head-only job's inputs come from, and the job that writes them for others.

With ``freeze=head`` only the new head learns, so the trainer never pushes an image through the
backbone during training: it trains the head module on the backbone's pooled features. They come from

* **a ``features`` channel** (:mod:`container_train.features_dataset`): the artifact of an earlier
  ``task=extract-features`` job, checked against this job's fingerprint; no image is read, and the
  test metrics come from the channel's test features too;
* otherwise **the feature cache** (:mod:`container_train.feature_cache`): computed from the images
  once (each rank its shard, then gathered) and kept for the next job on the same data.

:func:`extract_dataset` is the ``task=extract-features`` job: every split's features (through the same
cache) written as the model artifact. ``job`` is :class:`container_train.train.Job` throughout.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from byoc_common import durable
from container_train import contract, distributed, engine, feature_cache, features_dataset
from container_train.feature_cache import files_fingerprint
from container_train.hyperparameters import HyperparameterError

log = logging.getLogger("container_train")


def channel_manifest(job) -> dict | None:
    """Open the features channel, if the job has one: unpack it when it is a ``model.tar.gz`` and
    return its manifest (class names, splits). Sets ``job.features_folder``."""
    channel = job.paths.channel(contract.FEATURES_CHANNEL)
    if channel is None:
        return None
    args = job.args
    if args.task == contract.TASK_EXTRACT_FEATURES:
        raise HyperparameterError(f"task={contract.TASK_EXTRACT_FEATURES} computes features from the images; it "
                                  f"takes no '{contract.FEATURES_CHANNEL}' channel")
    if args.freeze != "head" or args.feature_cache == "false":
        raise HyperparameterError(f"a '{contract.FEATURES_CHANNEL}' channel trains only the head on its features: "
                                  f"it needs freeze=head and feature-cache auto or true (got freeze={args.freeze}, "
                                  f"feature-cache={args.feature_cache})")
    ignored = sorted(set(job.paths.channels) & set(contract.CHANNEL_SPLITS))
    if ignored:
        log.warning("the '%s' channel holds the data: channel(s) %s are not read", contract.FEATURES_CHANNEL,
                    ", ".join(ignored))
    job.features_scratch = Path(tempfile.mkdtemp(prefix="byoc-features-"))
    job.features_folder = features_dataset.locate(channel, job.features_scratch)
    manifest = features_dataset.read_manifest(job.features_folder)
    log.info("features channel %s: %s", contract.quote_path(channel), ", ".join(
        f"{name} {entry['images']} images x {entry['views']} view(s)" for name, entry in manifest["splits"].items()))
    return manifest


def prepare(job, timings) -> None:
    """Swap the image loaders for feature batches and train the head module alone (nothing to do
    unless ``job.use_cache``). Raises :class:`~container_train.feature_cache.ExtractionStopped` on a
    stop request while the cache is computed."""
    if not job.use_cache:
        return
    args, ranks = job.args, job.ranks
    if job.features_folder is not None:
        with job.phases.phase("data preparation"):
            feats = _read_channel(job)
        source = f"the '{contract.FEATURES_CHANNEL}' channel"
    else:
        cache_dir = feature_cache.default_cache_dir(job.paths.checkpoint_dir, args.feature_cache_dir)
        feats = extract(job, timings, cache_dir, ("train", "valid"))
        source = contract.quote_path(cache_dir)
    shard = dict(rank=ranks.rank, world_size=ranks.world_size)
    job.loaders["train"] = feature_cache.FeatureBatches(feats["train"], args.batch_size, shuffle=True, seed=args.seed,
                                                        **shard)
    for name in ("valid", "test"):
        if name in feats:
            job.loaders[name] = feature_cache.FeatureBatches(feats[name], args.batch_size, shuffle=False, **shard)
    job.steps.update({n: engine.steps_in(len(job.loaders[n]), args.max_steps_per_epoch) for n in feats})
    job.train_module = feature_cache.head_module(job.model, args.arch)
    if "test" in feats:
        job.test_module = job.train_module
    log.info("feature cache on (%s): training the head on cached backbone features", source)


def extract(job, timings, cache_dir: Path, names) -> dict:
    """Features of the splits ``names`` through the cache: each rank computes its shard, then every
    rank holds all of them."""
    args, ranks = job.args, job.ranks
    with job.phases.phase("feature extraction"):
        feats = feature_cache.features_for_splits(
            cache_dir, {n: distributed.shard_split(job.splits[n], ranks) for n in names}, job.model, args.arch,
            job.config, views=args.feature_cache_views, names=names, batch_size=args.batch_size, plan=job.plan,
            seed=args.seed, device=job.device, stop=distributed.local_stop(job.stop), timings=timings, log=log.info)
        return {name: distributed.gather_features(fs, ranks) for name, fs in feats.items()}


def _specs(job, names) -> dict:
    """Split name -> the fingerprint this job's backbone and settings give its features."""
    return {name: spec for name, (spec, _) in feature_cache.split_specs(
        job.model, job.args.arch, job.config, names, views=job.args.feature_cache_views).items()}


def _read_channel(job) -> dict:
    """The channel's splits, checked against the fingerprints this job's backbone gives."""
    names = [n for n in contract.SPLITS if n in job.features_manifest["splits"]]
    specs = _specs(job, names)
    head = feature_cache.head_module(job.model, job.args.arch)
    try:
        return features_dataset.read_features_dataset(job.features_folder, job.features_manifest, specs,
                                                      head.in_features)
    finally:
        if job.features_scratch is not None:
            shutil.rmtree(job.features_scratch, ignore_errors=True)


def extract_dataset(job, timings) -> None:
    """``task=extract-features``: every split's features, written as the model artifact (rank 0) with
    their fingerprints. The cache makes a rerun on this machine (or a restarted job) load instead of
    compute."""
    names = [n for n in contract.SPLITS if n in job.splits]
    cache_dir = feature_cache.default_cache_dir(job.paths.checkpoint_dir, job.args.feature_cache_dir)
    feats = extract(job, timings, cache_dir, names)
    with job.phases.phase("artifact save"):
        if job.ranks.is_main:
            specs = _specs(job, names)
            hashes = {name: files_fingerprint(job.splits[name].samples, job.splits[name].root) for name in names}
            features_dataset.write_features_dataset(job.paths.model_dir, feats, specs, job.class_names,
                                                    {n: _row_files(job.splits[n], feats[n], job.ranks) for n in names}, hashes)
    job.feature_counts = {n: {"images": len(fs), "views": fs.num_views, "skipped": fs.skipped} for n, fs in feats.items()}
    log.info("features of %s written to %s (%s): give it to head-only jobs as their '%s' channel",
             ", ".join(f"{n} {len(fs)} x {fs.num_views} view(s)" for n, fs in feats.items()),
             contract.quote_path(job.paths.model_dir), contract.FEATURES_MANIFEST, contract.FEATURES_CHANNEL)


def _row_files(split, fs, ranks) -> list[str]:
    """The image of each feature row: the split's samples less the ones that could not be read, in the
    order :func:`container_train.distributed.gather_features` leaves them (the split's, or shard after
    shard when a distributed extraction skipped some)."""
    skipped = {path for path, _ in fs.skipped_files}
    samples = split.samples
    if ranks.enabled and skipped:
        samples = [s for r in range(ranks.world_size) for s in split.samples[r::ranks.world_size]]
    return [Path(p).relative_to(split.root).as_posix() for p, _ in samples if str(p) not in skipped]


def extraction_summary(job) -> dict:
    """metrics.json of a ``task=extract-features`` job (rank 0 writes it)."""
    summary = {"status": "stopped" if job.stopped_reason else "completed", "stopped_by": job.stopped_reason,
               "task": contract.TASK_EXTRACT_FEATURES, "num_classes": len(job.class_names),
               "class_names": job.class_names, "features": job.feature_counts, "model_config": job.config.to_json(),
               "device": str(job.device), "world_size": job.ranks.world_size}
    if job.ranks.is_main:
        durable.write_json(job.paths.output_data_dir / contract.METRICS_FILE, summary)
    return summary
