"""The training image's launcher: how the ``sagemaker-training`` toolkit starts ``train.py`` on a host.

The image sets ``SAGEMAKER_TRAINING_MODULE=container_train.launch:main``
(:data:`~container_train.job_env.LAUNCHER_MODULE`); the toolkit's ``train`` command then imports this
module and calls :func:`main` in place of its own runner choice (``sagemaker_training/trainer.py``,
``train()``: ``if env.framework_module``). SageMaker's PyTorch framework containers work the same way
(aws/sagemaker-pytorch-training-toolkit, ``src/sagemaker_pytorch_container/training.py``: with the
``sagemaker_torch_distributed_enabled`` hyperparameter it calls ``entry_point.run`` with
``runner.TorchDistributedRunnerType``). Which runner:

* one host, at most one GPU, no ``torch_distributed``: the toolkit's ``ProcessRunner``
  (``python train.py --lr ...``), exactly what the toolkit runs without this module;
* more than one host, more than one GPU, or ``distribution={"torch_distributed": {"enabled": True}}``:
  the toolkit's ``TorchDistributedRunner`` (``sagemaker_training/torch_distributed.py``) as
  :class:`~container_train.torchrun_runner.TorchrunRunner` (no shell, no forced ``NCCL_PROTO``, whole
  output lines), i.e.
  ``torchrun --nnodes <hosts> --nproc_per_node <GPUs, or 1 on CPU> [--master_addr <first host>
  --master_port 7777 --node_rank <this host's index>] train.py --lr ...``. It is built here from the
  resource config's hosts in SageMaker's order (``SM_HOSTS``; master = the first, as the toolkit's
  ``master_hostname``) rather than from ``env.distribution_hosts``, which the toolkit fills only when a
  distribution hyperparameter is set: a multi-host job without one is data-parallel too, not N copies.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` for each
worker; :mod:`container_train.distributed` reads them. Bounded waits, so nothing hangs:
``$BYOC_RENDEZVOUS_TIMEOUT_S`` (default 600 s) becomes torchrun's static rendezvous timeout
(``PET_RDZV_CONF=timeout=...``: torchrun reads every option from ``PET_<OPTION>``) for hosts that never
join, and the trainer's process group uses ``$BYOC_COLLECTIVE_TIMEOUT_S`` for ranks that stop answering.
Gloo talks over the resource config's ``network_interface_name`` (``GLOO_SOCKET_IFNAME``; the toolkit
sets ``NCCL_SOCKET_IFNAME`` itself). Locally (:mod:`byoc.local.multi_host`) ``$BYOC_MASTER_ADDR`` and
``$BYOC_MASTER_PORT`` replace the first host's name and the toolkit's fixed port 7777, so several local
jobs and hosts without ``/etc/hosts`` entries work on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from byoc_common.booleans import parse_bool
from container_train.job_env import (
    DEFAULT_RENDEZVOUS_TIMEOUT_S,
    MASTER_ADDR_ENV,
    MASTER_PORT_ENV,
    RENDEZVOUS_TIMEOUT_ENV,
    TORCH_DISTRIBUTED_HYPERPARAMETER,
)


@dataclass(frozen=True)
class LaunchPlan:
    hosts: tuple[str, ...]
    current_host: str
    processes_per_host: int
    torch_distributed: bool       # asked for by the hyperparameter

    @property
    def distributed(self) -> bool:
        return self.torch_distributed or len(self.hosts) > 1 or self.processes_per_host > 1

    @property
    def world_size(self) -> int:
        return len(self.hosts) * self.processes_per_host


def _enabled(value) -> bool:
    """The SDK JSON-encodes the hyperparameter (``true``); the toolkit decodes it to a bool, or leaves a string."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return parse_bool(value)
    return bool(value)


def plan_launch(hosts, current_host: str, num_gpus: int, framework_parameters: Mapping) -> LaunchPlan:
    return LaunchPlan(tuple(hosts), current_host, max(1, int(num_gpus)),
                      _enabled(framework_parameters.get(TORCH_DISTRIBUTED_HYPERPARAMETER, False)))


def prepare_environment(network_interface: str, environ=os.environ) -> None:
    """What torchrun and Gloo read from the environment (see the module docstring)."""
    timeout = environ.get(RENDEZVOUS_TIMEOUT_ENV) or DEFAULT_RENDEZVOUS_TIMEOUT_S
    environ.setdefault("PET_RDZV_CONF", f"timeout={int(float(timeout))}")
    environ.setdefault("GLOO_SOCKET_IFNAME", network_interface)


def main() -> None:
    """The toolkit's framework entry point: run the user script on this host with the right runner."""
    from sagemaker_training import entry_point, environment, logging_config, runner, torch_distributed

    env = environment.Environment()
    plan = plan_launch(env.hosts, env.current_host, env.num_gpus, env.additional_framework_parameters)
    log = logging_config.get_logger()
    runner_type = runner.ProcessRunnerType
    if plan.distributed:
        from container_train.torchrun_runner import TorchrunRunner

        prepare_environment(env.network_interface_name)
        torch_distributed.MASTER_PORT = os.environ.get(MASTER_PORT_ENV) or torch_distributed.MASTER_PORT
        master = os.environ.get(MASTER_ADDR_ENV) or plan.hosts[0]
        log.info("data-parallel job: %d host(s) x %d process(es), this host %s (node rank %d), master %s:%s",
                 len(plan.hosts), plan.processes_per_host, plan.current_host,
                 plan.hosts.index(plan.current_host), master, torch_distributed.MASTER_PORT)
        # The toolkit's torchrun command, started without a shell and relayed line by line
        # (container_train/torchrun_runner.py says what the toolkit's own runner gets wrong).
        runner_type = TorchrunRunner(
            env.user_entry_point, env.to_cmd_args(), env.to_env_vars(), plan.processes_per_host, master,
            list(plan.hosts), plan.current_host, env.network_interface_name,
            instance_type=env.current_instance_type)
    try:
        entry_point.run(env.module_dir, env.user_entry_point, env.to_cmd_args(), env.to_env_vars(),
                        runner_type=runner_type)
    except Exception as e:
        if plan.distributed:
            explain_launch_failure(plan, e)
        raise


def explain_launch_failure(plan: LaunchPlan, exc: Exception) -> None:
    """torchrun failed and the rank wrote no reason (it never started, or was killed): say what that
    means in the failure file, before the toolkit writes its bare exit code there."""
    from container_train.errors import write_failure_file
    from container_train.job_env import resolve_paths

    failure = resolve_paths().failure_file
    if failure.exists():
        return
    timeout = os.environ.get(RENDEZVOUS_TIMEOUT_ENV) or DEFAULT_RENDEZVOUS_TIMEOUT_S
    code = getattr(exc, "return_code", None)
    write_failure_file(failure, (
        f"torchrun on host {plan.current_host} failed (exit {code}) before its rank reported a reason: a host "
        f"of {', '.join(plan.hosts)} did not join within the rendezvous timeout ({timeout} s, "
        f"${RENDEZVOUS_TIMEOUT_ENV}), or a rank was killed from outside (out of memory, SIGKILL); "
        "the log holds torchrun's summary"))
