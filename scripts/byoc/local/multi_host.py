"""A training job on several hosts, all of them this machine: ``algo-1``, ``algo-2``, ... on 127.0.0.1.

SageMaker gives every host of a job its own container and ``/opt/ml`` tree, with one
``resourceconfig.json`` naming all hosts (``current_host`` differs). :class:`MultiHostJob` lays out
one :class:`~byoc.local.training_job.TrainingJob` per host under ``<job_dir>/<host>`` the same way and
starts them together, each through the training image's launcher (``SAGEMAKER_TRAINING_MODULE`` =
:data:`container_train.job_env.LAUNCHER_MODULE`, which runs torchrun; see ``container_train/launch.py``):

* **process mode**: the toolkit from this virtualenv per host; host names do not resolve here, so
  ``$BYOC_MASTER_ADDR=127.0.0.1`` stands in for ``algo-1``;
* **container mode**: ``docker run --network host --add-host algo-1:127.0.0.1 --add-host algo-2:127.0.0.1 ...``
  per host, the first host's name resolving as on SageMaker.

Every host gets the same free master port (``$BYOC_MASTER_PORT``, instead of the toolkit's fixed
7777, so two local jobs do not collide) and talks over the loopback interface only
(``network_interface_name`` ``lo`` in the resource config: Gloo binds there). Rank 0 is ``algo-1``:
its tree holds the model artifact, ``metrics.json``, the checkpoints and the metric lines.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path

from byoc.local.training_job import TrainingJob, TrainingJobResult
from container_train.job_env import (
    LAUNCHER_MODULE,
    MASTER_ADDR_ENV,
    MASTER_PORT_ENV,
    RESOURCE_CONFIG,
    TORCH_DISTRIBUTED_HYPERPARAMETER,
)

LOOPBACK = "127.0.0.1"
LOOPBACK_INTERFACE = "lo"


def host_names(count: int) -> list[str]:
    """SageMaker's names for the hosts of a job, in its order (the first is the master)."""
    return [f"algo-{i}" for i in range(1, count + 1)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def resource_config(hosts: list[str], current: str) -> dict:
    """resourceconfig.json of ``current`` in a job on ``hosts`` (SageMaker's fields for one instance group)."""
    return {"current_host": current, "hosts": hosts, "network_interface_name": LOOPBACK_INTERFACE,
            "current_group_name": "homogeneousCluster",
            "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "local",
                                 "hosts": hosts}]}


class _HostJob(TrainingJob):
    """One host's job: every host name maps to 127.0.0.1 in its container."""

    hosts: list[str] = []

    def _container_command(self):
        cmd, env = super()._container_command()
        extra = [a for h in self.hosts[1:] for a in ("--add-host", f"{h}:{LOOPBACK}")]
        at = cmd.index("run") + 1
        return cmd[:at] + extra + cmd[at:], env


class MultiHostJob:
    """``count`` hosts of one job (see the module docstring); the interface of a TrainingJob where the
    operator side needs it (start, running, log_text, stop, kill, wait, job_dir)."""

    def __init__(self, job_dir, hyperparameters: dict, channels: dict, count: int, *, image: str | None = None,
                 env: dict | None = None, torch_distributed: bool = False, log_file=None, echo: bool = False,
                 master_port: int | None = None):
        if count < 2:
            raise ValueError(f"a multi-host job needs at least 2 hosts, got {count}")
        self.root = Path(job_dir).resolve()
        self.hosts = host_names(count)
        self.master_port = master_port or free_port()
        host_env = {"SAGEMAKER_TRAINING_MODULE": LAUNCHER_MODULE, MASTER_PORT_ENV: str(self.master_port),
                    **(env or {})}
        if image is None:
            host_env[MASTER_ADDR_ENV] = LOOPBACK
            host_env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        hp = dict(hyperparameters)
        if torch_distributed:
            hp[TORCH_DISTRIBUTED_HYPERPARAMETER] = "true"
        self.jobs: list[TrainingJob] = []
        for host in self.hosts:
            job = _HostJob(self.root / host, hp, channels, image=image, env=host_env, echo=echo and host == "algo-1",
                           log_file=Path(log_file) if log_file and host == "algo-1" else None)
            job.hosts = self.hosts
            config = job.job_dir / "input" / "config" / RESOURCE_CONFIG
            config.write_text(json.dumps(resource_config(self.hosts, host), indent=1))
            self.jobs.append(job)

    @property
    def main(self) -> TrainingJob:
        return self.jobs[0]

    @property
    def job_dir(self) -> Path:
        """The first host's tree: where the artifact, metrics and Debugger tensors are."""
        return self.main.job_dir

    def start(self) -> MultiHostJob:
        for job in self.jobs:
            job.start()
        return self

    def running(self) -> bool:
        return any(job.running() for job in self.jobs)

    def log_text(self) -> str:
        return self.main.log_text()

    def stop(self, sig=None) -> None:
        for job in self.jobs:
            job.stop() if sig is None else job.stop(sig)

    def kill(self) -> None:
        for job in self.jobs:
            job.kill()

    def wait(self, timeout: float | None = None) -> TrainingJobResult:
        """Every host's end; the first host's result (its artifact and metrics), failed when any host
        failed, with the first reason found (the first host's, else the others' in order)."""
        results = self.wait_all(timeout)
        first = results[0]
        failed = [r for r in results if not r.ok]
        if not failed:
            return first
        reasons = [f"{r.job_dir.name}: {r.failure_reason.splitlines()[0]}" for r in results if r.failure_reason]
        return replace(first, returncode=first.returncode or failed[0].returncode,
                       failure_reason="; ".join(reasons) or None, timed_out=any(r.timed_out for r in results))

    def wait_all(self, timeout: float | None = None) -> list[TrainingJobResult]:
        return [job.wait(timeout=timeout) for job in self.jobs]


TORCH_DISTRIBUTED = "torch_distributed"    # the one launcher a local job offers (SageMaker's name for it)


def local_training_job(job_dir, hyperparameters: dict, channels: dict, instance_count: int = 1,
                       distribution: str | None = None, *, image: str | None = None, log_file=None,
                       env: dict | None = None, feature_cache_dir=None) -> TrainingJob | MultiHostJob:
    """The local job for ``byoc train``: one host as before (``TrainingJob``), or ``instance_count`` hosts
    (:class:`MultiHostJob`); ``distribution="torch_distributed"`` runs even one host through torchrun.
    ``feature_cache_dir``: a feature cache a one-host job shares with other jobs of the run (the hosts
    of a multi-host job each keep theirs under their checkpoint dir, as on SageMaker)."""
    if instance_count < 1:
        raise ValueError(f"instance count {instance_count}: a job needs at least one host")
    if distribution not in (None, TORCH_DISTRIBUTED):
        raise ValueError(f"distribution {distribution!r}: a local job offers {TORCH_DISTRIBUTED} only")
    if instance_count > 1:
        return MultiHostJob(job_dir, hyperparameters, channels, instance_count, image=image, env=env,
                            torch_distributed=distribution is not None, log_file=log_file)
    if distribution is None:
        return TrainingJob(job_dir, hyperparameters, channels, image=image, log_file=log_file, env=env,
                           feature_cache_dir=feature_cache_dir)
    hyperparameters, launcher_env = through_launcher(hyperparameters, env, image)
    return TrainingJob(job_dir, hyperparameters, channels, image=image, log_file=log_file, env=launcher_env,
                       feature_cache_dir=feature_cache_dir)


def through_launcher(hyperparameters, env: dict | None, image: str | None) -> tuple[dict, dict]:
    """The hyperparameters and environment that start a one-host job through the image's launcher
    (torchrun), as SageMaker does for ``distribution={"torch_distributed": ...}``: for ``byoc train``
    and every trial of ``byoc tune``."""
    launcher_env = {"SAGEMAKER_TRAINING_MODULE": LAUNCHER_MODULE, **(env or {})}
    if image is None:
        launcher_env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**hyperparameters, TORCH_DISTRIBUTED_HYPERPARAMETER: "true"}, launcher_env
