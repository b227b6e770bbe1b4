"""The pipeline's page and summary say what happened in sentences (issue 25): no Python dict or list of
keys in a result cell, each invocation marked right or wrong, and the time the work took shown after a
rerun that skipped every step (it used to say "finished in 0 s", and the page dropped the line)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from byoc.pipeline.page import write_page
from byoc.pipeline.state import PipelineState
from byoc.pipeline.summary import timing_sentence

STEPS = ["data", "tune", "train", "report", "train_second", "package", "serve", "invoke", "batch", "explain"]


def _finished_run(run_dir: Path) -> PipelineState:
    """A state.json as a finished demo run leaves it (outputs shaped as the local backend answers)."""
    run_dir.mkdir(parents=True)
    invocations = run_dir / "invocations.json"
    test = run_dir / "data" / "test"
    invocations.write_text(json.dumps({"demo-all": [
        {"image": str(test / "001.T-shirt_top" / "0000.jpg"), "true_class": "001.T-shirt_top",
         "label": "Shirt", "probability": 0.2},
        {"image": str(test / "002.Trouser" / "0000.jpg"), "true_class": "002.Trouser",
         "label": "Trouser", "probability": 0.97}]}))     # classes.json names: no 00N. prefix
    outputs = {
        "data": {"source": "fashion-mnist", "classes": [f"c{i}" for i in range(10)],
                 "counts": {"train": 10000, "valid": 1000, "test": 1000}, "location": str(run_dir / "data")},
        "tune": {"best_trial": 2, "best_value": 0.871, "plots": {}},
        "train": {"test": {"accuracy": 0.857, "loss": 0.5, "images": 1000}, "best_valid_acc": 0.87,
                  "stopped_by_rule": None},
        "report": {"rules": {"Overfit": "NoIssuesFound", "LossNotDecreasing": "NoIssuesFound"}},
        "train_second": {"test": {"accuracy": 0.9, "loss": 0.3, "images": 400}, "best_valid_acc": 0.91},
        "package": {"models": {"demo-all": "a.tar.gz", "demo-subset4": "b.tar.gz"}},
        "serve": {"address": "http://127.0.0.1:20001", "loaded": ["demo-all", "demo-subset4"]},
        "invoke": {"results": str(invocations), "count": 2},
        "batch": {"outputs": 20, "model": "demo-all"},
        "explain": {"image": str(test / "001.T-shirt_top" / "0000.jpg"), "label": "Shirt", "model": "demo-all"},
    }
    state = PipelineState.load(run_dir)
    for i, name in enumerate(STEPS):
        state.step(name).update(status="done", seconds=10.0 + i, outputs=outputs[name])
    state.data["total_seconds"] = 150.0
    return state


def _cells(page: str) -> list[str]:
    return [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", page, re.S)]


def test_result_cells_are_sentences(tmp_path):
    state = _finished_run(tmp_path / "run")
    page = write_page(state, tmp_path / "run", STEPS).read_text()
    results = _cells(page.split('id="pictures"')[0].split('id="invocations"')[0])[3::4]
    assert len(results) == len(STEPS)
    for text in results:
        assert "{" not in text and "[" not in text and text.endswith("."), text
    assert "10 classes of fashion-mnist images (10000 train, 1000 valid, 1000 test)." in results
    assert "85.7% test accuracy on 1000 images, best validation accuracy 87.0%." in results
    assert "2 Debugger rules evaluated: none fired." in results
    assert "Grad-CAM of demo-all's answer 'Shirt' for 001.T-shirt_top/0000.jpg (wrong: the image is a T-shirt_top)." \
        in results


def test_invocations_are_marked_right_or_wrong(tmp_path):
    state = _finished_run(tmp_path / "run")
    page = write_page(state, tmp_path / "run", STEPS).read_text()
    rows = page.split('id="invocations"')[1].split('id="artifacts"')[0]
    assert "1 of 2 answers right." in rows
    marks = [c for c in _cells(rows) if c.endswith(("right", "wrong"))]
    assert marks == ["\u2717 wrong", "\u2713 right"]


def test_the_time_survives_a_rerun_that_skipped_every_step(tmp_path):
    state = _finished_run(tmp_path / "run")
    assert timing_sentence(state, STEPS) == "10 of 10 steps finished in 145 s"
    state.data["total_seconds"] = 0.4          # the rerun: every step done earlier, skipped
    again = timing_sentence(state, STEPS)
    assert again == "10 of 10 steps finished in 145 s (this run: 0 s; the rest was done earlier)"
    assert again in write_page(state, tmp_path / "run", STEPS).read_text()
