"""Training job entry point: fine-tune an image classifier on the SageMaker training contract.

The training image copies this file to ``/opt/ml/code/train.py`` and sets
``SAGEMAKER_PROGRAM=train.py``; the ``sagemaker-training`` toolkit's ``train`` command then runs
``python train.py --lr 0.01 --batch-size 32 ...`` with the hyperparameters of the job. Paths come
from the toolkit's environment (see :mod:`container_train.job_env`).

What one run does, one function per phase (:func:`run` calls them in order):

1. :func:`load_data`: find and check the splits (:mod:`container_train.data`) and make their
   loaders, as many workers as ``/dev/shm`` allows (:mod:`container_train.loader_limits`);
2. :func:`make_model`: the network with its pretrained weights and freeze policy
   (:mod:`container_train.pretrained`); with ``freeze=head``
   :func:`container_train.head_features.prepare` swaps the image loaders for backbone features (the
   cache, or a ``features`` channel); ``task=extract-features`` writes them as the artifact instead;
3. :func:`make_optimisation` and :func:`resume`: loss, optimizer, LR schedule, and this job's
   checkpoint when there is one (:mod:`container_train.checkpointing`);
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
from dataclasses import dataclass, field, replace

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
from container_train.data import ImageFolderDataset, SkipCounter, load_splits, make_loader, train_transform
from container_train.errors import TrainingError, describe_unexpected, write_failure_file
from container_train.hyperparameters import HyperparameterError, parse_hyperparameters, to_dict
from container_train.job_env import JobPaths, on_sagemaker, resolve_paths, training_job_name
from container_train.job_log import print_metric, print_metrics_here, setup_logging
from container_train.loader_limits import LoaderPlan, plan_loading
from container_train.precision import Precision, choose_precision
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


@dataclass
class Job:
    """What the phases share; each phase fills in its part."""

    args: object
    paths: JobPaths
    stop: engine.StopFlag
    device: torch.device
    precision: Precision
    phases: Phases
    ranks: distributed.Ranks = distributed.SINGLE
    started: float = field(default_factory=time.monotonic)
    # load_data
    splits: dict = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    config: ModelConfig | None = None
    plan: LoaderPlan | None = None
    loaders: dict = field(default_factory=dict)
    steps: dict = field(default_factory=dict)
    # make_model / head_features.prepare
    model: nn.Module | None = None
    train_module: nn.Module | None = None
    test_module: nn.Module | None = None      # the model, or its head when the test split is features
    use_cache: bool = False
    # a features channel (container_train.head_features)
    features_manifest: dict | None = None
    features_folder: object = None
    features_scratch: object = None
    feature_counts: dict = field(default_factory=dict)   # task=extract-features: what was written
    # make_optimisation
    criterion: nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: object = None
    scaler: torch.amp.GradScaler | None = None
    # resume and after
    progress: checkpointing.TrainingState = field(default_factory=checkpointing.TrainingState)
    resumed_from: int | None = None
    hook: object = None
    epoch_loss: debugger.EpochLoss = field(default_factory=debugger.EpochLoss)
    skipped: SkipCounter = field(default_factory=SkipCounter)
    stopped_reason: str | None = None


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
    job = Job(args, paths, distributed.agreed_stop(stop, ranks), device,
              precision=choose_precision(device, args.amp, args.freeze), phases=phases, ranks=ranks)
    log.info("device: %s; %s; hyperparameters: %s", device, job.precision.note, json.dumps(to_dict(args)))
    timings = StepTimings(paths.output_data_dir)
    with SystemSampler(paths.output_data_dir):
        with phases.phase("data preparation"):
            load_data(job)
        with phases.phase("model setup"):
            make_model(job)
        extracting = args.task == contract.TASK_EXTRACT_FEATURES
        try:
            if extracting:
                head_features.extract_dataset(job, timings)
            else:
                head_features.prepare(job, timings)
        except feature_cache.ExtractionStopped as e:
            job.stopped_reason = stop.reason
            log.warning("received %s while computing the feature cache: %s, kept in %s; a restarted job "
                        "carries on from there", stop.reason, e, contract.quote_path(e.kept_in))
        test, chosen = (None, "") if extracting else fit_and_test(job, timings)
    with phases.phase("artifact save"):
        if job.hook is not None:
            job.hook.close()
        timings.close()
        summary = head_features.extraction_summary(job) if extracting else summary_of(job, test, chosen)
    phases.close()
    return summary


def fit_and_test(job: Job, timings: StepTimings) -> tuple[engine.EpochResult | None, str]:
    """The train task after its inputs are ready: epochs (unless stopped already), test, artifact."""
    if job.stopped_reason is None:
        with job.phases.phase("model setup"):
            make_optimisation(job)
            resume(job)
            attach_hook(job)
        train_epochs(job, timings)
    return test_and_save(job, timings)


def load_data(job: Job) -> None:
    """Splits, the model config they imply, and one loader per split."""
    args = job.args
    if 0 < args.resize_size < args.image_size:
        raise HyperparameterError(f"resize-size {args.resize_size} is smaller than image-size {args.image_size}: "
                                  "the centre crop would not fit (0 = the default, image-size = no crop)")
    job.features_manifest = head_features.channel_manifest(job)
    if job.features_manifest is not None:     # no images: the head trains on the channel's features
        job.class_names = list(job.features_manifest["class_names"])
        job.config = _model_config(args, len(job.class_names))
        job.plan = plan_loading(0, args.batch_size, args.image_size, timeout_s=args.loader_timeout_s, loaders=1)
        return
    job.splits = load_splits(job.paths.channels)
    job.class_names = job.splits["train"].class_names
    job.config = _model_config(args, len(job.class_names))
    for split in job.splits.values():
        log.info("%s split: %d images in %d classes from %s", split.name, len(split.samples),
                 len(split.class_folders), contract.quote_path(split.root))
    if "test" not in job.splits:
        log.warning("no test data (no 'test' channel and no test/ folder): skipping the test metrics")
    job.plan = plan_loading(args.workers, args.batch_size, args.image_size, timeout_s=args.loader_timeout_s,
                            loaders=len(job.splits))
    if job.plan.note:
        log.warning(job.plan.note)
    pin = job.device.type == "cuda"
    for name, split in job.splits.items():
        transform = train_transform(job.config) if name == "train" else eval_transform(job.config)
        dataset = ImageFolderDataset(split, transform)
        job.loaders[name] = make_loader(dataset, args.batch_size, name == "train", job.plan, args.seed, pin,
                                        distributed.sampler(dataset, job.ranks, train=name == "train", seed=args.seed))
    job.steps = {name: engine.steps_in(len(loader), args.max_steps_per_epoch) for name, loader in job.loaders.items()}


def _model_config(args, num_classes: int) -> ModelConfig:
    return ModelConfig(arch=args.arch, num_classes=num_classes, image_size=args.image_size,
                       resize_size=args.resize_size or ModelConfig.default_resize(args.image_size))


def make_model(job: Job) -> None:
    args = job.args
    job.model = build_model(args.arch, len(job.class_names), args.pretrained, args.freeze,
                            pretrained_channel=job.paths.channel("pretrained"), weights_path=args.pretrained_weights)
    job.model.to(job.device)
    if job.precision.channels_last:
        job.model.to(memory_format=torch.channels_last)
    job.train_module = job.model
    try:
        job.use_cache = feature_cache.enabled(args.freeze, args.feature_cache)
    except ValueError as e:
        raise HyperparameterError(str(e)) from None


def make_optimisation(job: Job) -> None:
    args = job.args
    job.criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    job.optimizer = engine.make_optimizer(args.optimizer, job.model.parameters(), args.lr, args.momentum,
                                          args.weight_decay)
    job.scheduler = engine.make_scheduler(job.optimizer, args.lr_scheduler, job.steps["train"], args.epochs,
                                          args.warmup_epochs, args.lr_step_size)
    job.scaler = torch.amp.GradScaler(job.device.type, enabled=job.precision.grad_scaler)


def resume(job: Job) -> None:
    """Continue this job's checkpoint, if there is one (a spot restart); refuse anyone else's."""
    args, where = job.args, job.paths.checkpoint_dir
    if not args.checkpoint:
        return
    state = distributed.from_rank0(lambda: checkpointing.load_checkpoint(where), job.ranks)  # one for all ranks
    if state is None:
        log.info("no checkpoint in %s: starting from epoch 1", contract.quote_path(where))
        return
    checkpointing.check_resumable(state, arch=args.arch, class_names=job.class_names,
                                  job_name=training_job_name(), hyperparameters=to_dict(args))
    job.progress = checkpointing.restore(state, model=job.model, optimizer=job.optimizer, scheduler=job.scheduler)
    job.resumed_from = job.progress.epoch
    note = (f" (it was interrupted during epoch {state['interrupted_in_epoch']}, which restarts)"
            if state.get("interrupted_in_epoch") else "")
    log.info("resumed from checkpoint %s: %d of %d epochs done%s",
             contract.quote_path(where / contract.CHECKPOINT_FILE), job.progress.epoch, args.epochs, note)
    if job.use_cache:
        job.loaders["train"].epoch_index = job.progress.epoch   # replay the data order a fresh run would see


def attach_hook(job: Job) -> None:
    if not job.args.debugger or not job.ranks.is_main:
        return
    # A reused /opt/ml tree (local restarts) still holds the previous run's tensors.
    debugger.rotate_previous_tensors(job.paths.base, job.resumed_from or 0)
    job.hook, description = debugger.create_hook(job.paths.base, job.args.debugger_save_interval,
                                                 on_sagemaker=on_sagemaker())
    if job.hook is not None:
        job.hook.register_module(job.train_module)
        job.hook.register_loss(job.epoch_loss)
    log.info("smdebug hook: %s", description)


def save_checkpoint(job: Job, interrupted_in_epoch: int | None = None) -> None:
    if job.args.checkpoint and job.ranks.is_main:
        checkpointing.save_checkpoint(
            job.paths.checkpoint_dir, model=job.model, optimizer=job.optimizer, scheduler=job.scheduler,
            progress=job.progress, hyperparameters=to_dict(job.args), class_names=job.class_names,
            arch=job.args.arch, job_name=training_job_name(), interrupted_in_epoch=interrupted_in_epoch)


def train_epochs(job: Job, timings: StepTimings) -> None:
    """Epochs after the resumed one; sets ``job.stopped_reason`` when a stop request ends them."""
    args, stop = job.args, job.stop
    common = dict(criterion=job.criterion, device=job.device, precision=job.precision, timings=timings,
                  skipped=job.skipped)
    phase, ranks = job.phases.phase, job.ranks
    module = distributed.wrap(job.train_module, ranks, job.device)    # DDP when there are other ranks
    for epoch in range(job.progress.epoch + 1, args.epochs + 1):
        with phase("training", epoch=epoch):
            debugger.set_mode(job.hook, "TRAIN")
            distributed.set_epoch(job.loaders["train"], epoch)
            train = distributed.reduce_result(engine.train_one_epoch(
                module, job.loaders["train"], optimizer=job.optimizer, scheduler=job.scheduler,
                scaler=job.scaler, epoch=epoch, epochs=args.epochs, total_steps=job.steps["train"],
                set_train_mode=set_train_mode, stop=stop, log_interval_s=args.log_interval_s, **common), ranks)
        if not train.completed:
            job.stopped_reason = stop.reason
            log.warning("received %s during epoch %d: stopping after step %d, saving a checkpoint and "
                        "the best model so far", stop.reason, epoch, train.steps)
            with phase("checkpoint", epoch=epoch):
                save_checkpoint(job, interrupted_in_epoch=epoch)
            log.info("checkpoint written mid-epoch %d; a restarted job repeats that epoch", epoch)
            return
        print_metric(contract.format_train_metrics(epoch, train.loss))
        with phase("validation", epoch=epoch):
            debugger.record_epoch_loss(job.hook, job.epoch_loss, train.loss)
            debugger.set_mode(job.hook, "EVAL")
            valid = distributed.reduce_result(engine.evaluate(
                job.train_module, job.loaders["valid"], epoch=epoch, total_steps=job.steps["valid"],
                stop=engine.StopFlag(), split="valid", **common), ranks)
            debugger.record_epoch_loss(job.hook, job.epoch_loss, valid.loss)
        print_metric(contract.format_valid_metrics(epoch, valid.loss, valid.accuracy))
        log.info("epoch %d/%d: train loss %.4f acc %.3f (%d img, %.1f img/s) | valid loss %.4f acc %.3f",
                 epoch, args.epochs, train.loss, train.accuracy, train.images,
                 train.images / max(train.seconds, 1e-9), valid.loss, valid.accuracy)
        with phase("checkpoint", epoch=epoch):
            job.progress.record(epoch, train, valid, job.model, job.optimizer.param_groups[0]["lr"])
            save_checkpoint(job)
        if stop:
            job.stopped_reason = stop.reason
            log.warning("received %s: stopping after epoch %d", stop.reason, epoch)
            return
        if args.early_stopping_patience and job.progress.epochs_without_improvement >= args.early_stopping_patience:
            log.info("early stopping: validation accuracy has not improved for %d epochs (best %.4f at epoch %d)",
                     job.progress.epochs_without_improvement, job.progress.best_accuracy, job.progress.best_epoch)
            return


def test_and_save(job: Job, timings: StepTimings) -> tuple[engine.EpochResult | None, str]:
    """Test the best-validation weights (unless stopped) and save them as the model artifact."""
    progress = job.progress
    if progress.best_model is not None:
        job.model.load_state_dict(progress.best_model)
        chosen = f"best validation accuracy {progress.best_accuracy:.4f} (epoch {progress.best_epoch})"
    else:
        chosen = "the current weights (no epoch finished before the stop)"
    test = None
    if "test" in job.loaders and job.stopped_reason is None:
        with job.phases.phase("test"):
            debugger.set_mode(job.hook, "EVAL")
            test = distributed.reduce_result(engine.evaluate(
                job.test_module or job.model, job.loaders["test"], criterion=job.criterion, device=job.device, precision=job.precision,
                epoch=progress.epoch, total_steps=job.steps["test"], timings=timings, skipped=job.skipped,
                stop=engine.StopFlag(), split="test"), job.ranks)
        print_metric(contract.format_test_metrics(test.loss, test.accuracy))
    with job.phases.phase("artifact save"):
        if job.ranks.is_main:
            save_model_artifact(job.paths.model_dir, job.model, job.class_names, job.config)
    log.info("model artifact saved to %s with %s", contract.quote_path(job.paths.model_dir), chosen)
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
