"""`byoc pipeline --tiny` end to end, from a fresh folder, checking every artifact; then a re-run
that skips everything."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from byoc_common.artifact import read_model_metadata
from scripts.commands import read_best_hyperparameters
from scripts.local_endpoint import free_port  # below 32767: multi-model-server's limit
from scripts.pipeline import STEP_NAMES

BYOC = Path(sys.executable).with_name("byoc")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One `byoc pipeline --tiny` run from an empty folder, shared by the tests below."""
    cwd = tmp_path_factory.mktemp("pipeline")
    run = cwd / "run"
    cmd = [str(BYOC), "pipeline", "--tiny", "--run-dir", str(run)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=840)
    return cwd, run, cmd, proc, time.monotonic() - t0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_pipeline_tiny_end_to_end(tiny_run):
    tmp_path, run, cmd, proc, first_s = tiny_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "finished in" in proc.stdout

    state = json.loads((run / "state.json").read_text())
    assert [s for s in STEP_NAMES if state["steps"][s]["status"] != "done"] == []
    out = {name: state["steps"][name]["outputs"] for name in STEP_NAMES}

    # data: a real ImageFolder in the run dir
    classes = out["data"]["classes"]
    assert len(classes) == 3 and all((Path(out["data"]["root"]) / "test" / c).is_dir() for c in classes)
    # tune: a leaderboard with 2 trials and the best hyperparameters
    assert len(Path(out["tune"]["leaderboard"]).read_text().strip().splitlines()) == 3
    best = read_best_hyperparameters(out["tune"]["out_dir"])   # what `byoc train --from-tuning` reads
    assert best["arch"] == "efficientnet_lite0" and "lr" in best and "batch-size" in best
    # train: model artifact, Debugger tensors, profiler records
    cfg, model_classes = read_model_metadata(out["train"]["model_dir"])
    assert cfg.arch == "efficientnet_lite0"
    assert model_classes == [c.split(".", 1)[1] for c in classes]   # 001.T-shirt_top -> T-shirt_top
    job = Path(out["train"]["job_dir"])
    assert any((job / "output" / "tensors").rglob("*.tfevents")), "no Debugger tensors"
    assert (job / "output" / "data" / "profiler" / "step_timings.jsonl").stat().st_size > 0
    # report: rule results for every rule and a self-contained HTML report
    rules = json.loads((Path(out["report"]["rules_dir"]) / "rule_results.json").read_text())["rules"]
    assert {r["rule"] for r in rules} >= {"VanishingGradient", "LossNotDecreasing", "Overfit", "Overtraining",
                                          "PoorWeightInitialization"}
    assert {r["rule"]: r["status"] for r in rules} == out["report"]["rules"]
    html = Path(out["report"]["profiler_report"]).read_text()
    assert "<html" in html.lower() and "data:image/png;base64" in html
    # second model: a different class set
    _, second_classes = read_model_metadata(out["train_second"]["model_dir"])
    assert len(second_classes) == 2
    # package: two flat archives
    models = out["package"]["models"]
    assert len(models) == 2
    for archive in models.values():
        with tarfile.open(archive) as tar:
            assert sorted(tar.getnames()) == ["classes.json", "model.pth", "model_config.json"]
    # serve: both loaded
    assert sorted(out["serve"]["loaded"]) == sorted(models)
    # invoke: each model answered with one of its own classes
    invocations = json.loads(Path(out["invoke"]["results"]).read_text())
    assert set(invocations) == set(models)
    labels_by_model = {"tiny-all": set(model_classes), "tiny-subset2": set(second_classes)}
    for model, results in invocations.items():
        assert results and all(r["label"] in labels_by_model[model] for r in results)
    # batch: one .out per input, each a JSON prediction
    inputs = sorted(p.name for p in Path(out["batch"]["input"]).iterdir())
    outputs = sorted(p.name for p in Path(out["batch"]["output"]).iterdir())
    assert outputs == [f"{name}.out" for name in inputs] and len(inputs) == 4
    for p in Path(out["batch"]["output"]).iterdir():
        assert json.loads(p.read_text())["predictions"][0]["label"] in model_classes
    # explain: a real PNG
    png = Path(out["explain"]["png"]).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 100
    # the endpoint was stopped at the end
    assert not (run / "endpoint.json").exists()

    # Re-running skips every finished step (no training, no endpoint).
    t0 = time.monotonic()
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:]
    assert again.stdout.count("done earlier, skipped") == len(STEP_NAMES)
    assert time.monotonic() - t0 < first_s


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cli_serve_deploy_invoke_batch_explain(tiny_run):
    """The one-step commands against `byoc serve` running in another process, as a user would."""
    cwd, run, _, proc, _ = tiny_run
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
