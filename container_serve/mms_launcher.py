"""multi-model-server's own launcher, with the ``--python`` it hands the Java frontend replaced.

``mms/model_server.py`` (``start``, what the ``multi-model-server`` command runs) builds the ``java``
command line and passes ``--python <sys.executable>`` to the frontend, which runs that interpreter for
every backend worker (``WorkerLifeCycle.startBackendServer``: ``args[0] =
configManager.getPythonExecutable()``) and for its metric collector (``MetricCollector.run``). The
frontend's ``--python`` argument overrides any ``PYTHON_EXECUTABLE`` in the config file
(``ConfigManager``), so the one place to choose it is this launcher process's ``sys.executable``::

    python -m container_serve.mms_launcher <python for the workers> <multi-model-server arguments...>

runs MMS's launcher unchanged with ``sys.executable`` set to the first argument
(:mod:`container_serve.fork_client`'s script while the fork server is on).
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int | None:
    python, *mms_args = argv
    sys.executable = python   # model_server.py: cmd.append("--python"); cmd.append(sys.executable)
    sys.argv = ["multi-model-server", *mms_args]
    from mms.model_server import start

    return start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
