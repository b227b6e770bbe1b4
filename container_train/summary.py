"""The job's outcome: ``metrics.json`` (:data:`~container_train.contract.METRICS_FILE`) and its log lines.

Split out of :mod:`container_train.train`; it reads the parts the phases returned
(:mod:`container_train.job_parts`). In a distributed job every rank builds the summary (the figures
are already reduced over ranks) and rank 0 alone writes it.
"""

from __future__ import annotations

import logging
import time

from byoc_common import durable
from container_train import contract
from container_train.hyperparameters import to_dict
from container_train.job_parts import Context, Data, Fit, Network

log = logging.getLogger("container_train")


def summary_of(ctx: Context, data: Data, net: Network, fit: Fit, test, chosen: str) -> dict:
    """Write metrics.json, log the outcome, return the summary."""
    progress, args, reason, skipped = fit.progress, ctx.args, fit.stopped_reason, fit.skipped
    summary = {
        "status": "stopped" if reason else "completed",
        "stopped_by": reason,
        "epochs_completed": progress.epoch,
        "resumed_from_epoch": fit.resumed_from,
        "best_epoch": progress.best_epoch,
        "best_valid_accuracy": progress.best_accuracy if progress.best_epoch else None,
        "model_weights": "best_validation" if progress.best_model is not None else "last",
        "history": progress.history,
        "test": {"loss": test.loss, "accuracy": test.accuracy, "images": test.images} if test else None,
        "skipped_images": skipped.count,
        "skipped_files": sorted(skipped.files)[:100],
        "num_classes": len(data.class_names),
        "class_names": data.class_names,
        "images": data.image_counts(),
        "features_channel": data.features is not None,
        "hyperparameters": to_dict(args),
        "model_config": data.config.to_json(),
        "device": str(ctx.device),
        "data_loading": data.plan.describe(),
        "feature_cache": bool(net.use_cache),
        "world_size": ctx.ranks.world_size,
        "seconds": round(time.monotonic() - ctx.started, 2),
    }
    if ctx.ranks.is_main:
        durable.write_json(ctx.paths.output_data_dir / contract.METRICS_FILE, summary)
    if skipped.count:
        log.warning("%d unreadable image(s) were skipped (listed in %s)", skipped.count, contract.METRICS_FILE)
    if reason:
        log.warning("stopped early (%s) after %d of %d epochs; progress and model saved",
                    reason, progress.epoch, args.epochs)
    else:
        log.info("training finished: %d epochs, %s", progress.epoch, chosen)
    return summary
