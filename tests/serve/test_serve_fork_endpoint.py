"""The fork server on a real multi-model endpoint: the gate, MMS 1.1.11 and the models of the real trainer.

Per loaded model MMS runs a backend server process (what the frontend launched: here the fork client,
``mms-python``; forked from the fork server: the process that says ``[PID]``) and one child per worker
connection that holds the model. These tests find them in the endpoint's process tree and check that
they are forked, answer, share torch's pages, and go away with the process the frontend launched.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import psutil
import pytest

from byoc.local.endpoint import LocalEndpoint

pytestmark = pytest.mark.slow

WAIT_S = 90.0


def _args(p: psutil.Process) -> list[str]:
    try:
        return [a for a in p.cmdline() if a]
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return []


def _model_of(p: psutil.Process) -> str | None:
    args = _args(p)
    return args[args.index("--model-name") + 1] if "--model-name" in args[:-1] else None


def _live(procs):
    out = []
    for p in procs:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


class Tree:
    """The endpoint's processes, looked up afresh each time."""

    def __init__(self, endpoint: LocalEndpoint):
        self.endpoint = endpoint
        self.root = psutil.Process(endpoint._proc.pid)

    def all(self) -> list[psutil.Process]:
        return _live(self.root.children(recursive=True))

    def fork_server(self) -> psutil.Process | None:
        return next((p for p in self.root.children() if "container_serve.fork_server" in _args(p)), None)

    def of_model(self, name: str) -> list[psutil.Process]:
        return [p for p in self.all() if _model_of(p) == name]

    def launched(self, name: str) -> list[psutil.Process]:
        """What MMS's frontend started for the model (its children running the model's name)."""
        java = next(p for p in self.all() if p.name() == "java")
        return [p for p in _live(java.children()) if _model_of(p) == name]

    def backends(self, name: str) -> list[psutil.Process]:
        """The backend servers the fork server forked for the model (its log names each), still alive."""
        pids = re.findall(rf"forked worker pid (\d+) for model {re.escape(name)}$", self.endpoint.log_text(), re.M)
        return [p for p in self.all() if str(p.pid) in pids]


def _until(condition, what: str):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"not within {WAIT_S:.0f} s: {what}")


def _torch_mapping(pid: int) -> str | None:
    """Where libtorch is mapped in ``pid`` (its first address range), None when it is not loaded."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if line.endswith("libtorch_cpu.so"):
            return line.split()[0]
    return None


def _answers(endpoint, model, name: str) -> bool:
    status, _, body = endpoint.client.invoke(model.test_images()[0].read_bytes(), "image/jpeg", target_model=name)
    assert status == 200, body[:300]
    assert json.loads(body)["predictions"][0]["label"] in model.classes
    return True


def _status(endpoint, model, name: str) -> int:
    return endpoint.client.invoke(model.test_images()[0].read_bytes(), "image/jpeg", target_model=name)[0]


def _load(endpoint, name: str, model_name: str | None = None) -> None:
    reply = endpoint.client.load_model(name, endpoint.model_url(model_name or name))
    assert reply.status == 200, reply.json()


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory, trained_models):
    root = tmp_path_factory.mktemp("fork-mme")
    ep = LocalEndpoint(model_root=root / "models", multi_model=True, log_file=root / "endpoint.log")
    for name, model in trained_models.items():
        ep.deploy(name, model.archive)
    with ep:
        yield ep


def test_models_are_served_by_workers_forked_from_one_fork_server(endpoint, trained_models):
    tree = Tree(endpoint)
    server = tree.fork_server()
    assert server is not None, endpoint.log_text()[-3000:]
    for name, model in trained_models.items():
        _load(endpoint, name)
        assert _answers(endpoint, model, name)
        (launched,) = tree.launched(name)
        (backend,) = tree.backends(name)
        (worker,) = _live(backend.children())   # the child holding the model (one worker per model)
        assert "mms-python" in " ".join(launched.cmdline())
        assert backend.ppid() == server.pid and worker.ppid() == backend.pid
        assert _args(worker)[1].endswith("mms/model_service_worker.py") and _model_of(worker) == name
        assert f"[PID] {backend.pid}" in endpoint.log_text()   # its output reached MMS's log
    # torch was not loaded again: every model process maps libtorch where the fork server mapped it,
    # the pages it inherited by fork (a process that imported torch itself gets its own mapping). What
    # that saves is measured in bench/RESULTS.md section 3, not here.
    server_torch = _torch_mapping(server.pid)
    assert server_torch is not None
    for name in trained_models:
        (backend,) = tree.backends(name)
        for proc in [backend, *_live(backend.children())]:
            assert _torch_mapping(proc.pid) == server_torch, (name, proc.pid)


def test_a_killed_model_worker_is_replaced_by_a_new_fork(endpoint, trained_models):
    """The model-holding child dies (here SIGKILL, as the OOM killer would): MMS reconnects to the
    backend server, which forks a new one from its own (torch-holding) memory, and the model answers."""
    tree = Tree(endpoint)
    name, model = next(iter(trained_models.items()))
    if not tree.launched(name):
        _load(endpoint, name)
    (backend,) = tree.backends(name)
    (worker,) = _live(backend.children())
    worker.kill()
    (new,) = _until(lambda: [w for w in _live(backend.children()) if w.pid != worker.pid], "a new worker")
    assert new.ppid() == backend.pid and _model_of(new) == name
    _until(lambda: _status(endpoint, model, name) == 200, f"{name} answers again")
    assert _answers(endpoint, model, name)


def test_a_sigkilled_launched_worker_takes_its_forked_process_with_it(endpoint, trained_models):
    """The frontend's way to end a backend server (Process.destroyForcibly): SIGKILL the pid it launched.
    MMS 1.1.11 does not start a new one for a model whose backend server died, with or without the fork
    server (observed; in its source the server thread's ``finally`` calls ``backendChannel.disconnect()``
    on a channel only worker threads open, before ``retry()``); the model's worker keeps its connection
    and answers until the model is unloaded."""
    tree = Tree(endpoint)
    name, model = next(iter(trained_models.items()))
    if not tree.launched(name):
        _load(endpoint, name)
    (launched,) = tree.launched(name)
    (backend,) = tree.backends(name)
    launched.kill()
    _until(lambda: not _live([backend]), f"the forked backend server {backend.pid} is gone")
    assert _answers(endpoint, model, name)
    reply = endpoint.client.unload_model(name)
    assert reply.status == 200, reply.json()
    _until(lambda: not tree.of_model(name), f"no process of {name} left")


def test_unloading_a_model_leaves_no_process_of_it(endpoint, trained_models):
    tree = Tree(endpoint)
    name, model = list(trained_models.items())[-1]
    if not tree.launched(name):
        _load(endpoint, name)
    assert len(tree.of_model(name)) == 3   # launched, forked backend server, its model-holding child
    reply = endpoint.client.unload_model(name)
    assert reply.status == 200, reply.json()
    _until(lambda: not tree.of_model(name), f"no process of {name} left")
    assert tree.fork_server() is not None
    _load(endpoint, name)                   # and it loads again, forked again
    assert _answers(endpoint, model, name) and tree.backends(name)


def test_without_a_fork_server_new_workers_start_as_a_plain_python(endpoint, trained_models):
    """The fork server gone (here SIGKILLed): what it forked dies with it (PR_SET_PDEATHSIG), MMS
    restarts those backend servers, and every worker started from then on is a plain python, logged."""
    tree = Tree(endpoint)
    server = tree.fork_server()
    forked = [p for name in trained_models for p in tree.backends(name)]
    server.kill()
    _until(lambda: not _live([server, *forked]), "the fork server and the backend servers it forked are gone")
    last, model = list(trained_models.items())[-1]
    _load(endpoint, "after-the-fork-server", model_name=last)
    assert _answers(endpoint, model, "after-the-fork-server")
    (backend,) = tree.launched("after-the-fork-server")
    assert "mms-python" not in " ".join(backend.cmdline())   # the client exec'd the plain python
    assert "starting this worker as a plain python process" in endpoint.log_text()
    assert _answers(endpoint, model, last)   # its worker kept its connection to MMS


def test_stopping_the_endpoint_ends_every_process(endpoint):
    tree = Tree(endpoint)
    procs = tree.all()
    assert procs
    assert endpoint.stop() == 0
    assert not _live(procs), _live(procs)
