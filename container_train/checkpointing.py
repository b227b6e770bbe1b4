"""Per-epoch checkpoints in the checkpoint dir, and resuming from them (spot training).

SageMaker syncs ``/opt/ml/checkpoints`` to ``checkpoint_s3_uri`` and restores it when a spot job
restarts, so a restarted job finds :data:`~container_train.contract.CHECKPOINT_FILE` and carries
on after the last finished epoch. The file holds plain containers and tensors only and loads with
``torch.load(weights_only=True)``::

    {"format_version": 1, "epoch": last finished epoch (0 = none), "interrupted_in_epoch": int|None,
     "model": state_dict, "optimizer": state_dict, "scheduler": state_dict,
     "best_accuracy": float, "best_epoch": int, "best_model": state_dict | None,
     "history": [per-epoch metric dicts], "epochs_without_improvement": int,
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor], "python": repr, "numpy": ...},
     "hyperparameters": {name: value}, "class_names": [...], "arch": str,
     "training_job_name": str | None}

Writing: fsynced and renamed into place (:mod:`byoc_common.durable`); the checkpoint it
replaces stays as :data:`~container_train.contract.PREVIOUS_CHECKPOINT_FILE`, so when the latest
cannot be read (a truncated upload, a bad disk) the job falls back one epoch instead of failing
at every restart.

Resuming: only a checkpoint of this job. ``training_job_name`` is ``TRAINING_JOB_NAME``
(SageMaker sets it; a spot restart keeps it, every tuning trial has its own) and the
hyperparameters that shape the run (:func:`container_train.hyperparameters.resume_relevant`) must
match; anything else is refused with the reason, rather than silently continuing another job.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from byoc_common import durable
from container_train.contract import CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE, quote_path
from container_train.errors import TrainingError
from container_train.hyperparameters import resume_relevant

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


@dataclass
class TrainingState:
    """What survives a restart besides the model/optimizer/scheduler states."""
    epoch: int = 0                                   # last finished epoch
    best_accuracy: float = -1.0
    best_epoch: int = 0
    best_model: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    epochs_without_improvement: int = 0

    def record(self, epoch: int, train, valid, model: torch.nn.Module, lr: float) -> None:
        """A finished epoch (``train``/``valid``: :class:`container_train.engine.EpochResult`):
        its history entry, and the model's weights when validation accuracy improved."""
        self.epoch = epoch
        self.history.append({
            "epoch": epoch, "train_loss": train.loss, "train_acc": train.accuracy,
            "valid_loss": valid.loss, "valid_acc": valid.accuracy, "lr": lr,
            "train_seconds": round(train.seconds, 3),
            "train_images_per_s": round(train.images / max(train.seconds, 1e-9), 2),
        })
        if valid.accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch = valid.accuracy, epoch
            self.best_model = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1


def _cpu_state(state: dict) -> dict:
    return {k: v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def capture_rng() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": repr(random.getstate()),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
    }


def restore_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    import ast

    random.setstate(ast.literal_eval(rng["python"]))
    n = rng["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))


def save_checkpoint(checkpoint_dir: Path, *, model, optimizer, scheduler, progress: TrainingState,
                    hyperparameters: dict, class_names: list[str], arch: str, job_name: str | None = None,
                    interrupted_in_epoch: int | None = None) -> Path:
    state = {
        "format_version": FORMAT_VERSION,
        "epoch": progress.epoch,
        "interrupted_in_epoch": interrupted_in_epoch,
        "model": _cpu_state(model.state_dict()),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "best_accuracy": progress.best_accuracy,
        "best_epoch": progress.best_epoch,
        "best_model": progress.best_model,
        "history": progress.history,
        "epochs_without_improvement": progress.epochs_without_improvement,
        "rng": capture_rng(),
        "hyperparameters": hyperparameters,
        "class_names": list(class_names),
        "arch": arch,
        "training_job_name": job_name,
    }
    path = checkpoint_dir / CHECKPOINT_FILE
    if path.is_file():
        _keep_as_previous(path)
    return durable.write_with(path, lambda f: torch.save(state, f))


def _keep_as_previous(path: Path) -> None:
    """Make the current checkpoint the previous one, leaving ``path`` in place until it is replaced
    (a hard link, then a rename; where links are refused, a plain rename)."""
    previous = path.with_name(PREVIOUS_CHECKPOINT_FILE)
    link = previous.with_name(f".{previous.name}.{os.getpid()}.link")
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)
        os.replace(link, previous)
    except OSError:
        link.unlink(missing_ok=True)
        os.replace(path, previous)


def load_checkpoint(checkpoint_dir: Path) -> dict | None:
    """The latest readable checkpoint in ``checkpoint_dir`` (falling back to the previous one), or
    None when there is none. Raises :class:`TrainingError` when checkpoints exist but none reads."""
    candidates = [p for p in (checkpoint_dir / CHECKPOINT_FILE, checkpoint_dir / PREVIOUS_CHECKPOINT_FILE)
                  if p.is_file()]
    problems = []
    for path in candidates:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
            problems.append(f"{quote_path(path)} cannot be read ({type(e).__name__}: {e})")
            continue
        if problems:
            log.warning("checkpoint %s; resuming from the previous one, %s (epoch %s)",
                        problems[0], quote_path(path.name), state.get("epoch"))
        return state
    if not problems:
        return None
    raise TrainingError(f"checkpoint {'; '.join(problems)}; delete {'them' if len(problems) > 1 else 'it'} "
                        "to start over")


def check_resumable(state: dict, *, arch: str, class_names: list[str], job_name: str | None,
                    hyperparameters: dict) -> None:
    """Refuse (with the reason) a checkpoint written by another model, dataset, job or run."""
    fresh = "give each job its own checkpoint location (CheckpointConfig.S3Uri), or delete the checkpoint"
    if state.get("arch") != arch:
        raise TrainingError(f"refusing to resume: the checkpoint was written for arch={state.get('arch')}, "
                            f"this job trains arch={arch}; {fresh}")
    if list(state.get("class_names", [])) != list(class_names):
        raise TrainingError(f"refusing to resume: the checkpoint was written for different classes; {fresh}")
    written_by = state.get("training_job_name")
    if written_by and job_name and written_by != job_name:
        raise TrainingError(f"refusing to resume: the checkpoint was written by training job {written_by!r}, "
                            f"this is {job_name!r}; {fresh}")
    before, now = resume_relevant(state.get("hyperparameters", {})), resume_relevant(hyperparameters)
    changed = [f"{name} {before[name]!r} -> {now[name]!r}" for name in now if before[name] != now[name]]
    if changed:
        raise TrainingError("refusing to resume: the checkpoint was written with other hyperparameters "
                            f"({', '.join(changed)}); {fresh}")


def restore(state: dict, *, model, optimizer, scheduler) -> TrainingState:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    restore_rng(state["rng"])
    return TrainingState(
        epoch=int(state["epoch"]),
        best_accuracy=float(state["best_accuracy"]),
        best_epoch=int(state["best_epoch"]),
        best_model=state.get("best_model"),
        history=list(state.get("history", [])),
        epochs_without_improvement=int(state.get("epochs_without_improvement", 0)),
    )
