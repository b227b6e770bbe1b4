"""Where a head-only job's inputs come from, and the job that writes them for others.

With ``freeze=head`` only the new head learns, so the trainer never pushes an image through the
backbone during training: it trains the head module on the backbone's pooled features. They come from

* **a ``features`` channel** (:mod:`container_train.features_dataset`): the artifact of an earlier
  ``task=extract-features`` job, checked against this job's fingerprint; no image is read, and the
  test metrics come from the channel's test features too;
* otherwise **the feature cache** (:mod:`container_train.feature_cache`): computed from the images
  once (each rank its shard, then gathered) and kept for the next job on the same data.

:func:`extract_dataset` is the ``task=extract-features`` job: every split's features (through the same
cache) written as the model artifact. The parts each function takes and returns are
:mod:`container_train.job_parts`'s.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from byoc_common import durable
from container_train import contract, distributed, engine, feature_cache, features_dataset
from container_train.feature_cache import files_fingerprint
from container_train.hyperparameters import HyperparameterError
from container_train.job_parts import Context, Data, FeaturesChannel, Network
from container_train.precision import extraction_autocast

log = logging.getLogger("container_train")


def open_channel(ctx: Context) -> FeaturesChannel | None:
    """Open the features channel, if the job has one: unpack it when it is a ``model.tar.gz`` and
    read its manifest (class names, splits)."""
    channel = ctx.paths.channel(contract.FEATURES_CHANNEL)
    if channel is None:
        return None
    args = ctx.args
    if args.task == contract.TASK_EXTRACT_FEATURES:
        raise HyperparameterError(f"task={contract.TASK_EXTRACT_FEATURES} computes features from the images; it "
                                  f"takes no '{contract.FEATURES_CHANNEL}' channel")
    if args.freeze != "head" or args.feature_cache == "false":
        raise HyperparameterError(f"a '{contract.FEATURES_CHANNEL}' channel trains only the head on its features: "
                                  f"it needs freeze=head and feature-cache auto or true (got freeze={args.freeze}, "
                                  f"feature-cache={args.feature_cache})")
    ignored = sorted(set(ctx.paths.channels) & set(contract.CHANNEL_SPLITS))
    if ignored:
        log.warning("the '%s' channel holds the data: channel(s) %s are not read", contract.FEATURES_CHANNEL,
                    ", ".join(ignored))
    scratch = Path(tempfile.mkdtemp(prefix="byoc-features-"))
    folder = features_dataset.locate(channel, scratch)
    manifest = features_dataset.read_manifest(folder)
    log.info("features channel %s: %s", contract.quote_path(channel), ", ".join(
        f"{name} {entry['images']} images x {entry['views']} view(s)" for name, entry in manifest["splits"].items()))
    return FeaturesChannel(manifest, folder, scratch)


def prepare(ctx: Context, data: Data, net: Network) -> tuple[Data, Network]:
    """``data`` and ``net`` as the head trains alone: feature batches in place of the image loaders,
    the head as the training module (unchanged unless ``net.use_cache``). Raises
    :class:`~container_train.feature_cache.ExtractionStopped` on a stop request while the cache is computed."""
    if not net.use_cache:
        return data, net
    args, ranks = ctx.args, ctx.ranks
    if data.features is not None:
        with ctx.phases.phase("data preparation"):
            feats = _read_channel(ctx, data, net)
        source = f"the '{contract.FEATURES_CHANNEL}' channel"
    else:
        cache_dir = feature_cache.default_cache_dir(ctx.paths.checkpoint_dir, args.feature_cache_dir)
        # The test split too: the test pass then runs the head on its cached features, which an earlier
        # job (a task=extract-features job, another model on the same images) may have computed already.
        feats = extract(ctx, data, net, cache_dir, [n for n in contract.SPLITS if n in data.splits])
        source = contract.quote_path(cache_dir)
    shard = dict(rank=ranks.rank, world_size=ranks.world_size)
    loaders = {**data.loaders, "train": feature_cache.FeatureBatches(feats["train"], args.batch_size, shuffle=True,
                                                                     seed=args.seed, **shard)}
    for name in ("valid", "test"):
        if name in feats:
            loaders[name] = feature_cache.FeatureBatches(feats[name], args.batch_size, shuffle=False, **shard)
    steps = {**data.steps, **{n: engine.steps_in(len(loaders[n]), args.max_steps_per_epoch) for n in feats}}
    head = feature_cache.head_module(net.model, args.arch)
    log.info("feature cache on (%s): training the head on cached backbone features", source)
    return (replace(data, loaders=loaders, steps=steps),
            replace(net, train_module=head, test_module=head if "test" in feats else net.test_module))


def extract(ctx: Context, data: Data, net: Network, cache_dir: Path, names) -> dict:
    """Features of the splits ``names`` through the cache: each rank computes its shard, then every
    rank holds all of them. Time spent waiting for another process's cache lock is also recorded as
    a ``waiting`` phase, and taken out of this ``feature extraction`` one (``profiling.Phases``)."""
    args, ranks = ctx.args, ctx.ranks
    with ctx.phases.phase("feature extraction"):
        feats = feature_cache.features_for_splits(
            cache_dir, {n: distributed.shard_split(data.splits[n], ranks) for n in names}, net.model, args.arch,
            data.config, views=args.feature_cache_views, names=names, batch_size=args.batch_size, plan=data.plan,
            seed=args.seed, device=ctx.device, stop=distributed.local_stop(ctx.stop), timings=ctx.timings,
            autocast_dtype=extraction_autocast(ctx.device, args.amp), log=log.info, on_wait=lambda start, seconds: ctx.phases.record("waiting", start, seconds))
        return {name: distributed.gather_features(fs, ranks) for name, fs in feats.items()}


def _specs(ctx: Context, data: Data, net: Network, names) -> dict:
    """Split name -> the fingerprint this job's backbone and settings give its features."""
    return {name: spec for name, (spec, _) in feature_cache.split_specs(
        net.model, ctx.args.arch, data.config, names, views=ctx.args.feature_cache_views,
        autocast_dtype=extraction_autocast(ctx.device, ctx.args.amp)).items()}


def _read_channel(ctx: Context, data: Data, net: Network) -> dict:
    """The channel's splits, checked against the fingerprints this job's backbone gives."""
    channel = data.features
    names = [n for n in contract.SPLITS if n in channel.manifest["splits"]]
    specs = _specs(ctx, data, net, names)
    head = feature_cache.head_module(net.model, ctx.args.arch)
    try:
        return features_dataset.read_features_dataset(channel.folder, channel.manifest, specs, head.in_features)
    finally:
        shutil.rmtree(channel.scratch, ignore_errors=True)


def extract_dataset(ctx: Context, data: Data, net: Network) -> dict:
    """``task=extract-features``: every split's features, written as the model artifact (rank 0) with
    their fingerprints; returns what was written per split. The cache makes a rerun on this machine
    (or a restarted job) load instead of compute."""
    names = [n for n in contract.SPLITS if n in data.splits]
    cache_dir = feature_cache.default_cache_dir(ctx.paths.checkpoint_dir, ctx.args.feature_cache_dir)
    feats = extract(ctx, data, net, cache_dir, names)
    with ctx.phases.phase("artifact save"):
        if ctx.ranks.is_main:
            specs = _specs(ctx, data, net, names)
            hashes = {name: files_fingerprint(data.splits[name].samples, data.splits[name].root) for name in names}
            rows = {n: _row_files(data.splits[n], feats[n], ctx.ranks) for n in names}
            features_dataset.write_features_dataset(ctx.paths.model_dir, feats, specs, data.class_names, rows, hashes)
    log.info("features of %s written to %s (%s): give it to head-only jobs as their '%s' channel",
             ", ".join(f"{n} {len(fs)} x {fs.num_views} view(s)" for n, fs in feats.items()),
             contract.quote_path(ctx.paths.model_dir), contract.FEATURES_MANIFEST, contract.FEATURES_CHANNEL)
    return {n: {"images": len(fs), "views": fs.num_views, "skipped": fs.skipped} for n, fs in feats.items()}


def _row_files(split, fs, ranks) -> list[str]:
    """The image of each feature row: the split's samples less the ones that could not be read, in the
    order :func:`container_train.distributed.gather_features` leaves them (the split's, or shard after
    shard when a distributed extraction skipped some)."""
    skipped = {path for path, _ in fs.skipped_files}
    samples = split.samples
    if ranks.enabled and skipped:
        samples = [s for r in range(ranks.world_size) for s in split.samples[r::ranks.world_size]]
    return [Path(p).relative_to(split.root).as_posix() for p, _ in samples if str(p) not in skipped]


def extraction_summary(ctx: Context, data: Data, counts: dict, stopped_reason: str | None) -> dict:
    """metrics.json of a ``task=extract-features`` job (rank 0 writes it)."""
    summary = {"status": "stopped" if stopped_reason else "completed", "stopped_by": stopped_reason,
               "task": contract.TASK_EXTRACT_FEATURES, "num_classes": len(data.class_names),
               "class_names": data.class_names, "features": counts, "model_config": data.config.to_json(),
               "device": str(ctx.device), "world_size": ctx.ranks.world_size}
    if ctx.ranks.is_main:
        durable.write_json(ctx.paths.output_data_dir / contract.METRICS_FILE, summary)
    return summary
