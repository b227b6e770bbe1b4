"""What a finished `byoc pipeline --tiny` run must have produced; shared by the process-mode test
(tests/pipeline/test_pipeline_tiny.py) and the container-mode one (tests/containers)."""

from __future__ import annotations

import itertools
import json
import re
import tarfile
from pathlib import Path

from byoc.pipeline.steps import STEP_NAMES
from byoc.tuning.best import read_best_hyperparameters
from byoc_common.artifact import read_model_metadata


def check_pipeline_artifacts(run: Path) -> list[str]:
    """Assert every step is done and every artifact exists and is right; returns the model's classes."""
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
    # one page with every step and a working link to every local artifact
    page = (run / "index.html").read_text()
    links = re.findall(r'href="([^"]+)"', page)
    assert links and all((run / link).exists() for link in links), [x for x in links if not (run / x).exists()]
    for name in STEP_NAMES:
        assert f"<td>{name}</td>" in page

    return model_classes


def check_phases_cover_the_job(data) -> None:
    """The trainer's timed phases (``ProfileData.phases``) follow one another from start-up to the
    artifact save without overlapping: what the report's time by phase relies on, checked without
    comparing durations (the untimed moments between phases depend on the machine)."""
    rows = data.phases.sort_values("start").to_dict("records")
    assert rows[0]["phase"] == "start-up" and rows[-1]["phase"] == "artifact save", [r["phase"] for r in rows]
    for before, after in itertools.pairwise(rows):
        # starts are rounded to 1 ms, durations to 0.1 ms in phases.jsonl
        assert before["start"] + before["seconds"] <= after["start"] + 0.002, (before, after)
