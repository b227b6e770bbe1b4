"""The torchrun path of the training image's launcher, run by the real sagemaker-training toolkit.

What the toolkit's own ``TorchDistributedRunner`` (sagemaker-training 4.9.0, ``torch_distributed.py`` and
``process.py``) gets wrong and ``container_train.torchrun_runner`` must not: ``NCCL_PROTO=simple`` in every
rank's environment, the command run as a ``/bin/sh`` string (a hyperparameter value with a space or a
``$`` is split or expanded), and output re-read in 64 KiB chunks, which cuts a line that straddles a
chunk boundary in two -- a ``#metric`` line among them.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from byoc.local.multi_host import free_port
from container_train.contract import parse_metric
from container_train.job_env import (
    LAUNCHER_MODULE,
    MASTER_ADDR_ENV,
    MASTER_PORT_ENV,
    TORCH_DISTRIBUTED_HYPERPARAMETER,
    file_mode_input_data_config,
    single_host_resource_config,
)
from container_train.torchrun_runner import NCCL_PROTO_ENV, TorchrunRunner, relay

REPO = Path(__file__).resolve().parents[2]
CHUNK = 64 * 1024                     # sagemaker_training.process._DEFAULT_BUF_SIZE
METRIC = "#metric test_loss=0.25 test_acc=0.75"

# The user script: its argv and NCCL_PROTO as JSON, then (one write) a line that ends 10 bytes before
# the toolkit's first 64 KiB chunk does, so the metric line after it straddles the boundary, then a
# line longer than a whole chunk, then the metric line once more.
PROBE = f"""
import json, os, sys
head = json.dumps({{"argv": sys.argv[1:], "nccl_proto": os.environ.get("NCCL_PROTO")}}) + "\\n"
pad = "p" * ({CHUNK} - 10 - len(head.encode()) - 1) + "\\n"
sys.stdout.write(head + pad + {METRIC!r} + "\\n" + "L" * ({CHUNK} * 2) + "\\n" + {METRIC!r} + "\\n")
sys.stdout.flush()
print("to stderr", file=sys.stderr)
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
"""


def _toolkit_job(tmp_path: Path, hyperparameters: dict, env: dict | None = None) -> subprocess.CompletedProcess:
    """``<venv>/bin/train`` (the toolkit's ``train``) on a hand-made /opt/ml with the probe as the user
    script and the image's launcher, one host, torch_distributed on: the toolkit's torchrun path."""
    base = tmp_path / "ml"
    config = base / "input" / "config"
    config.mkdir(parents=True)
    hp = {**hyperparameters, TORCH_DISTRIBUTED_HYPERPARAMETER: "true"}
    (config / "hyperparameters.json").write_text(json.dumps(hp))
    (config / "resourceconfig.json").write_text(json.dumps(single_host_resource_config()))
    (config / "inputdataconfig.json").write_text(json.dumps(file_mode_input_data_config({})))
    (base / "code").mkdir()
    (base / "code" / "probe.py").write_text(PROBE)
    venv_bin = Path(sys.executable).parent
    job_env = {k: v for k, v in os.environ.items() if k != NCCL_PROTO_ENV}
    job_env.update({
        "SAGEMAKER_BASE_DIR": str(base), "SAGEMAKER_PROGRAM": "probe.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": str(base / "code"), "SAGEMAKER_TRAINING_MODULE": LAUNCHER_MODULE,
        "SM_STUDIO_LOCAL_MODE": "true", MASTER_ADDR_ENV: "127.0.0.1", MASTER_PORT_ENV: str(free_port()),
        "PATH": os.pathsep.join([str(venv_bin), os.environ.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
        **(env or {}),
    })
    return subprocess.run([str(venv_bin / "train")], env=job_env, cwd=base, capture_output=True, timeout=300)


def _probe_report(stdout: str) -> dict:
    return next(json.loads(line) for line in stdout.splitlines() if line.startswith('{"argv"'))


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    hp = {"note": "two words; $HOME `id`", "lr": "0.1"}
    done = _toolkit_job(tmp_path_factory.mktemp("torchrun"), hp)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    return done


def test_a_metric_line_across_the_toolkits_64_kib_chunk_boundary_comes_out_whole(job):
    stdout = job.stdout.decode()
    lines = stdout.splitlines()
    assert lines.count(METRIC) == 2, [line[:60] for line in lines if "metric" in line or len(line) < 60]
    assert "L" * (CHUNK * 2) in lines and "p" * 1000 in stdout
    # What SageMaker's metric regexes see: both values of both lines.
    assert parse_metric("test:accuracy", stdout) == [0.75, 0.75]
    assert "to stderr" in job.stderr.decode()


def test_a_hyperparameter_value_with_spaces_and_shell_characters_reaches_the_script_as_one_argument(job):
    argv = _probe_report(job.stdout.decode())["argv"]
    assert argv[argv.index("--note") + 1] == "two words; $HOME `id`"
    assert argv[argv.index("--lr") + 1] == "0.1"
    assert "torchrun --nnodes 1 --nproc_per_node 1" in job.stderr.decode() + job.stdout.decode()


def test_the_ranks_get_no_forced_nccl_protocol(job):
    assert _probe_report(job.stdout.decode())["nccl_proto"] is None


def test_a_protocol_the_job_sets_itself_is_kept(monkeypatch):
    runner = TorchrunRunner("probe.py", [], {}, 1, "algo-1", ["algo-1"], "algo-1", "eth0")
    monkeypatch.setenv(NCCL_PROTO_ENV, "LL128")
    runner._setup()
    assert os.environ[NCCL_PROTO_ENV] == "LL128" and os.environ["NCCL_SOCKET_IFNAME"] == "eth0"
    monkeypatch.delenv(NCCL_PROTO_ENV)
    runner._setup()
    assert NCCL_PROTO_ENV not in os.environ


def test_a_failed_rank_fails_the_toolkit_run_with_its_stderr(tmp_path):
    done = _toolkit_job(tmp_path, {}, env={"PROBE_EXIT": "3"})
    assert done.returncode != 0
    # The rank wrote no failure file: the launcher says what torchrun's failure means ...
    failure = (tmp_path / "ml" / "output" / "failure").read_text()
    assert failure.startswith("torchrun on host algo-1 failed (exit 1)"), failure
    # ... and the toolkit's error quotes the end of the ranks' stderr, as its own runner does.
    log = done.stderr.decode()
    assert "ExecuteUserScriptError" in log and "ExitCode 1" in log, log[-3000:]
    assert 'ErrorMessage "' in log and "to stderr" in log.split("ExecuteUserScriptError", 1)[1], log[-3000:]


def test_relay_copies_whole_lines_and_keeps_the_end_of_stderr():
    out, err = io.BytesIO(), io.BytesIO()
    code, tail = relay([sys.executable, "-c", "import sys; sys.stdout.write('a' * 200000); "
                        "sys.stderr.write('\\n'.join(str(i) for i in range(100)) + '\\n'); sys.exit(2)"],
                       stdout=out, stderr=err)
    assert code == 2
    assert out.getvalue() == b"a" * 200000 + b"\n"       # an unterminated last line is ended
    assert tail[-1] == "99" and len(tail) < 100 and err.getvalue().count(b"\n") == 100
