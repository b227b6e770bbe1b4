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

# Under the base dir of a training job (SageMaker's layout, and each local job dir's):
OUTPUT_DIR = "output"
OUTPUT_DATA_DIR = "output/data"                   # SM_OUTPUT_DATA_DIR: uploaded as output.tar.gz
FAILURE_FILE = "output/failure"                   # its first 1024 characters: the job's FailureReason
SUCCESS_FILE = "output/success"
TENSORS_DIR = "output/tensors"
TENSOR_DIR = f"{BASE_DIR}/{TENSORS_DIR}"          # Debugger's default DebugHookConfig.LocalPath
# Not SageMaker's: where the local runners keep a job's output (CloudWatch's log stream on SageMaker).
JOB_LOG_FILE = "training.log"


def base_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$SAGEMAKER_BASE_DIR`` when set (and not empty), else ``/opt/ml``."""
    env = os.environ if environ is None else environ
    return Path(env.get(BASE_DIR_ENV) or BASE_DIR)
