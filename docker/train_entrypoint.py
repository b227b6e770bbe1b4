"""Entry point of the training image: run the command (SageMaker's ``train``) and pass SIGTERM to the trainer.

SageMaker stops a training job (StopTrainingJob, spot interruption, a Debugger rule's StopTraining
action) by sending SIGTERM to the container's PID 1 and SIGKILL some time later. PID 1 is tini,
which hands the signal to this process. The sagemaker-training toolkit neither handles nor
forwards SIGTERM (it would just die, and the container with it, mid-save), so this small process
sits in front of it: on SIGTERM/SIGINT it signals the user script the toolkit started
(``train.py``, which checkpoints, saves its best model and exits 0); the toolkit then sees the
script finish and exits normally, and this process exits with the toolkit's code.

Before starting, it writes the job config files SageMaker always provides when a hand-made ``/opt/ml``
lacks them (without ``resourceconfig.json`` the toolkit exits 0 at once, silently), and makes sure
``/opt/ml/code`` holds ``$SAGEMAKER_PROGRAM``: SageMaker leaves
the image's ``/opt/ml/code`` alone, but a local run that mounts a whole ``/opt/ml`` tree over it
(``docker run -v job/opt/ml:/opt/ml IMAGE train``) hides it, so the script is copied in from
``$BYOC_TRAIN_SCRIPT``, the package's copy of it.

Then it makes sure the hosts in ``resourceconfig.json`` resolve. The toolkit looks each one up
before it starts the script (``entry_point._wait_hostname_resolution``, retrying for up to 15
minutes and saying nothing meanwhile), following SageMaker's advice that host names may take a
while to appear ("How Amazon SageMaker Provides Training Information", Distributed Training
Configuration). Here the wait is bounded by ``$BYOC_HOST_RESOLUTION_TIMEOUT_S`` (default 300 s) and
a host that never resolves fails the job with a reason in the failure file. Outside SageMaker
(no ``TRAINING_JOB_ARN``), a one-host job whose host is this container (the ``algo-1`` of a
hand-made ``/opt/ml`` run without ``--add-host``) is mapped to 127.0.0.1 in ``/etc/hosts``, and the
log says so; nothing is looked up for it. With ``SM_STUDIO_LOCAL_MODE=true`` the toolkit skips its
lookups, and so does this check.

SageMaker hosting runs ``docker run IMAGE serve`` ("Use Your Own Inference Code with Hosting Services");
the SageMaker Python SDK does that with the training image when ``estimator.deploy()``,
``estimator.transformer()`` or ``tuner.deploy()`` get no ``image_uri`` (sagemaker 2.257,
``Estimator.create_model``: ``Model(image_uri or self.training_image_uri(), ...)``). This image
does not serve, so ``serve`` is answered at once, before anything else is done, with one line
naming the serving image to deploy instead (``$BYOC_SERVE_IMAGE``, set when both images are built
together) and exit code 2, rather than a traceback and a health check that fails minutes later.

    ENTRYPOINT ["tini", "--", "python", "/opt/byoc/train_entrypoint.py"]   # `docker run IMAGE train`
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from byoc_common.sagemaker_paths import base_dir
from container_train.toolkit_processes import user_script_processes

SERVE_IMAGE_ENV = "BYOC_SERVE_IMAGE"        # the serving image built with this one (train.Dockerfile)
SERVE_REFUSED_EXIT = 2
HOSTS_FILE = Path("/etc/hosts")
HOST_TIMEOUT_ENV = "BYOC_HOST_RESOLUTION_TIMEOUT_S"
DEFAULT_HOST_TIMEOUT_S = 300.0


def _say(message: str) -> None:
    print(f"[entrypoint] {message}", file=sys.stderr, flush=True)


def serve_refusal(environ=os.environ) -> str:
    """The one line ``docker run <training image> serve`` answers."""
    image = environ.get(SERVE_IMAGE_ENV) or "<serving image URI, byoc-serve>"
    return (f"this is the byoc training image: it runs `train` and cannot serve; deploy the serving image "
            f"instead, e.g. estimator.deploy(..., image_uri=\"{image}\") or "
            f"Model(image_uri=\"{image}\", model_data=...) (transformer() and tuner.deploy() take "
            "image_uri too)")


def stage_user_script(environ=os.environ) -> Path | None:
    """Copy ``$BYOC_TRAIN_SCRIPT`` to ``<base>/code/$SAGEMAKER_PROGRAM`` when it is not there."""
    program, spare = environ.get("SAGEMAKER_PROGRAM"), environ.get("BYOC_TRAIN_SCRIPT")
    if not program or not spare:
        return None
    target = base_dir(environ) / "code" / program
    if target.exists():
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spare, target)
    _say(f"{target} was missing (a mounted /opt/ml?): copied it from {spare}")
    return target


def fill_missing_config(environ=os.environ) -> None:
    """Write the job config files a hand-made ``/opt/ml`` lacks (SageMaker always writes them)."""
    from container_train.job_env import complete_local_config

    base = base_dir(environ)
    written = complete_local_config(base)
    if written:
        _say(f"not on SageMaker? wrote the missing {', '.join(written)} under {base}/input/config "
             "(one host, channels from input/data)")


def resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        return False
    return True


def wait_for_hosts(hosts: list[str], timeout_s: float, *, resolve=resolves, clock=time.monotonic,
                   sleep=time.sleep) -> list[str]:
    """Look ``hosts`` up until all resolve or ``timeout_s`` has passed; returns those that never did."""
    deadline, pause = clock() + timeout_s, 0.5
    pending = [h for h in hosts if not resolve(h)]
    while pending and clock() < deadline:
        sleep(min(pause, max(0.0, deadline - clock())))
        pause = min(pause * 2, 10.0)
        pending = [h for h in pending if not resolve(h)]
    return pending


def names_host(hosts_file: Path, host: str) -> bool:
    """Whether ``hosts_file`` (``/etc/hosts`` syntax) maps ``host`` to some address."""
    try:
        lines = hosts_file.read_text().splitlines()
    except OSError:
        return False
    return any(host in line.split("#", 1)[0].split()[1:] for line in lines)


def map_to_loopback(host: str, hosts_file: Path) -> bool:
    """Append ``127.0.0.1 host`` to ``hosts_file``; False when it cannot be written."""
    try:
        text = hosts_file.read_text() if hosts_file.exists() else ""
        with open(hosts_file, "a") as f:
            f.write(("" if not text or text.endswith("\n") else "\n") + f"127.0.0.1 {host}\n")
    except OSError:
        return False
    return True


def check_hosts(environ=os.environ, *, hosts_file: Path = HOSTS_FILE, resolve=resolves, clock=time.monotonic,
                sleep=time.sleep) -> str | None:
    """Make the job's hosts resolvable (see the module docstring). Returns the failure reason, or None."""
    from container_train.job_env import RESOURCE_CONFIG, on_sagemaker, resolve_paths

    config_file = resolve_paths(environ).config_dir / RESOURCE_CONFIG
    if environ.get("SM_STUDIO_LOCAL_MODE", "").lower() == "true" or not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text())
        hosts, current = list(config["hosts"]), config["current_host"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{config_file} is not a resource config ({type(e).__name__}: {e})"
    if hosts == [current] and not on_sagemaker(environ):
        if names_host(hosts_file, current):
            return None
        if map_to_loopback(current, hosts_file):
            _say(f"{current} is this one-host job's own host: mapped it to 127.0.0.1 in {hosts_file}")
            return None
    timeout_s = float(environ.get(HOST_TIMEOUT_ENV) or DEFAULT_HOST_TIMEOUT_S)
    missing = wait_for_hosts(hosts, timeout_s, resolve=resolve, clock=clock, sleep=sleep)
    if not missing:
        return None
    return (f"host name(s) {', '.join(missing)} from {config_file} did not resolve within {timeout_s:g} s "
            f"(${HOST_TIMEOUT_ENV}): on SageMaker, retry the job (its instances did not come up); "
            f"locally, map each host to an address (docker run --add-host {missing[0]}:127.0.0.1) or give "
            "resourceconfig.json a single host")


def main(argv: list[str] | None = None) -> int:
    command = list(sys.argv[1:] if argv is None else argv) or ["train"]
    if command[0] == "serve":
        _say(serve_refusal())
        return SERVE_REFUSED_EXIT
    if command[0] == "train":
        stage_user_script()
        fill_missing_config()
        problem = check_hosts()
        if problem:
            from container_train.errors import write_failure_file
            from container_train.job_env import resolve_paths

            write_failure_file(resolve_paths().failure_file, problem)
            _say(f"not starting the job: {problem}")
            return 1
    toolkit = subprocess.Popen(command)

    def forward(signum, _frame):
        targets = user_script_processes(toolkit.pid)
        name = signal.Signals(signum).name
        if targets:
            _say(f"{name}: asking the trainer (pid {', '.join(str(p.pid) for p in targets)}) to checkpoint and stop")
        else:   # not started yet (or already gone): stop the command itself
            _say(f"{name}: no trainer running, stopping {command[0]}")
            targets = [toolkit]
        for process in targets:
            try:
                process.send_signal(signum)
            except (psutil.Error, ProcessLookupError):
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return toolkit.wait()


if __name__ == "__main__":
    sys.exit(main())
