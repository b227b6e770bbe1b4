"""`byoc pipeline` with the demo profile (what `make pipeline` runs), from an empty folder: the
results a new user is shown must be worth trusting and looking at.

* No Debugger rule fires on the demo's healthy run (the purpose-built bad runs that make each rule
  fire are in tests/rules).
* The profiler report sees the whole job: phases one after another from start-up to the artifact save
  and at least 20 system samples.
* The demo model is worth showing: the test accuracy is printed with the summary, and reaches the
  demo's bar (``DEMO_TEST_ACCURACY``).
* Headless Chromium screenshots of the pipeline page, the profiler report and the Grad-CAM figure
  (kept under ``$BYOC_SCREENSHOT_DIR`` when set, to look at).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from byoc.pipeline.page import PAGE_FILE
from byoc.report import load_profile
from byoc.rules import NO_ISSUES_FOUND
from container_train.contract import STEP_TIMINGS_FILE
from tests.helpers.chromium import assert_not_blank, screenshot
from tests.helpers.pipeline_checks import check_phases_cover_the_job

BYOC = Path(sys.executable).with_name("byoc")
DEMO_TEST_ACCURACY = 0.85
pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([str(BYOC), "pipeline", "--run-dir", "run"], cwd=cwd, capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    state = json.loads((cwd / "run" / "state.json").read_text())
    return cwd, proc.stdout, {name: step["outputs"] for name, step in state["steps"].items()}


def test_no_debugger_rule_fires_on_the_healthy_demo(demo_run):
    _, _, outputs = demo_run
    statuses = outputs["report"]["rules"]
    assert len(statuses) == 6
    fired = {rule: status for rule, status in statuses.items() if status != NO_ISSUES_FOUND}
    assert fired == {}, fired


def test_the_profiler_report_sees_the_whole_job(demo_run):
    cwd, _, outputs = demo_run
    data = load_profile(cwd / outputs["train"]["job_dir"] / "output" / "data")
    seconds = data.phase_seconds()
    assert {"start-up", "feature extraction", "training", "validation", "test", "artifact save"} <= set(seconds)
    check_phases_cover_the_job(data)
    # The sampler runs from the end of start-up to the job's end, every MIN_SAMPLE_INTERVAL_S (0.25 s) at
    # first: at least one sample a second of that span (4x slack for a busy machine), and never fewer than
    # 5, so the utilisation chart is a line. (The demo's job is ~6 s now; it was 20 samples' worth once.)
    after_start = data.phases[data.phases["phase"] != "start-up"]
    span = (after_start["start"] + after_start["seconds"]).max() - after_start["start"].min()
    assert len(data.system) >= max(5, int(span)), (len(data.system), span)
    # The feature extraction is profiled batch by batch where it ran: in this job, or in the job that
    # filled the cache this job then read (the tuning's extraction job, run once before the trials).
    jobs = [cwd / outputs["train"]["job_dir"], cwd / outputs["tune"]["extraction_job"]]
    extracting = [job for job in jobs if _has_extract_steps(job / "output" / "data" / STEP_TIMINGS_FILE)]
    assert extracting, "no job profiled its feature extraction"
    if jobs[0] not in extracting:
        assert "feature cache: hit" in (cwd / outputs["train"]["log"]).read_text()


def _has_extract_steps(path: Path) -> bool:
    return path.is_file() and any(json.loads(line)["mode"] == "EXTRACT" for line in path.read_text().splitlines())


def test_the_backbone_runs_once_per_image(demo_run):
    """Issue 25: the features are extracted once before the trials (no trial waits for another's), and
    the second model, on a subset of the same images, reuses them instead of running the backbone again."""
    cwd, _, outputs = demo_run
    board = json.loads((cwd / outputs["tune"]["out_dir"] / "leaderboard.json").read_text())["trials"]
    assert board and all(t["waiting_s"] == 0 and t["extraction_s"] == 0 for t in board), board
    second = (cwd / outputs["train_second"]["log"]).read_text()
    assert second.count("feature cache: reused") == 3 and "computing 0" in second
    assert "[extract]" not in second


def test_the_demo_model_is_worth_showing(demo_run):
    _, stdout, outputs = demo_run
    accuracy = outputs["train"]["test"]["accuracy"]
    shown = re.search(r"test accuracy of the main model: ([0-9.]+)% on (\d+) images", stdout)
    assert shown and float(shown.group(1)) == pytest.approx(100 * accuracy, abs=0.05)
    assert int(shown.group(2)) == outputs["train"]["test"]["images"] == 1000
    print(f"\ndemo test accuracy: {accuracy:.3f}")
    assert accuracy >= DEMO_TEST_ACCURACY


def test_screenshots_of_the_page_the_report_and_the_gradcam_figure(demo_run, tmp_path):
    cwd, _, outputs = demo_run
    page = screenshot(cwd / "run" / PAGE_FILE, tmp_path / "pipeline-index.png", height=2400)
    assert_not_blank(page)
    report = screenshot(cwd / outputs["report"]["profiler_report"], tmp_path / "profiler-report.png", height=3000)
    assert_not_blank(report)
    from PIL import Image

    figure = cwd / outputs["explain"]["png"]
    width, height = Image.open(figure).size
    assert width >= 600 and height >= 200, (width, height)     # readable, not a thumbnail
    shot = screenshot(figure, tmp_path / "gradcam-figure.png", width=width + 40, height=height + 40)
    assert_not_blank(shot, dark_share=0.02)
