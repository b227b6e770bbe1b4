"""Training job entry point: fine-tune an image classifier on the SageMaker training contract.

The training image copies this file to ``/opt/ml/code/train.py`` and sets
``SAGEMAKER_PROGRAM=train.py``; the ``sagemaker-training`` toolkit's ``train`` command then runs
``python train.py --lr 0.01 --batch-size 32 ...`` with the hyperparameters of the job. Paths come
from the toolkit's environment (see :mod:`container_train.job_env`).

What one run does, top to bottom in :func:`run` (as torchvision's reference ``main`` in
``references/classification/train.py``); each phase returns what it builds
(:mod:`container_train.job_parts`) and the later ones take it as arguments:

1. :func:`load_data` -> ``Data``: find and check the splits (:mod:`container_train.data`) and make
   their loaders, as many workers as ``/dev/shm`` allows (:mod:`container_train.loader_limits`);
2. :func:`make_model` -> ``Network``: the network with its pretrained weights and freeze policy
   (:mod:`container_train.pretrained`); with ``freeze=head``
   :func:`container_train.head_features.prepare` returns ``Data`` and ``Network`` on backbone features
   (the cache, or a ``features`` channel); ``task=extract-features`` writes them as the artifact instead;
3. :func:`make_optimisation` -> ``Optimisation`` and :func:`resume` -> ``Fit``: loss, optimizer, LR
   schedule, and the training's record, from this job's checkpoint when there is one
   (:mod:`container_train.checkpointing`);
4. :func:`train_epochs`: per epoch train, validate, print the metric lines
   (:mod:`container_train.contract`), keep the best-validation-accuracy weights, checkpoint;
5. :func:`test_and_save`: test the **best-validation** weights and save them as the model
   artifact (:func:`byoc_common.artifact.save_model_artifact`); :func:`container_train.summary.summary_of` writes ``metrics.json``.

Failures: an expected problem (bad hyperparameter, missing/empty/inconsistent data, unusable
pretrained weights, a dead data loader, someone else's checkpoint) writes a one-line reason to
``<base>/output/failure`` (SageMaker's ``FailureReason``) and exits 1; an unexpected exception
writes its message and traceback tail.

Hosts and GPUs: with more than one, :mod:`container_train.launch` runs this script under torchrun
and :mod:`container_train.distributed` makes it data-parallel (DDP; global batch = batch-size x
world size); rank 0 alone prints the metric lines and writes the artifact, metrics and checkpoints.

Stopping: on SIGTERM (StopTrainingJob, spot interruption, a Debugger rule's StopTraining action)
the current step finishes (or the current batch of a feature-cache extraction, whose progress is
kept), a checkpoint is written, the best weights so far are saved as the model artifact and the job
exits 0 with a "stopped early" message, so the model is uploaded.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import sys
import time
from dataclasses import replace

import numpy as np
import psutil
import torch
from torch import nn

from byoc_common.architectures import UnknownArchitectureError
from byoc_common.artifact import ModelConfig, save_model_artifact
from byoc_common.preprocessing import eval_transform
from container_train import (
    checkpointing,
    contract,
    debugger,
    distributed,
    engine,
    feature_cache,
    head_features,
)
from container_train.data import ImageFolderDataset, load_splits, make_loader, train_transform
from container_train.errors import TrainingError, describe_unexpected, write_failure_file
from container_train.hyperparameters import HyperparameterError, parse_hyperparameters, to_dict
from container_train.job_env import JobPaths, on_sagemaker, resolve_paths, training_job_name
from container_train.job_log import print_metric, print_metrics_here, setup_logging
from container_train.job_parts import Context, Data, Fit, Network, Optimisation
from container_train.loader_limits import plan_loading
from container_train.precision import choose_precision
from container_train.pretrained import build_model, set_train_mode
from container_train.profiling import Phases, StepTimings, SystemSampler
from container_train.summary import summary_of

log = logging.getLogger("container_train")
EXPECTED_ERRORS = (TrainingError, HyperparameterError, UnknownArchitectureError)


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
    """The whole job; returns the metrics summary written to metrics.json. Every phase is timed
    (:class:`~container_train.profiling.Phases`), from the process's start to its last write."""
    process_start = psutil.Process().create_time()
    ranks = distributed.ranks_from_env()
    if ranks.local_rank:    # a host's other ranks profile beside its first
        paths = replace(paths, output_data_dir=paths.output_data_dir / f"rank-{ranks.rank}")
    phases = Phases(paths.output_data_dir)
    phases.record("start-up", process_start, time.time() - process_start)   # interpreter, imports, toolkit
    seed_everything(args.seed)
    device = distributed.choose_device(ranks)
    distributed.start(ranks, device)
    print_metrics_here(ranks.is_main)
    ctx = Context(args, paths, distributed.agreed_stop(stop, ranks), device,
                  choose_precision(device, args.amp, args.freeze), ranks, phases, StepTimings(paths.output_data_dir))
    log.info("device: %s (%d intra-op threads); %s; hyperparameters: %s", device, torch.get_num_threads(),
             ctx.precision.note, json.dumps(to_dict(args)))
    extracting = args.task == contract.TASK_EXTRACT_FEATURES
    with SystemSampler(paths.output_data_dir):
        with phases.phase("data preparation"):
            data = load_data(ctx)
        with phases.phase("model setup"):
            net = make_model(ctx, data)
        if extracting:
            counts, stopped_reason = extract_features(ctx, data, net)
        else:
            fit, test, chosen = fit_and_test(ctx, data, net)
    with phases.phase("artifact save"):
        if not extracting and fit.hook is not None:
            fit.hook.close()
        ctx.timings.close()
        summary = (head_features.extraction_summary(ctx, data, counts, stopped_reason) if extracting
                   else summary_of(ctx, data, net, fit, test, chosen))
    phases.close()
    return summary


def _extraction_stopped(ctx: Context, stopped: feature_cache.ExtractionStopped) -> str:
    reason = distributed.local_stop(ctx.stop).reason
    log.warning("received %s while computing the feature cache: %s, kept in %s; a restarted job "
                "carries on from there", reason, stopped, contract.quote_path(stopped.kept_in))
    return reason


def extract_features(ctx: Context, data: Data, net: Network) -> tuple[dict, str | None]:
    """``task=extract-features``: the features as the artifact; what was written, and the stop reason."""
    try:
        return head_features.extract_dataset(ctx, data, net), None
    except feature_cache.ExtractionStopped as e:
        return {}, _extraction_stopped(ctx, e)


def fit_and_test(ctx: Context, data: Data, net: Network) -> tuple[Fit, engine.EpochResult | None, str]:
    """The train task: the head's features when it trains alone, epochs, test, artifact."""
    try:
        data, net = head_features.prepare(ctx, data, net)
    except feature_cache.ExtractionStopped as e:
        fit = Fit(stopped_reason=_extraction_stopped(ctx, e))
        return (fit, *test_and_save(ctx, data, net, None, fit))
    with ctx.phases.phase("model setup"):
        opt = make_optimisation(ctx, data, net)
        fit = resume(ctx, data, net, opt)
        fit.hook = attach_hook(ctx, net, fit)
    train_epochs(ctx, data, net, opt, fit)
    return (fit, *test_and_save(ctx, data, net, opt, fit))


def load_data(ctx: Context) -> Data:
    """Splits (or a features channel), the model config they imply, and one loader per split."""
    args = ctx.args
    if 0 < args.resize_size < args.image_size:
        raise HyperparameterError(f"resize-size {args.resize_size} is smaller than image-size {args.image_size}: "
                                  "the centre crop would not fit (0 = the default, image-size = no crop)")
    features = head_features.open_channel(ctx)
    if features is not None:     # no images: the head trains on the channel's features
        class_names = list(features.manifest["class_names"])
        plan = plan_loading(0, args.batch_size, args.image_size, timeout_s=args.loader_timeout_s, loaders=1)
        return Data(class_names, _model_config(args, len(class_names)), plan, features=features)
    splits = load_splits(ctx.paths.channels)
    class_names = splits["train"].class_names
    config = _model_config(args, len(class_names))
    for split in splits.values():
        log.info("%s split: %d images in %d classes from %s", split.name, len(split.samples),
                 len(split.class_folders), contract.quote_path(split.root))
    if "test" not in splits:
        log.warning("no test data (no 'test' channel and no test/ folder): skipping the test metrics")
    plan = plan_loading(args.workers, args.batch_size, args.image_size, timeout_s=args.loader_timeout_s,
                        loaders=len(splits))
    if plan.note:
        log.warning(plan.note)
    pin = ctx.device.type == "cuda"
    loaders = {}
    for name, split in splits.items():
        transform = train_transform(config) if name == "train" else eval_transform(config)
        dataset = ImageFolderDataset(split, transform)
        loaders[name] = make_loader(dataset, args.batch_size, name == "train", plan, args.seed, pin,
                                    distributed.sampler(dataset, ctx.ranks, train=name == "train", seed=args.seed))
    steps = {name: engine.steps_in(len(loader), args.max_steps_per_epoch) for name, loader in loaders.items()}
    return Data(class_names, config, plan, splits, loaders, steps)


def _model_config(args, num_classes: int) -> ModelConfig:
    return ModelConfig(arch=args.arch, num_classes=num_classes, image_size=args.image_size,
                       resize_size=args.resize_size or ModelConfig.default_resize(args.image_size))


def make_model(ctx: Context, data: Data) -> Network:
    args = ctx.args
    model = build_model(args.arch, len(data.class_names), args.pretrained, args.freeze,
                        pretrained_channel=ctx.paths.channel("pretrained"), weights_path=args.pretrained_weights)
    model.to(ctx.device)
    if ctx.precision.channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        use_cache = feature_cache.enabled(args.freeze, args.feature_cache)
    except ValueError as e:
        raise HyperparameterError(str(e)) from None
    return Network(model, train_module=model, test_module=model, use_cache=use_cache)


def make_optimisation(ctx: Context, data: Data, net: Network) -> Optimisation:
    args = ctx.args
    optimizer = engine.make_optimizer(args.optimizer, net.model.parameters(), args.lr, args.momentum,
                                      args.weight_decay)
    scheduler = engine.make_scheduler(optimizer, args.lr_scheduler, data.steps["train"], args.epochs,
                                      args.warmup_epochs, args.lr_step_size)
    return Optimisation(criterion=nn.CrossEntropyLoss(label_smoothing=args.label_smoothing), optimizer=optimizer,
                        scheduler=scheduler, scaler=torch.amp.GradScaler(ctx.device.type,
                                                                         enabled=ctx.precision.grad_scaler))


def resume(ctx: Context, data: Data, net: Network, opt: Optimisation) -> Fit:
    """The training's record: from this job's checkpoint, if there is one (a spot restart; anyone
    else's is refused), else a fresh one."""
    args, where = ctx.args, ctx.paths.checkpoint_dir
    if not args.checkpoint:
        return Fit()
    state = distributed.from_rank0(lambda: checkpointing.load_checkpoint(where), ctx.ranks)  # one for all ranks
    if state is None:
        log.info("no checkpoint in %s: starting from epoch 1", contract.quote_path(where))
        return Fit()
    checkpointing.check_resumable(state, arch=args.arch, class_names=data.class_names,
                                  job_name=training_job_name(), hyperparameters=to_dict(args))
    progress = checkpointing.restore(state, model=net.model, optimizer=opt.optimizer, scheduler=opt.scheduler)
    note = (f" (it was interrupted during epoch {state['interrupted_in_epoch']}, which restarts)"
            if state.get("interrupted_in_epoch") else "")
    log.info("resumed from checkpoint %s: %d of %d epochs done%s",
             contract.quote_path(where / contract.CHECKPOINT_FILE), progress.epoch, args.epochs, note)
    if net.use_cache:
        data.loaders["train"].epoch_index = progress.epoch   # replay the data order a fresh run would see
    return Fit(progress=progress, resumed_from=progress.epoch)


def attach_hook(ctx: Context, net: Network, fit: Fit):
    """The Debugger hook on the training module and the epoch losses (rank 0), or None."""
    if not ctx.args.debugger or not ctx.ranks.is_main:
        return None
    # A reused /opt/ml tree (local restarts) still holds the previous run's tensors.
    debugger.rotate_previous_tensors(ctx.paths.base, fit.resumed_from or 0)
    hook, description = debugger.create_hook(ctx.paths.base, ctx.args.debugger_save_interval,
                                             on_sagemaker=on_sagemaker())
    if hook is not None:
        hook.register_module(net.train_module)
        hook.register_loss(fit.epoch_loss)
    log.info("smdebug hook: %s", description)
    return hook


def save_checkpoint(ctx: Context, data: Data, net: Network, opt: Optimisation, fit: Fit,
                    interrupted_in_epoch: int | None = None) -> None:
    if ctx.args.checkpoint and ctx.ranks.is_main:
        checkpointing.save_checkpoint(
            ctx.paths.checkpoint_dir, model=net.model, optimizer=opt.optimizer, scheduler=opt.scheduler,
            progress=fit.progress, hyperparameters=to_dict(ctx.args), class_names=data.class_names,
            arch=ctx.args.arch, job_name=training_job_name(), interrupted_in_epoch=interrupted_in_epoch)


def train_epochs(ctx: Context, data: Data, net: Network, opt: Optimisation, fit: Fit) -> None:
    """Epochs after the resumed one, recorded in ``fit``; sets ``fit.stopped_reason`` when a stop
    request ends them."""
    args, stop, progress = ctx.args, ctx.stop, fit.progress
    common = dict(criterion=opt.criterion, device=ctx.device, precision=ctx.precision, timings=ctx.timings,
                  skipped=fit.skipped)
    phase, ranks, hook = ctx.phases.phase, ctx.ranks, fit.hook
    module = distributed.wrap(net.train_module, ranks, ctx.device)    # DDP when there are other ranks
    for epoch in range(progress.epoch + 1, args.epochs + 1):
        with phase("training", epoch=epoch):
            debugger.set_mode(hook, "TRAIN")
            distributed.set_epoch(data.loaders["train"], epoch)
            train = distributed.reduce_result(engine.train_one_epoch(
                module, data.loaders["train"], optimizer=opt.optimizer, scheduler=opt.scheduler,
                scaler=opt.scaler, epoch=epoch, epochs=args.epochs, total_steps=data.steps["train"],
                set_train_mode=set_train_mode, stop=stop, log_interval_s=args.log_interval_s, **common), ranks)
        if not train.completed:
            fit.stopped_reason = stop.reason
            log.warning("received %s during epoch %d: stopping after step %d, saving a checkpoint and "
                        "the best model so far", stop.reason, epoch, train.steps)
            with phase("checkpoint", epoch=epoch):
                save_checkpoint(ctx, data, net, opt, fit, interrupted_in_epoch=epoch)
            log.info("checkpoint written mid-epoch %d; a restarted job repeats that epoch", epoch)
            return
        print_metric(contract.format_train_metrics(epoch, train.loss))
        with phase("validation", epoch=epoch):
            debugger.record_epoch_loss(hook, fit.epoch_loss, train.loss)
            debugger.set_mode(hook, "EVAL")
            valid = distributed.reduce_result(engine.evaluate(
                net.train_module, data.loaders["valid"], epoch=epoch, total_steps=data.steps["valid"],
                stop=engine.StopFlag(), split="valid", **common), ranks)
            debugger.record_epoch_loss(hook, fit.epoch_loss, valid.loss)
        print_metric(contract.format_valid_metrics(epoch, valid.loss, valid.accuracy))
        log.info("epoch %d/%d: train loss %.4f acc %.3f (%d img, %.1f img/s) | valid loss %.4f acc %.3f",
                 epoch, args.epochs, train.loss, train.accuracy, train.images,
                 train.images / max(train.seconds, 1e-9), valid.loss, valid.accuracy)
        with phase("checkpoint", epoch=epoch):
            progress.record(epoch, train, valid, net.model, opt.optimizer.param_groups[0]["lr"])
            save_checkpoint(ctx, data, net, opt, fit)
        if stop:
            fit.stopped_reason = stop.reason
            log.warning("received %s: stopping after epoch %d", stop.reason, epoch)
            return
        if args.early_stopping_patience and progress.epochs_without_improvement >= args.early_stopping_patience:
            log.info("early stopping: validation accuracy has not improved for %d epochs (best %.4f at epoch %d)",
                     progress.epochs_without_improvement, progress.best_accuracy, progress.best_epoch)
            return


def test_and_save(ctx: Context, data: Data, net: Network, opt: Optimisation | None,
                  fit: Fit) -> tuple[engine.EpochResult | None, str]:
    """Test the best-validation weights (unless stopped) and save them as the model artifact; returns
    the test figures and which weights were chosen."""
    progress = fit.progress
    if progress.best_model is not None:
        net.model.load_state_dict(progress.best_model)
        chosen = f"best validation accuracy {progress.best_accuracy:.4f} (epoch {progress.best_epoch})"
    else:
        chosen = "the current weights (no epoch finished before the stop)"
    test = None
    if "test" in data.loaders and fit.stopped_reason is None:
        with ctx.phases.phase("test"):
            debugger.set_mode(fit.hook, "EVAL")
            test = distributed.reduce_result(engine.evaluate(
                net.test_module, data.loaders["test"], criterion=opt.criterion, device=ctx.device,
                precision=ctx.precision, epoch=progress.epoch, total_steps=data.steps["test"], timings=ctx.timings,
                skipped=fit.skipped, stop=engine.StopFlag(), split="test"), ctx.ranks)
        print_metric(contract.format_test_metrics(test.loss, test.accuracy))
    with ctx.phases.phase("artifact save"):
        if ctx.ranks.is_main:
            save_model_artifact(ctx.paths.model_dir, net.model, data.class_names, data.config)
    log.info("model artifact saved to %s with %s", contract.quote_path(ctx.paths.model_dir), chosen)
    return test, chosen


def main(argv: list[str] | None = None) -> int:
    """Run the job; returns the process exit code (0 = done or stopped early, 1 = failed)."""
    setup_logging()
    ranks = distributed.ranks_from_env()
    distributed.quiet_other_ranks(ranks)
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
        write_failure_file(paths.failure_file, distributed.explain(e, ranks) or describe_unexpected(e))
        log.exception("training failed with an unexpected error")
        return 1
    finally:
        distributed.stop()


if __name__ == "__main__":
    # The toolkit runs this file as a script (python train.py --lr ...); container_train must be
    # importable (installed in the image, PYTHONPATH=<repo root> in local process mode).
    sys.exit(main())
