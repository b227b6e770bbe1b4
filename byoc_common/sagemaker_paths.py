"""The folders SageMaker gives a container, defined once for both images and the operator side.

SageMaker mounts everything under ``/opt/ml`` (training: ``input/``, ``model/``, ``output/``,
``checkpoints/``; serving: ``model/`` for a single model, ``models/`` for a multi-model endpoint).
The ``sagemaker-training`` toolkit moves the root with ``SAGEMAKER_BASE_DIR``, which the local
runners and the tests use for a temporary tree. Sources: "How Amazon SageMaker Runs Your Training
Image" and "Use Your Own Inference Code with Hosting Services" in the SageMaker developer guide.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

BASE_DIR = "/opt/ml"
BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
MODEL_DIR = f"{BASE_DIR}/model"                   # training output; a single-model endpoint's model
MULTI_MODEL_ROOT = f"{BASE_DIR}/models"           # where a multi-model endpoint finds its models
CHECKPOINT_DIR = f"{BASE_DIR}/checkpoints"        # synced to CheckpointConfig.S3Uri
TENSOR_DIR = f"{BASE_DIR}/output/tensors"         # Debugger's default DebugHookConfig.LocalPath


def base_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$SAGEMAKER_BASE_DIR`` when set (and not empty), else ``/opt/ml``."""
    env = os.environ if environ is None else environ
    return Path(env.get(BASE_DIR_ENV) or BASE_DIR)
