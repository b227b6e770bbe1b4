"""`byoc pipeline --tiny` end to end, from a fresh folder, checking every artifact; then a re-run
that skips everything."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from byoc.local.endpoint import free_port
from byoc.pipeline.steps import STEP_NAMES
from tests.helpers.pipeline_checks import check_pipeline_artifacts

BYOC = Path(sys.executable).with_name("byoc")
# What the steps make (a trained model, its job's log and metrics, archives, tuning results): a skipped
# step rewrites none of them.
PRODUCTS = ("model.pth", "training.log", "metrics.json", "*.tar.gz", "best_hyperparameters.json", "*.out")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One `byoc pipeline --tiny` run from an empty folder, shared by the tests below."""
    cwd = tmp_path_factory.mktemp("pipeline")
    run = cwd / "run"
    cmd = [str(BYOC), "pipeline", "--tiny", "--run-dir", str(run)]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=840)
    return cwd, run, cmd, proc


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_pipeline_tiny_end_to_end(tiny_run):
    tmp_path, run, cmd, proc = tiny_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "finished in" in proc.stdout

    check_pipeline_artifacts(run)

    # Re-running skips every finished step: no job trains again, no model is packaged or deployed again.
    made = {p: p.stat().st_mtime_ns for pattern in PRODUCTS for p in run.rglob(pattern)}
    assert any(p.name == "model.pth" for p in made) and any(p.name == "training.log" for p in made)
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:]
    assert again.stdout.count("done earlier, skipped") == len(STEP_NAMES)
    assert {p: p.stat().st_mtime_ns for pattern in PRODUCTS for p in run.rglob(pattern)} == made


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cli_serve_deploy_invoke_batch_explain(tiny_run):
    """The one-step commands against `byoc serve` running in another process, as a user would."""
    cwd, run, _, proc = tiny_run
    assert proc.returncode == 0, proc.stdout[-3000:]
    models = json.loads((run / "state.json").read_text())["steps"]["package"]["outputs"]["models"]
    data = Path(json.loads((run / "state.json").read_text())["steps"]["data"]["outputs"]["root"])
    rd = ["--run-dir", str(run)]

    def byoc(*args, timeout=120):
        return subprocess.run([str(BYOC), *args, *rd], cwd=cwd, capture_output=True, text=True, timeout=timeout)

    server = subprocess.Popen([str(BYOC), "serve", "--port", str(free_port()), *rd], cwd=cwd,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (run / "endpoint.json").exists():
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "byoc serve did not come up"
            time.sleep(0.5)
        for name, archive in models.items():
            r = byoc("deploy", archive, "--name", name)
            assert r.returncode == 0, r.stderr
        image = sorted((data / "test").rglob("*.jpg"))[0]
        r = byoc("invoke", str(image), "--target-model", "tiny-all", "--topk", "2")
        assert r.returncode == 0, r.stderr
        answer = json.loads(r.stdout)
        assert len(answer["predictions"][0]["top_k"]) == 2
        r = byoc("invoke", str(image), "--target-model", "tiny-all", "--accept", "text/csv")
        assert r.returncode == 0 and r.stdout.startswith("image,rank,label"), r.stdout + r.stderr
        r = byoc("invoke", str(image), "--target-model", "no-such-model")
        assert r.returncode == 1 and "404" in r.stderr
        png = cwd / "cam.png"
        r = byoc("explain", str(image), "--target-model", "tiny-subset2", "-o", str(png))
        assert r.returncode == 0, r.stderr
        assert png.read_bytes().startswith(b"\x89PNG")
        out = cwd / "preds"
        r = byoc("batch", str(data / "test"), "--output", str(out), "--target-model", "tiny-subset2")
        assert r.returncode == 0, r.stdout + r.stderr
        ins = sorted(p.relative_to(data / "test").as_posix() for p in (data / "test").rglob("*.jpg"))
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.out")) == [i + ".out" for i in ins]
        r = byoc("cleanup")
        assert r.returncode == 0, r.stderr
        assert server.wait(timeout=60) == 0
        assert not (run / "endpoint.json").exists()
    finally:
        if server.poll() is None:
            server.kill()
