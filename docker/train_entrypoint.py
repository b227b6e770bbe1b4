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

    ENTRYPOINT ["tini", "--", "python", "/opt/byoc/train_entrypoint.py"]   # `docker run IMAGE train`
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil

SHELLS = {"sh", "dash", "bash"}


def trainer_processes(toolkit_pid: int) -> list[psutil.Process]:
    """The toolkit's user-script processes (looking through a ``/bin/sh -c`` wrapper if present)."""
    try:
        children = psutil.Process(toolkit_pid).children()
    except psutil.Error:
        return []
    targets = []
    for child in children:
        try:
            is_shell = child.name() in SHELLS
            targets.extend(child.children() if is_shell else [child])
        except psutil.Error:
            continue
    return targets


def stage_user_script(environ=os.environ) -> Path | None:
    """Copy ``$BYOC_TRAIN_SCRIPT`` to ``<base>/code/$SAGEMAKER_PROGRAM`` when it is not there."""
    program, spare = environ.get("SAGEMAKER_PROGRAM"), environ.get("BYOC_TRAIN_SCRIPT")
    if not program or not spare:
        return None
    target = Path(environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")) / "code" / program
    if target.exists():
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spare, target)
    print(f"[entrypoint] {target} was missing (a mounted /opt/ml?): copied it from {spare}",
          file=sys.stderr, flush=True)
    return target


def fill_missing_config(environ=os.environ) -> None:
    """Write the job config files a hand-made ``/opt/ml`` lacks (SageMaker always writes them)."""
    from container_train.job_env import complete_local_config

    base = Path(environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
    written = complete_local_config(base)
    if written:
        print(f"[entrypoint] not on SageMaker? wrote the missing {', '.join(written)} under {base}/input/config "
              "(one host, channels from input/data)", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    command = list(sys.argv[1:] if argv is None else argv) or ["train"]
    if command[0] == "train":
        stage_user_script()
        fill_missing_config()
    toolkit = subprocess.Popen(command)

    def forward(signum, _frame):
        targets = trainer_processes(toolkit.pid)
        name = signal.Signals(signum).name
        if targets:
            print(f"[entrypoint] {name}: asking the trainer (pid {', '.join(str(p.pid) for p in targets)}) "
                  "to checkpoint and stop", file=sys.stderr, flush=True)
        else:   # not started yet (or already gone): stop the command itself
            print(f"[entrypoint] {name}: no trainer running, stopping {command[0]}", file=sys.stderr, flush=True)
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
