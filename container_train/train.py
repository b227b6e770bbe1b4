"""Training job entry point: fine-tune an image classifier on the SageMaker training contract.

The training image copies this file to ``/opt/ml/code/train.py`` and sets
``SAGEMAKER_PROGRAM=train.py``; the ``sagemaker-training`` toolkit's ``train`` command then runs
``python train.py --lr 0.01 --batch-size 32 ...`` with the hyperparameters of the job. Paths come
from the toolkit's environment (see :mod:`container_train.job_env`).

What one run does:

1. parse and validate hyperparameters (:mod:`container_train.hyperparameters`);
2. find and check the data splits (:mod:`container_train.data`);
3. build the model with its pretrained weights and freeze policy (:mod:`container_train.pretrained`);
4. resume from ``<checkpoint dir>/checkpoint.pth`` when one exists (:mod:`container_train.checkpointing`);
5. per epoch: train, validate, print the metric lines (:mod:`container_train.contract`), keep the
   best-validation-accuracy weights, checkpoint;
6. test the **best-validation** weights, save them as the model artifact
   (:func:`byoc_common.artifact.save_model_artifact`) and write ``metrics.json``.

Failures: an expected problem (bad hyperparameter, missing/empty/inconsistent data, unusable
pretrained weights) writes a one-line reason to ``<base>/output/failure`` (SageMaker's
``FailureReason``) and exits 1; an unexpected exception writes its message and traceback tail.

Stopping: on SIGTERM (StopTrainingJob, spot interruption, a Debugger rule's StopTraining action)
the current step finishes, a checkpoint is written, the best weights so far are saved as the
model artifact and the job exits 0 with a "stopped early" message, so the model is uploaded.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from byoc_common.architectures import UnknownArchitectureError
from byoc_common.artifact import ModelConfig, save_model_artifact
from byoc_common.preprocessing import eval_transform
from container_train import checkpointing, contract, debugger, engine, feature_cache
from container_train.data import (
    ImageFolderDataset,
    SkipCounter,
    load_splits,
    make_loader,
    train_transform,
)
from container_train.errors import TrainingError, describe_unexpected, write_failure_file
from container_train.hyperparameters import HyperparameterError, parse_hyperparameters, to_dict
from container_train.job_env import JobPaths, resolve_paths
from container_train.pretrained import build_model, set_train_mode
from container_train.profiling import StepTimings, SystemSampler

log = logging.getLogger("container_train")
EXPECTED_ERRORS = (TrainingError, HyperparameterError, UnknownArchitectureError)


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                           "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def print_metric(line: str) -> None:
    """Metric lines go to stdout on their own, unprefixed, flushed: tuning jobs regex-match them."""
    print(line, flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def install_stop_handler(stop: engine.StopFlag) -> None:
    # Only set a flag here: logging from a signal handler can re-enter a stream write in progress.
    # The loops check the flag after every step and report the stop themselves.
    def handler(signum, _frame):
        stop.set(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)


def run(args, paths: JobPaths, stop: engine.StopFlag) -> dict:
    """The whole job; returns the metrics summary written to metrics.json."""
    seed_everything(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = args.amp and device.type == "cuda"
    log.info("device: %s%s; hyperparameters: %s", device, " (mixed precision)" if amp else "",
             json.dumps(to_dict(args)))

    # --- data ------------------------------------------------------------------------------------
    splits = load_splits(paths.channels)
    class_names = splits["train"].class_names
    config = ModelConfig(arch=args.arch, num_classes=len(class_names), image_size=args.image_size,
                         resize_size=ModelConfig.default_resize(args.image_size))
    for split in splits.values():
        log.info("%s split: %d images in %d classes from %s", split.name, len(split.samples),
                 len(split.class_folders), split.root)
    if "test" not in splits:
        log.warning("no test data (no 'test' channel and no test/ folder): skipping the test metrics")
    pin = device.type == "cuda"
    loaders = {
        "train": make_loader(ImageFolderDataset(splits["train"], train_transform(config)), args.batch_size,
                             True, args.workers, args.seed, pin),
        **{name: make_loader(ImageFolderDataset(splits[name], eval_transform(config)), args.batch_size,
                             False, args.workers, args.seed, pin)
           for name in ("valid", "test") if name in splits},
    }
    steps = {name: engine.steps_in(len(loader), args.max_steps_per_epoch) for name, loader in loaders.items()}

    # --- model, optimisation ---------------------------------------------------------------------
    model = build_model(args.arch, len(class_names), args.pretrained, args.freeze,
                        pretrained_channel=paths.channel("pretrained"), weights_path=args.pretrained_weights)
    model.to(device)
    # freeze=head: the backbone never changes, so its features are computed once (and cached for
    # other runs on the same data); the loops then train the head module alone on those tensors.
    train_module = model
    try:
        use_cache = feature_cache.enabled(args.freeze, args.feature_cache)
    except ValueError as e:
        raise HyperparameterError(str(e)) from None
    if use_cache:
        cache_dir = feature_cache.default_cache_dir(paths.checkpoint_dir, args.feature_cache_dir)
        feats = feature_cache.features_for_splits(
            cache_dir, splits, model, args.arch, config, views=args.feature_cache_views,
            batch_size=args.batch_size, workers=args.workers, seed=args.seed, device=device, log=log.info)
        loaders["train"] = feature_cache.FeatureBatches(feats["train"], args.batch_size, shuffle=True,
                                                        seed=args.seed)
        loaders["valid"] = feature_cache.FeatureBatches(feats["valid"], args.batch_size, shuffle=False)
        steps.update({n: engine.steps_in(len(loaders[n]), args.max_steps_per_epoch) for n in ("train", "valid")})
        train_module = feature_cache.head_module(model, args.arch)
        log.info("feature cache on (%s): training the head on cached backbone features", cache_dir)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    optimizer = engine.make_optimizer(args.optimizer, model.parameters(), args.lr, args.momentum,
                                      args.weight_decay)
    scheduler = engine.make_scheduler(optimizer, args.lr_scheduler, steps["train"], args.epochs,
                                      args.warmup_epochs, args.lr_step_size)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    # --- resume ----------------------------------------------------------------------------------
    progress = checkpointing.TrainingProgress()
    resumed_from = None
    if args.checkpoint:
        state = checkpointing.load_checkpoint(paths.checkpoint_dir)
        if state is not None:
            checkpointing.check_compatible(state, args.arch, class_names)
            progress = checkpointing.restore(state, model=model, optimizer=optimizer, scheduler=scheduler)
            resumed_from = progress.epoch
            note = (f" (it was interrupted during epoch {state['interrupted_in_epoch']}, which restarts)"
                    if state.get("interrupted_in_epoch") else "")
            log.info("resumed from checkpoint %s: %d of %d epochs done%s",
                     paths.checkpoint_dir / contract.CHECKPOINT_FILE, progress.epoch, args.epochs, note)
        else:
            log.info("no checkpoint in %s: starting from epoch 1", paths.checkpoint_dir)
    if use_cache:
        loaders["train"].epoch_index = progress.epoch     # replay the data order a fresh run would see

    # --- instrumentation -------------------------------------------------------------------------
    hook = None
    if args.debugger:
        # A reused /opt/ml tree (local restarts) still holds the previous run's tensors.
        debugger.rotate_previous_tensors(paths.base, resumed_from or 0)
        hook, description = debugger.create_hook(paths.base, args.debugger_save_interval)
        if hook is not None:
            hook.register_module(train_module)
            hook.register_loss(criterion)
            log.info("smdebug hook: %s", description)
    timings = StepTimings(paths.output_data_dir)
    skipped = SkipCounter()

    # --- epochs ----------------------------------------------------------------------------------
    started = time.monotonic()
    stopped_reason = None
    with SystemSampler(paths.output_data_dir):
        for epoch in range(progress.epoch + 1, args.epochs + 1):
            debugger.set_mode(hook, "TRAIN")
            train = engine.train_one_epoch(
                train_module, loaders["train"], criterion=criterion, optimizer=optimizer, scheduler=scheduler,
                scaler=scaler, device=device, amp=amp, epoch=epoch, epochs=args.epochs,
                total_steps=steps["train"], set_train_mode=set_train_mode, timings=timings,
                skipped=skipped, stop=stop, log_interval_s=args.log_interval_s)
            if not train.completed:
                stopped_reason = stop.reason
                log.warning("received %s during epoch %d: stopping after step %d, saving a checkpoint and "
                            "the best model so far", stop.reason, epoch, train.steps)
                if args.checkpoint:
                    checkpointing.save_checkpoint(
                        paths.checkpoint_dir, model=model, optimizer=optimizer, scheduler=scheduler,
                        progress=progress, hyperparameters=to_dict(args), class_names=class_names,
                        arch=args.arch, interrupted_in_epoch=epoch)
                    log.info("checkpoint written mid-epoch %d; a restarted job repeats that epoch", epoch)
                break
            print_metric(contract.format_train_metrics(epoch, train.loss))

            debugger.set_mode(hook, "EVAL")
            valid = engine.evaluate(train_module, loaders["valid"], criterion=criterion, device=device, amp=amp,
                                    epoch=epoch, total_steps=steps["valid"], timings=timings,
                                    skipped=skipped, stop=engine.StopFlag(), split="valid")
            print_metric(contract.format_valid_metrics(epoch, valid.loss, valid.accuracy))
            log.info("epoch %d/%d: train loss %.4f acc %.3f (%d img, %.1f img/s) | valid loss %.4f acc %.3f",
                     epoch, args.epochs, train.loss, train.accuracy, train.images,
                     train.images / max(train.seconds, 1e-9), valid.loss, valid.accuracy)

            record_epoch(progress, model, epoch, train, valid, optimizer)
            if args.checkpoint:
                checkpointing.save_checkpoint(
                    paths.checkpoint_dir, model=model, optimizer=optimizer, scheduler=scheduler,
                    progress=progress, hyperparameters=to_dict(args), class_names=class_names, arch=args.arch)
            if stop:
                stopped_reason = stop.reason
                log.warning("received %s: stopping after epoch %d", stop.reason, epoch)
                break
            if args.early_stopping_patience and progress.epochs_without_improvement >= args.early_stopping_patience:
                log.info("early stopping: validation accuracy has not improved for %d epochs (best %.4f "
                         "at epoch %d)", progress.epochs_without_improvement, progress.best_accuracy,
                         progress.best_epoch)
                break

        # --- final model: best validation weights ---------------------------------------------
        if progress.best_model is not None:
            model.load_state_dict(progress.best_model)
            chosen = f"best validation accuracy {progress.best_accuracy:.4f} (epoch {progress.best_epoch})"
        else:
            chosen = "the current weights (no epoch finished before the stop)"
        test = None
        if "test" in loaders and stopped_reason is None:
            debugger.set_mode(hook, "EVAL")
            test = engine.evaluate(model, loaders["test"], criterion=criterion, device=device, amp=amp,
                                   epoch=progress.epoch, total_steps=steps["test"], timings=timings,
                                   skipped=skipped, stop=engine.StopFlag(), split="test")
            print_metric(contract.format_test_metrics(test.loss, test.accuracy))
        save_model_artifact(paths.model_dir, model, class_names, config)
        log.info("model artifact saved to %s with %s", paths.model_dir, chosen)

    if hook is not None:
        hook.close()
    timings.close()
    summary = {
        "status": "stopped" if stopped_reason else "completed",
        "stopped_by": stopped_reason,
        "epochs_completed": progress.epoch,
        "resumed_from_epoch": resumed_from,
        "best_epoch": progress.best_epoch,
        "best_valid_accuracy": progress.best_accuracy if progress.best_epoch else None,
        "model_weights": "best_validation" if progress.best_model is not None else "last",
        "history": progress.history,
        "test": {"loss": test.loss, "accuracy": test.accuracy, "images": test.images} if test else None,
        "skipped_images": skipped.count,
        "skipped_files": sorted(skipped.files)[:100],
        "num_classes": len(class_names),
        "class_names": class_names,
        "images": {name: len(split.samples) for name, split in splits.items()},
        "hyperparameters": to_dict(args),
        "model_config": config.to_json(),
        "device": str(device),
        "feature_cache": bool(use_cache),
        "seconds": round(time.monotonic() - started, 2),
    }
    write_metrics(paths.output_data_dir, summary)
    if skipped.count:
        log.warning("%d unreadable image(s) were skipped (listed in %s)", skipped.count, contract.METRICS_FILE)
    if stopped_reason:
        log.warning("stopped early (%s) after %d of %d epochs; checkpoint and model saved",
                    stopped_reason, progress.epoch, args.epochs)
    else:
        log.info("training finished: %d epochs, %s", progress.epoch, chosen)
    return summary


def record_epoch(progress: checkpointing.TrainingProgress, model: nn.Module, epoch: int,
                 train: engine.EpochResult, valid: engine.EpochResult, optimizer) -> None:
    progress.epoch = epoch
    progress.history.append({
        "epoch": epoch, "train_loss": train.loss, "train_acc": train.accuracy,
        "valid_loss": valid.loss, "valid_acc": valid.accuracy,
        "lr": optimizer.param_groups[0]["lr"], "train_seconds": round(train.seconds, 3),
        "train_images_per_s": round(train.images / max(train.seconds, 1e-9), 2),
    })
    if valid.accuracy > progress.best_accuracy:
        progress.best_accuracy = valid.accuracy
        progress.best_epoch = epoch
        progress.best_model = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        progress.epochs_without_improvement = 0
    else:
        progress.epochs_without_improvement += 1


def _finite_or_none(x):
    """metrics.json stays strict JSON: NaN/inf (e.g. a skipped evaluation) become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite_or_none(v) for v in x]
    return x


def write_metrics(output_data_dir: Path, summary: dict) -> None:
    output_data_dir.mkdir(parents=True, exist_ok=True)
    path = output_data_dir / contract.METRICS_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_finite_or_none(summary), indent=1, allow_nan=False))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Run the job; returns the process exit code (0 = done or stopped early, 1 = failed)."""
    setup_logging()
    paths = resolve_paths()
    stop = engine.StopFlag()
    install_stop_handler(stop)
    try:
        args = parse_hyperparameters(sys.argv[1:] if argv is None else argv)
        run(args, paths, stop)
        return 0
    except EXPECTED_ERRORS as e:
        message = str(e)
        write_failure_file(paths.failure_file, message)
        log.error("training failed: %s", message)
        return 1
    except Exception as e:  # noqa: BLE001 - a bug: report it the same way, with its traceback
        write_failure_file(paths.failure_file, describe_unexpected(e))
        log.exception("training failed with an unexpected error")
        return 1


if __name__ == "__main__":
    # The toolkit runs this file as a script (python train.py --lr ...); container_train must be
    # importable (installed in the image, PYTHONPATH=<repo root> in local process mode).
    sys.exit(main())
