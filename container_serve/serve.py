"""The ``serve`` entry point: multi-model-server behind the request gate.

SageMaker starts the serving image as ``docker run IMAGE serve``. This process

1. reads the environment (:class:`container_serve.settings.ServeSettings`) and checks the model root
   (single-model: the directory layout of :mod:`container_serve.model_layout`, before any Java starts),
2. starts multi-model-server (:mod:`container_serve.mms_process`) on two Unix sockets in a private folder,
   after the fork server its python workers are forked from (:mod:`container_serve.fork_server`,
   ``BYOC_FORK_SERVER``),
3. waits until MMS answers (single-model: until a worker loaded the model; when the worker cannot, it
   exits 2 with the worker's reason),
4. opens ``SAGEMAKER_BIND_TO_PORT``: the gate (:mod:`container_serve.gate`), the only way in, and
5. on SIGTERM/SIGINT closes the port, stops the whole MMS process group (the Java frontend *and* its
   python workers, which the frontend leaves running when it is killed alone) and the fork server's,
   and exits 0; when MMS exits by itself, exits with its code.

The gate runs in this process (asyncio) and imports no torch, so the entry point stays a few tens of MB;
``server.start()`` runs in this (main) thread, which the fork server's parent-death signal watches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from container_serve import load_reports
from container_serve.errors import InferenceError
from container_serve.gate import Gate
from container_serve.mms_process import SINGLE_MODEL_NAME, ModelServerProcess
from container_serve.model_layout import ModelDirError, check_model_dir
from container_serve.settings import ServeSettings, SettingsError
from container_serve.upstream import within

logger = logging.getLogger("container_serve.serve")

READY_POLL_S = 0.2
CANNOT_SERVE = 2


def check_model_root(settings: ServeSettings) -> None:
    if settings.multi_model:
        settings.model_root.mkdir(parents=True, exist_ok=True)
        return
    check_model_dir(settings.model_root, settings.model_root)  # fail fast, before Java starts


async def _ready(gate: Gate, settings: ServeSettings, server: ModelServerProcess) -> int | None:
    """None while starting, 0 when ready, an exit code when the single model cannot be loaded."""
    if settings.multi_model:
        try:
            answer = await within(settings.upstream_timeout_s, "GET /models", gate.management.send("GET", "/models", []))
            return 0 if answer.status == 200 else None
        except InferenceError:
            return None  # the socket is not there yet
    report = load_reports.take(server.load_reports_dir, SINGLE_MODEL_NAME)
    if report is None:
        return None
    code, message = report
    if code == load_reports.LOADED:
        return 0
    logger.error("cannot serve: the model in %s did not load (%d): %s", settings.model_root, code, message)
    return CANNOT_SERVE


async def _wait(*aws, timeout: float | None = None) -> None:
    await asyncio.wait([asyncio.ensure_future(a) for a in aws], timeout=timeout,
                       return_when=asyncio.FIRST_COMPLETED)


async def run(settings: ServeSettings) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signo in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signo, stop.set)
    server = ModelServerProcess(settings)
    gate = Gate(settings, server.inference_socket, server.management_socket, server.load_reports_dir,
                server_running=lambda: server.proc is not None and server.proc.poll() is None)
    listener = None
    try:
        server.start()
        exited = loop.run_in_executor(None, server.proc.wait)
        stopping = asyncio.ensure_future(stop.wait())
        while (state := await _ready(gate, settings, server)) is None:
            if exited.done() or stop.is_set():
                break
            await _wait(exited, stopping, timeout=READY_POLL_S)
        if state == 0 and not exited.done() and not stop.is_set():
            listener = await gate.serve(settings.bind_address, settings.port)
            logger.info("gate listening on %s:%d (%s endpoint)", settings.bind_address, settings.port,
                        "multi-model" if settings.multi_model else "single-model")
            await _wait(exited, stopping)
        stopping.cancel()
    finally:
        if listener is not None:
            listener.close()
        gate.close()
        await loop.run_in_executor(None, server.stop)
        server.cleanup()
    if stop.is_set():
        logger.info("model server stopped")
        return 0
    if state not in (None, 0):
        return state
    code = server.proc.returncode
    logger.error("model server exited unexpectedly with code %s", code)
    return code or 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="serve", description=__doc__.split("\n\n")[0])
    # SageMaker runs the image as "docker run IMAGE serve", so "serve" may arrive as an argument.
    parser.add_argument("command", nargs="?", choices=["serve"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = ServeSettings.from_env()
        logger.info("settings: %s", json.dumps({k: str(v) for k, v in vars(settings).items()}))
        check_model_root(settings)
    except (SettingsError, ModelDirError) as e:
        logger.error("cannot serve: %s", e)
        return CANNOT_SERVE
    return asyncio.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())
