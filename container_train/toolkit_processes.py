"""Which processes a stop request must reach: the user script the sagemaker-training toolkit started.

The toolkit does not forward signals, so whoever stops a job (the training image's entry point on
SageMaker's SIGTERM, the local runner's ``TrainingJob.stop``) signals the script itself. The toolkit
may run it through a ``/bin/sh -c`` wrapper (``process.create``); a distributed job runs torchrun
(without a shell: ``container_train.torchrun_runner``), and torchrun, when signalled, stops its ranks
and then exits failed (``SignalException``), which the
toolkit reports as a failed job. The ranks themselves stop cleanly on SIGTERM (checkpoint, save the
best model, exit 0) and torchrun then exits 0, so the signal goes to the ranks under torchrun.

Only psutil: the image's entry point imports this before anything heavy.
"""

from __future__ import annotations

import psutil

SHELLS = {"sh", "dash", "bash"}


def _is_torchrun(process: psutil.Process) -> bool:
    return any(part.endswith("torchrun") or part == "torch.distributed.run" for part in process.cmdline()[:3])


def user_script_processes(toolkit_pid: int) -> list[psutil.Process]:
    """The toolkit's user-script processes: its children, looking through a shell wrapper and through
    torchrun to the ranks it started (torchrun itself when it has none yet)."""
    try:
        children = psutil.Process(toolkit_pid).children()
    except psutil.Error:
        return []
    targets = []
    for child in children:
        try:
            found = child.children() if child.name() in SHELLS else [child]
            for process in found:
                ranks = process.children() if _is_torchrun(process) else []
                targets.extend(ranks or [process])
        except psutil.Error:
            continue
    return targets
