"""How the training image starts torchrun: the toolkit's command, without the toolkit's three defects.

``container_train.launch`` runs a job with more than one host or GPU through torchrun. The
sagemaker-training toolkit (4.9.0) has a runner for that, ``TorchDistributedRunner``
(``sagemaker_training/torch_distributed.py``), and its command line (``torchrun --nnodes N
--nproc_per_node P [--master_addr A --master_port 7777 --node_rank R] train.py --lr ...``) is kept
as it is. What it does around that command is not:

1. ``_setup`` sets ``NCCL_PROTO=simple`` in the environment every rank inherits. That pins NCCL to
   its Simple protocol (no LL/LL128), which slows the small all-reduces of DDP's gradient buckets; NCCL
   picks the protocol per message size itself. :meth:`TorchrunRunner._setup` keeps the toolkit's EFA
   settings and ``NCCL_SOCKET_IFNAME`` and leaves ``NCCL_PROTO`` as the job's environment had it.
2. ``process.run_async`` joins the argument list with spaces and runs it with
   ``asyncio.create_subprocess_shell``: a hyperparameter value with a space (or a quote, ``$``, ``;``)
   is split or interpreted by ``/bin/sh``, on this path only (the one-host ``ProcessRunner`` passes a
   list). Here the list goes to ``subprocess.Popen`` as it is, no shell.
3. ``process.watch`` re-reads the output in 64 KiB chunks (``stream.read(65536)``) and prints each
   chunk's pieces as lines, so a line that straddles a chunk boundary comes out as two: a ``#metric``
   line split there is lost to SageMaker's metric regexes, the objective of a tuning job among them.
   :func:`relay` copies whole lines (``readline``, any length), each written and flushed at once.

The toolkit's ``entry_point.run`` calls ``runner.run(wait, capture_error)`` positionally while
``TorchDistributedRunner.run`` takes ``(capture_error, wait)``; :meth:`TorchrunRunner.run` always
waits. A failed torchrun raises the toolkit's ``ExecuteUserScriptError`` with the exit code and the
end of the ranks' stderr, as ``process.check_error`` does, so the toolkit reports the job the same way.
"""

from __future__ import annotations

import collections
import os
import shlex
import subprocess
import sys
import threading
from typing import BinaryIO

from sagemaker_training import environment, errors, logging_config, torch_distributed

NCCL_PROTO_ENV = "NCCL_PROTO"
STDERR_TAIL_LINES = 40      # what the toolkit's error message quotes of a failed run's stderr
# After torchrun exits, how long its output may still arrive: a rank it left behind (torchrun itself
# killed) can hold the pipes open, and the job must still end.
DRAIN_AFTER_EXIT_S = 30.0


class TorchrunRunner(torch_distributed.TorchDistributedRunner):
    """``TorchDistributedRunner`` with the fixes of the module docstring; same constructor."""

    def _setup(self) -> None:
        before = os.environ.get(NCCL_PROTO_ENV)
        super()._setup()
        if before is None:
            os.environ.pop(NCCL_PROTO_ENV, None)
        else:
            os.environ[NCCL_PROTO_ENV] = before

    def run(self, wait: bool = True, capture_error: bool = True):
        """Run torchrun to the end (``wait`` and ``capture_error`` are accepted and ignored: see the
        module docstring). Returns the exit code; raises ``ExecuteUserScriptError`` when it is not 0."""
        cmd = self._create_command()
        logging_config.log_script_invocation(cmd, self._env_vars)
        return_code, stderr_tail = relay(cmd, cwd=environment.code_dir)
        if return_code:
            raise errors.ExecuteUserScriptError(cmd=shlex.join(cmd), return_code=return_code,
                                                output="\n".join(stderr_tail))
        return return_code


def _copy_lines(source: BinaryIO, sink: BinaryIO, keep: collections.deque | None) -> None:
    """Copy ``source`` to ``sink`` a whole line at a time; the last lines also go into ``keep``."""
    for line in iter(source.readline, b""):
        if not line.endswith(b"\n"):
            line += b"\n"
        sink.write(line)
        sink.flush()
        if keep is not None:
            keep.append(line.decode("utf-8", "replace").rstrip("\n"))
    source.close()


def relay(cmd: list[str], cwd: str | None = None, *, stdout: BinaryIO | None = None,
          stderr: BinaryIO | None = None) -> tuple[int, list[str]]:
    """Run ``cmd`` (an argument list, no shell) with this process's environment; copy its stdout and
    stderr, whole lines, to ours. Returns its exit code and the last lines of its stderr."""
    out = stdout or sys.stdout.buffer
    err = stderr or sys.stderr.buffer
    sys.stdout.flush()
    sys.stderr.flush()
    tail: collections.deque = collections.deque(maxlen=STDERR_TAIL_LINES)
    process = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pumps = [threading.Thread(target=_copy_lines, args=(process.stdout, out, None), daemon=True),
             threading.Thread(target=_copy_lines, args=(process.stderr, err, tail), daemon=True)]
    for pump in pumps:
        pump.start()
    return_code = process.wait()
    for pump in pumps:
        pump.join(DRAIN_AFTER_EXIT_S)
    return return_code, list(tail)
