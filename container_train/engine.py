"""One epoch of training and one pass of evaluation, independent of where batches come from.

:func:`train_one_epoch` and :func:`evaluate` take any ``nn.Module`` and any iterable of
:class:`container_train.data.Batch`. That is the seam for a head-only fast path: a frozen
backbone's features can be computed once and fed as ``Batch(features, labels, [])`` to the
head module alone, with the same loss, optimizer, scheduler, metrics and stop handling.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from container_train.data import Batch, SkipCounter
from container_train.errors import DataError, DivergedError
from container_train.precision import Precision
from container_train.profiling import StepTimings

log = logging.getLogger(__name__)


class StopFlag:
    """Set from the SIGTERM handler; the loops check it after every step."""

    def __init__(self):
        self._event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        self.reason = reason
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()


@dataclass
class EpochResult:
    loss: float
    accuracy: float
    images: int
    steps: int
    seconds: float
    completed: bool           # False when a stop request cut the epoch short


class Progress:
    """Prints a progress line at most every ``interval_s`` seconds (plus the first step)."""

    def __init__(self, mode: str, epoch: int, epochs: int, total_steps: int, interval_s: float):
        self.mode, self.epoch, self.epochs, self.total = mode, epoch, epochs, total_steps
        self.interval = interval_s
        self.start = time.monotonic()
        self.last = -math.inf

    def update(self, step: int, images: int, loss: float, force: bool = False) -> None:
        now = time.monotonic()
        if not force and step != 1 and now - self.last < self.interval:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = images / elapsed
        eta = (self.total - step) * elapsed / step if step else float("nan")
        log.info("[%s] epoch %d/%d step %d/%d loss %.4f %.1f img/s elapsed %s ETA %s",
                 self.mode, self.epoch, self.epochs, step, self.total, loss, rate,
                 _hms(elapsed), _hms(eta))


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


def autocast_context(device: torch.device, precision: Precision):
    """The job's autocast (float16 on CUDA, bfloat16 on a CPU that has it), or plain float32."""
    if precision.autocast_dtype is not None:
        return torch.autocast(device_type=device.type, dtype=precision.autocast_dtype)
    return nullcontext()


def steps_in(loader_len: int, max_steps: int) -> int:
    return min(loader_len, max_steps) if max_steps else loader_len


def train_one_epoch(model: nn.Module, batches: Iterable[Batch], *, criterion: nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler, scaler: torch.amp.GradScaler,
                    device: torch.device, precision: Precision, epoch: int, epochs: int, total_steps: int,
                    set_train_mode, timings: StepTimings | None, skipped: SkipCounter,
                    stop: StopFlag, log_interval_s: float) -> EpochResult:
    """Train for up to ``total_steps`` steps. The scheduler steps per optimizer step."""
    set_train_mode(model)
    progress = Progress("train", epoch, epochs, total_steps, log_interval_s)
    tally, step = _Tally(), 0
    for images, labels in _device_batches(batches, device, timings, skipped, precision.channels_last):
        with autocast_context(device, precision):
            logits = model(images)
            loss = criterion(logits, labels)
        if not torch.isfinite(loss):
            raise DivergedError(
                f"training loss became {loss.item()} at epoch {epoch} step {step + 1}; "
                "lower lr or check the data"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        tally.add(loss, logits, labels)
        if timings:
            timings.step_done(epoch, step, "TRAIN", len(labels))
        progress.update(step, tally.seen, tally.loss_sum / tally.seen, force=step == total_steps)
        if stop or step >= total_steps:
            break
    if tally.seen == 0:
        raise _no_readable_images("train")
    return tally.result(step, completed=not stop)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Batch], *, criterion: nn.Module, device: torch.device,
             precision: Precision, epoch: int, total_steps: int, timings: StepTimings | None, skipped: SkipCounter,
             stop: StopFlag, split: str) -> EpochResult:
    model.eval()
    tally, step = _Tally(), 0
    for images, labels in _device_batches(batches, device, timings, skipped, precision.channels_last):
        with autocast_context(device, precision):
            logits = model(images)
            loss = criterion(logits, labels)
        step += 1
        tally.add(loss, logits, labels)
        if timings:
            timings.step_done(epoch, step, "EVAL", len(labels))
        if stop or step >= total_steps:
            break
    if tally.seen == 0:
        if stop:
            return EpochResult(math.nan, math.nan, 0, 0, 0.0, False)
        raise _no_readable_images(split)
    return tally.result(step, completed=not stop)


def _device_batches(batches: Iterable[Batch], device: torch.device, timings: StepTimings | None,
                    skipped: SkipCounter, channels_last: bool = False):
    """(images, labels) on ``device`` for every non-empty batch, counting unreadable images and
    marking when each batch was ready (data wait vs compute in the step timings)."""
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    if timings:
        timings.start()
    for batch in batches:
        if timings:
            timings.data_ready()
        skipped.add(batch.skipped)
        if len(batch) == 0:
            continue
        images = batch.images.to(device, non_blocking=True)
        if images.dim() == 4:
            images = images.contiguous(memory_format=memory_format)
        yield images, batch.labels.to(device, non_blocking=True)


class _Tally:
    """Running loss / accuracy over an epoch."""

    def __init__(self):
        self.loss_sum, self.correct, self.seen = 0.0, 0, 0
        self.start = time.monotonic()

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        n = len(labels)
        self.loss_sum += loss.float().item() * n
        self.correct += int((logits.argmax(1) == labels).sum())
        self.seen += n

    def result(self, steps: int, completed: bool) -> EpochResult:
        return EpochResult(self.loss_sum / self.seen, self.correct / self.seen, self.seen, steps,
                           time.monotonic() - self.start, completed)


def _no_readable_images(split: str) -> DataError:
    return DataError(f"no readable images in the {split} split: every file failed to decode "
                     "(see the 'skipping unreadable image' warnings above)")


def make_optimizer(name: str, params, lr: float, momentum: float, weight_decay: float):
    params = [p for p in params if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def make_scheduler(optimizer, kind: str, steps_per_epoch: int, epochs: int, warmup_epochs: float,
                   step_size_epochs: int):
    """Per-step LambdaLR: linear warmup, then cosine to 0, x0.1 every ``step_size_epochs``, or flat."""
    total = max(1, steps_per_epoch * epochs)
    warmup = int(round(warmup_epochs * steps_per_epoch))
    step_size = max(1, step_size_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1 + math.cos(math.pi * progress))
        if kind == "step":
            return 0.1 ** ((step - warmup) // step_size)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
