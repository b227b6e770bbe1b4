"""docker/train_entrypoint.py outside a container: staging train.py and finding the trainer process."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_entrypoint():
    spec = importlib.util.spec_from_file_location("train_entrypoint", REPO_ROOT / "docker" / "train_entrypoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_user_script_fills_an_empty_code_dir_and_keeps_an_existing_one(tmp_path):
    entry = load_entrypoint()
    spare = tmp_path / "spare_train.py"
    spare.write_text("print('image copy')\n")
    env = {"SAGEMAKER_BASE_DIR": str(tmp_path / "opt_ml"), "SAGEMAKER_PROGRAM": "train.py",
           "BYOC_TRAIN_SCRIPT": str(spare)}

    staged = entry.stage_user_script(env)
    assert staged == tmp_path / "opt_ml" / "code" / "train.py"
    assert staged.read_text() == "print('image copy')\n"

    staged.write_text("print('mounted copy')\n")
    assert entry.stage_user_script(env) is None
    assert staged.read_text() == "print('mounted copy')\n"


def test_trainer_processes_looks_through_a_shell_wrapper():
    """The toolkit starts the script through `/bin/sh -c`; the signal must reach the script, not sh."""
    entry = load_entrypoint()
    toolkit = subprocess.Popen([sys.executable, "-c",
                                "import subprocess; subprocess.run(['sh', '-c', 'sleep 30; true'])"],
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        targets = []
        while time.monotonic() < deadline and not targets:
            targets = entry.trainer_processes(toolkit.pid)
            time.sleep(0.1)
        assert [p.name() for p in targets] == ["sleep"]
    finally:
        os.killpg(toolkit.pid, signal.SIGKILL)      # the whole little tree: python, sh, sleep
        toolkit.wait()


def test_missing_job_config_is_filled_in_and_existing_files_are_kept(tmp_path):
    """A hand-made /opt/ml (no resourceconfig.json) would make the toolkit exit 0 doing nothing."""
    import json

    entry = load_entrypoint()
    base = tmp_path / "opt_ml"
    (base / "input" / "data" / "training").mkdir(parents=True)
    (base / "input" / "data" / "pretrained").mkdir()
    (base / "input" / "config").mkdir()
    (base / "input" / "config" / "hyperparameters.json").write_text('{"epochs": "3"}')

    entry.fill_missing_config({"SAGEMAKER_BASE_DIR": str(base)})

    config = base / "input" / "config"
    assert json.loads((config / "resourceconfig.json").read_text())["hosts"] == ["algo-1"]
    assert sorted(json.loads((config / "inputdataconfig.json").read_text())) == ["pretrained", "training"]
    assert json.loads((config / "hyperparameters.json").read_text()) == {"epochs": "3"}
