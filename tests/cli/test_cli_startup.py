"""A ``byoc`` command that neither trains nor serves starts without torch, smdebug, optuna or matplotlib.

Importing torch alone costs seconds (8-16 s for ``byoc --help`` before this was fixed, issue 25),
smdebug seconds more and a log line. Each command runs in a fresh interpreter here, and the test
reads that interpreter's ``sys.modules`` after the command: which modules were loaded, not how long
it took, so the test does not depend on the machine's load.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "smdebug", "optuna", "matplotlib", "pandas")
# Local commands do not talk to AWS either.
LOCAL_ONLY_HEAVY = HEAVY + ("boto3", "botocore")

PROBE = """
import json, sys
from byoc.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "modules": sorted({m.split('.')[0] for m in sys.modules})}))
"""


def run_cli(*argv: str) -> tuple[int, set[str], str]:
    """Run ``byoc ARGV`` in a fresh interpreter: its exit code, top-level modules loaded, and stderr."""
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["code"], set(result["modules"]), out.stderr


@pytest.mark.parametrize("argv", [
    ("--help",),
    ("train", "--help"),
    ("tune", "--help"),
    ("pipeline", "--help"),
    ("serve", "--help"),
])
def test_help_imports_nothing_heavy(argv):
    code, modules, _ = run_cli(*argv)
    assert code == 0
    assert modules.isdisjoint(LOCAL_ONLY_HEAVY), sorted(modules & set(LOCAL_ONLY_HEAVY))


def test_local_commands_that_do_not_train_import_nothing_heavy(tmp_path):
    run_dir = str(tmp_path / "run")
    for argv in (("cleanup", "--run-dir", run_dir),
                 ("invoke", str(tmp_path / "missing.jpg"), "--run-dir", run_dir),
                 ("data", "--source", str(tmp_path / "missing"), "--run-dir", run_dir)):
        code, modules, stderr = run_cli(*argv)
        assert code in (0, 1), stderr
        assert modules.isdisjoint(LOCAL_ONLY_HEAVY), (argv, sorted(modules & set(LOCAL_ONLY_HEAVY)))


def test_sagemaker_backend_starts_without_smdebug_or_its_log_line(tmp_path):
    code, modules, stderr = run_cli("cleanup", "--backend", "sagemaker", "--region", "eu-west-1", "--dry-run",
                                    "--run-dir", str(tmp_path / "run"))
    assert code == 0, stderr
    assert modules.isdisjoint(HEAVY), sorted(modules & set(HEAVY))
    assert "smdebug" not in stderr and "RULE_JOB_STOP_SIGNAL_FILENAME" not in stderr
