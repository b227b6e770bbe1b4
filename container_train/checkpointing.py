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
     "hyperparameters": {name: value}, "class_names": [...], "arch": str}
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

from container_train.contract import CHECKPOINT_FILE
from container_train.errors import TrainingError

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


@dataclass
class TrainingProgress:
    """What survives a restart besides the model/optimizer/scheduler states."""
    epoch: int = 0                                   # last finished epoch
    best_accuracy: float = -1.0
    best_epoch: int = 0
    best_model: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    epochs_without_improvement: int = 0


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


def save_checkpoint(checkpoint_dir: Path, *, model, optimizer, scheduler, progress: TrainingProgress,
                    hyperparameters: dict, class_names: list[str], arch: str,
                    interrupted_in_epoch: int | None = None) -> Path:
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
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
    }
    path = checkpoint_dir / CHECKPOINT_FILE
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)   # a kill during the save leaves the previous checkpoint intact
    return path


def load_checkpoint(checkpoint_dir: Path) -> dict | None:
    path = checkpoint_dir / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise TrainingError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); delete it to start over"
        ) from e


def check_compatible(state: dict, arch: str, class_names: list[str]) -> None:
    """A checkpoint from another model or dataset must not be silently resumed."""
    if state.get("arch") != arch:
        raise TrainingError(f"checkpoint in the checkpoint dir was written for arch={state.get('arch')}, "
                            f"this job trains arch={arch}; use a fresh checkpoint location")
    if list(state.get("class_names", [])) != list(class_names):
        raise TrainingError("checkpoint in the checkpoint dir was written for different classes; "
                            "use a fresh checkpoint location")


def restore(state: dict, *, model, optimizer, scheduler) -> TrainingProgress:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    restore_rng(state["rng"])
    return TrainingProgress(
        epoch=int(state["epoch"]),
        best_accuracy=float(state["best_accuracy"]),
        best_epoch=int(state["best_epoch"]),
        best_model=state.get("best_model"),
        history=list(state.get("history", [])),
        epochs_without_improvement=int(state.get("epochs_without_improvement", 0)),
    )
