"""Two `byoc tune` processes on one study in a real PostgreSQL server (Debian's ``postgresql``
package; the test starts its own on 127.0.0.1): together they finish the budget exactly once, each
trial on one tuner, no values drawn twice, and neither touches the other's running trial.

Without the server binaries the test skips with the reason, except under CI or
BYOC_REQUIRE_DOCKER=1, where it fails (scripts/install_system_deps.sh installs them)."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from byoc.datasets.synthetic import make_dataset
from byoc.local.endpoint import free_port
from byoc.tuning import budget
from tests.helpers import required

pytestmark = pytest.mark.slow

BYOC = Path(sys.executable).with_name("byoc")
STUDY = "shared"
MAX_JOBS = 4
TINY = {"arch": "resnet18", "pretrained": False, "freeze": "none", "image-size": 32, "workers": 0,
        "debugger": False, "batch-size": 8, "log-interval-s": 60, "epochs": 1}
POLL_S = 0.5
WAIT_S = 300            # for one tiny trial to start or finish


def _unavailable(message: str):
    required.missing(message)


def _as_server_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: the tests do, so the server runs as ``postgres`` (or nobody)."""
    if os.geteuid() != 0:
        return cmd
    user = "postgres" if _user_exists("postgres") else "nobody"
    return ["runuser", "-u", user, "--", *cmd]


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        _unavailable("PostgreSQL server binaries missing: apt-get install postgresql")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _unavailable("the psycopg2 driver is missing: pip install psycopg2-binary")
    bin_dir = Path(bins[-1]).parent
    # Not under tmp_path: pytest's folders are root's alone, and the server user must own its own.
    root = Path(tempfile.mkdtemp(prefix="byoc-postgres-"))
    data, log = root / "data", root / "server.log"
    if os.geteuid() == 0:
        user = "postgres" if _user_exists("postgres") else "nobody"
        shutil.chown(root, user)
    port = free_port()
    subprocess.run(_as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "byoc", "-A", "trust",
                                    "--no-sync"]), check=True, capture_output=True)
    # pg_ctl -w waits (boundedly) until the server accepts connections.
    started = subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w",
                                              "-o", f"-h 127.0.0.1 -p {port} -k {root}", "start"]),
                             capture_output=True, text=True)
    if started.returncode != 0:
        pytest.fail(f"PostgreSQL did not start: {started.stdout}{started.stderr}"
                    f"{log.read_text() if log.exists() else ''}")
    try:
        yield f"postgresql+psycopg2://byoc@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=STUDY, storage=url).get_trials()
    except KeyError:                   # the first tuner has not created the study yet
        return []


def _wait_for(condition, procs: list[subprocess.Popen], what: str, within_s: float = WAIT_S) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` when a tuner ends first or ``within_s`` passes
    (a bound for a hung tuner, far above a trial's length: the test's own deadline, not a speed check)."""
    deadline = time.monotonic() + within_s
    while not condition():
        for p in procs:
            assert p.poll() is None, f"a tuner ended before {what}: {p.args}"
        assert time.monotonic() < deadline, f"no sign within {within_s:.0f} s that {what}"
        time.sleep(POLL_S)


def _owner_pid(t: optuna.trial.FrozenTrial) -> int | None:
    owner = budget.Tuner.from_attr(t.user_attrs.get(budget.OWNER_ATTR))
    return None if owner is None else owner.pid


@pytest.mark.timeout(1200)
def test_two_tuners_finish_one_budget_exactly_once(postgres_url, tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = tmp_path / "data"
    make_dataset(data, num_classes=3, per_class=8, size=32, seed=1)
    spec = tmp_path / "random.yaml"
    # Random with a fixed seed: two tuners seeded alike would draw the same learning rates.
    spec.write_text(json.dumps({
        "objective": {"metric": "validation:accuracy", "direction": "Maximize"}, "strategy": "Random",
        "max_jobs": MAX_JOBS, "max_parallel_jobs": 1, "early_stopping": "Off", "random_seed": 0,
        "parameters": {"lr": {"type": "continuous", "min": 0.001, "max": 0.05, "scaling": "log"}},
        "static": TINY}))
    outs = {"a": tmp_path / "tune-a", "b": tmp_path / "tune-b"}

    def tuner(name: str) -> subprocess.Popen:
        return subprocess.Popen([str(BYOC), "tune", "--data", str(data), "--spec", str(spec),
                                 "--out", str(outs[name]), "--run-dir", str(tmp_path / f"run-{name}"),
                                 "--storage", postgres_url, "--study-name", STUDY],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    a = tuner("a")
    procs = [a]
    try:
        # A's first training job runs; then A is paused, so that B starts while A holds a trial
        # and B must both leave that trial alone and take the rest of the budget with A.
        _wait_for(lambda: any(t.state == TrialState.RUNNING and "pid" in t.user_attrs for t in _trials(postgres_url)),
                  procs, "its first job started")
        a.send_signal(signal.SIGSTOP)
        b = tuner("b")
        procs.append(b)
        _wait_for(lambda: any(t.state.is_finished() and _owner_pid(t) == b.pid and budget.takes_budget(t)
                              for t in _trials(postgres_url)), [b], "B finished a trial")
        a.send_signal(signal.SIGCONT)
        outputs = {name: p.communicate(timeout=900)[0] for name, p in zip(("a", "b"), procs, strict=True)}
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()
    for name, p in zip(("a", "b"), procs, strict=True):
        assert p.returncode == 0, f"tuner {name}:\n{outputs[name][-4000:]}"

    trials = _trials(postgres_url)
    taken = [t for t in trials if budget.takes_budget(t)]
    # The budget, exactly once: MAX_JOBS trials, all finished, none interrupted by the other tuner.
    assert len(taken) == MAX_JOBS, [(t.number, t.state, t.user_attrs) for t in trials]
    assert all(t.state == TrialState.COMPLETE for t in taken)
    assert not [t for t in trials if t.user_attrs.get(budget.INTERRUPTED_ATTR)]
    # Both tuners took part, each trial's job ran on its owner only, and no value was drawn twice.
    by_owner = {t.number: _owner_pid(t) for t in taken}
    assert set(by_owner.values()) == {a.pid, b.pid}
    for t in taken:
        mine, other = (outs["a"], outs["b"]) if by_owner[t.number] == a.pid else (outs["b"], outs["a"])
        assert Path(t.user_attrs["job_dir"]).parent == mine / "trials"
        assert (Path(t.user_attrs["job_dir"]) / "training.log").is_file()
        assert not (other / "trials" / Path(t.user_attrs["job_dir"]).name).exists()
    assert len({t.params["lr"] for t in taken}) == MAX_JOBS
    # A surplus trial (a lost race for the last slot) never ran a job and is no leaderboard row.
    surplus = [t for t in trials if budget.SURPLUS_ATTR in t.user_attrs]
    for t in surplus:
        assert "job_dir" not in t.user_attrs
    for out in outs.values():
        rows = json.loads((out / "leaderboard.json").read_text())["trials"]
        assert {r["trial"] for r in rows} <= {t.number for t in taken}
