"""Where a SageMaker training job keeps things, resolved once.

Inside the image everything lives under ``/opt/ml``. The ``sagemaker-training`` toolkit honours
``SAGEMAKER_BASE_DIR`` to move that root (tests and the local runner use a temporary tree), and it
exports ``SM_MODEL_DIR``, ``SM_OUTPUT_DATA_DIR`` and ``SM_CHANNEL_<NAME>`` to the user script.
This module reads those variables, falling back to the base-dir layout when the script runs
without the toolkit (``python -m container_train.train``)::

    <base>/input/config/hyperparameters.json   (read by the toolkit, passed to us as CLI args)
    <base>/input/config/debughookconfig.json   (written by SageMaker when Debugger is configured)
    <base>/input/data/<channel>/               training, validation, test, pretrained, features
    <base>/model/                              SM_MODEL_DIR: the model artifact (uploaded as model.tar.gz)
    <base>/output/data/                        SM_OUTPUT_DATA_DIR: metrics, profiler, tensors (output.tar.gz)
    <base>/output/failure                      FailureReason shown by DescribeTrainingJob
    <base>/checkpoints/                        synced to S3 (checkpoint_s3_uri) for spot training

Which job this is: SageMaker sets ``TRAINING_JOB_NAME`` and ``TRAINING_JOB_ARN`` in the training
container ("How Amazon SageMaker Provides Training Information", developer guide). The ARN is the
mark of a real SageMaker job (:func:`on_sagemaker`; the SageMaker Python SDK's experiments code
tests the same variable): its local mode sets only the name, and neither the ``byoc`` local runner
nor a hand-made ``docker run -v <dir>:/opt/ml IMAGE train`` sets either.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from byoc_common.sagemaker_paths import FAILURE_FILE, OUTPUT_DATA_DIR, OUTPUT_DIR, base_dir
from container_train.contract import FEATURES_CHANNEL

CHANNELS = ("training", "validation", "test", "pretrained", FEATURES_CHANNEL)
DEBUG_HOOK_CONFIG = "input/config/debughookconfig.json"     # under the base dir
RESOURCE_CONFIG = "resourceconfig.json"                      # in the config dir: hosts of the job
TRAINING_JOB_NAME_ENV = "TRAINING_JOB_NAME"
TRAINING_JOB_ARN_ENV = "TRAINING_JOB_ARN"

# --- a distributed job (container_train.launch starts it, container_train.distributed runs it) ----
# The SageMaker Python SDK's distribution={"torch_distributed": {"enabled": True}} sets this
# hyperparameter (src/sagemaker/pytorch/estimator.py); the toolkit passes it on as an additional
# framework parameter, never as a script argument.
TORCH_DISTRIBUTED_HYPERPARAMETER = "sagemaker_torch_distributed_enabled"
LAUNCHER_MODULE = "container_train.launch:main"     # SAGEMAKER_TRAINING_MODULE of the training image
MASTER_ADDR_ENV = "BYOC_MASTER_ADDR"      # local only: the address of the first host (default: its name)
MASTER_PORT_ENV = "BYOC_MASTER_PORT"      # local only: default the toolkit's torch_distributed.MASTER_PORT
RENDEZVOUS_TIMEOUT_ENV = "BYOC_RENDEZVOUS_TIMEOUT_S"   # hosts that never join fail the job after this
COLLECTIVE_TIMEOUT_ENV = "BYOC_COLLECTIVE_TIMEOUT_S"   # a rank that stops answering fails it after this
DEFAULT_RENDEZVOUS_TIMEOUT_S = 600        # torch's own static rendezvous default
DEFAULT_COLLECTIVE_TIMEOUT_S = 600
NUM_GPUS_ENV = "SM_NUM_GPUS"              # the toolkit's count of this host's GPUs (nvidia-smi)


def on_sagemaker(environ: Mapping[str, str] | None = None) -> bool:
    """True inside a SageMaker training job (see the module docstring), False in local runs."""
    return bool((os.environ if environ is None else environ).get(TRAINING_JOB_ARN_ENV))


def training_job_name(environ: Mapping[str, str] | None = None) -> str | None:
    """The SageMaker training job's name, or None where nothing names the job."""
    return (os.environ if environ is None else environ).get(TRAINING_JOB_NAME_ENV) or None


@dataclass(frozen=True)
class JobPaths:
    base: Path
    model_dir: Path
    output_data_dir: Path
    output_dir: Path
    checkpoint_dir: Path
    config_dir: Path
    channels: dict[str, Path] = field(default_factory=dict)   # only channels that exist

    @property
    def failure_file(self) -> Path:
        return self.base / FAILURE_FILE

    def channel(self, name: str) -> Path | None:
        return self.channels.get(name)


def resolve_paths(environ: dict[str, str] | None = None) -> JobPaths:
    env = os.environ if environ is None else environ
    base = base_dir(env)
    data_root = base / "input" / "data"
    channels: dict[str, Path] = {}
    for name in CHANNELS:
        value = env.get(f"SM_CHANNEL_{name.upper()}")
        path = Path(value) if value else data_root / name
        if path.exists():
            channels[name] = path
    return JobPaths(
        base=base,
        model_dir=Path(env.get("SM_MODEL_DIR", base / "model")),
        output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR", base / OUTPUT_DATA_DIR)),
        output_dir=base / OUTPUT_DIR,
        # SageMaker's default checkpoint_local_path (synced with checkpoint_s3_uri).
        checkpoint_dir=base / "checkpoints",
        config_dir=base / "input" / "config",
        channels=channels,
    )


# --- the config files SageMaker writes before it starts the container -----------------------------
# The toolkit reads resourceconfig.json and inputdataconfig.json; without them it exits at once, with
# code 0 and no message. The local runner writes them (byoc.local.training_job) and the image's
# entry point fills in missing ones for a hand-made `docker run -v <dir>:/opt/ml IMAGE train`.

def single_host_resource_config() -> dict:
    """resourceconfig.json of a one-instance job."""
    return {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}


def file_mode_input_data_config(channels) -> dict:
    """inputdataconfig.json for ``channels`` (names), all in File mode."""
    return {name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated",
                   "RecordWrapperType": "None"} for name in channels}


def complete_local_config(base: Path) -> list[str]:
    """Write the config files SageMaker would have written and that are missing under ``base``:
    one host, the channels found under ``input/data``, no hyperparameters. Returns the files written."""
    import json

    config = base / "input" / "config"
    data = base / "input" / "data"
    channels = sorted(p.name for p in data.iterdir() if p.is_dir()) if data.is_dir() else []
    defaults = {
        RESOURCE_CONFIG: single_host_resource_config(),
        "inputdataconfig.json": file_mode_input_data_config(channels),
        "hyperparameters.json": {},
    }
    written = []
    for name, content in defaults.items():
        path = config / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(content, indent=1))
            written.append(name)
    return written
