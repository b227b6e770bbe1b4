"""Profiler report: recommendations from a synthetic profile, the full report from a real job,
and the HTML rendered by headless Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from byoc.cli import main as byoc
from byoc.report import (
    NOT_APPLICABLE,
    OK,
    TRIGGERED,
    ProfileDataError,
    build_profiler_report,
    evaluate_all,
    load_profile,
)
from container_train.contract import PHASES, PROFILER_REPORT_FILE, STEP_TIMINGS_FILE, SYSTEM_METRICS_FILE
from tests.helpers.chromium import assert_not_blank, screenshot
from tests.helpers.pipeline_checks import check_phases_cover_the_job


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _profile(out: Path, *, cpu: float, mem: float, data_wait: float, compute: float,
             outlier_steps: int = 0, gpu_util: float | None = None, workers: int | None = None) -> Path:
    """A job output dir with hand-written records in the trainer's schema (contract.py)."""
    t0 = 1_700_000_000.0
    steps, ts = [], t0 + 1
    for epoch in (1, 2):
        for step in range(1, 151):   # 300 steps: enough for 11 outliers to stand out at 3 sigma
            dur = data_wait + compute
            if outlier_steps and epoch == 2 and step <= outlier_steps:
                dur *= 20
            ts += dur
            steps.append({"ts": ts, "epoch": epoch, "step": step, "mode": "TRAIN", "batch_size": 8,
                          "data_wait_s": data_wait, "compute_s": dur - data_wait, "step_s": dur})
    gpus = [] if gpu_util is None else [{"index": 0, "util_percent": gpu_util, "mem_used_mb": 1000,
                                         "mem_total_mb": 16000}]
    system = [{"ts": t0 + 2 * i, "cpu_percent": cpu, "cpu_per_core": [cpu] * 4, "mem_percent": mem,
               "mem_used_mb": 1000.0, "proc_rss_mb": 500.0, "gpu": gpus} for i in range(40)]
    data_dir = out / "output" / "data"
    _write_jsonl(data_dir / STEP_TIMINGS_FILE, steps)
    _write_jsonl(data_dir / SYSTEM_METRICS_FILE, system)
    if workers is not None:
        cfg = out / "input" / "config"
        cfg.mkdir(parents=True)
        (cfg / "hyperparameters.json").write_text(json.dumps({"workers": str(workers)}))
    return data_dir


def _status(checks):
    return {c.rule: c.status for c in checks}


def test_low_utilisation_profile_gets_batch_size_and_loader_recommendations(tmp_path):
    data_dir = _profile(tmp_path, cpu=12, mem=20, data_wait=0.30, compute=0.10, outlier_steps=11, workers=0)
    checks = evaluate_all(load_profile(data_dir))
    status = _status(checks)
    assert status["BatchSize"] == TRIGGERED          # CPU p95 12% < 70, memory 20% < 70
    assert status["IOBottleneck"] == TRIGGERED       # 75% of every step is waiting for data
    assert status["Dataloader"] == TRIGGERED         # 0 workers on 4 cores
    assert status["StepOutlier"] == TRIGGERED        # 11 slow steps > n_outliers=10
    assert status["LowGPUUtilization"] == NOT_APPLICABLE

    html = build_profiler_report(data_dir).read_text()
    recs = html.split('id="recommendations"')[1].split('id="profiler-rules"')[0]
    assert "increase `batch-size`" in recs
    assert "raise `workers`" in recs.lower()
    assert "pin_memory" in recs


def test_busy_profile_triggers_nothing(tmp_path):
    data_dir = _profile(tmp_path, cpu=95, mem=85, data_wait=0.001, compute=0.2, workers=4)
    status = _status(evaluate_all(load_profile(data_dir)))
    assert {s for s in status.values()} <= {OK, NOT_APPLICABLE}
    html = build_profiler_report(data_dir).read_text()
    assert "No rule triggered" in html


def test_gpu_profile_flags_an_idle_gpu(tmp_path):
    data_dir = _profile(tmp_path, cpu=95, mem=50, data_wait=0.01, compute=0.2, gpu_util=5)
    status = _status(evaluate_all(load_profile(data_dir)))
    assert status["LowGPUUtilization"] == TRIGGERED
    assert status["CPUBottleneck"] == TRIGGERED      # CPU > 90% while GPU < 10% all the time


def test_missing_records_are_a_clear_error(tmp_path, capsys):
    with pytest.raises(ProfileDataError, match="no profiler records"):
        build_profiler_report(tmp_path)
    (tmp_path / "output" / "data").mkdir(parents=True)
    assert byoc(["report", "--job-dir", str(tmp_path), "--run-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("byoc report: error: ") and "does not exist" in err and "Traceback" not in err


def _check_report_sections(html: str) -> None:
    for section in ("summary", "recommendations", "phases", "profiler-rules", "utilization", "steps",
                    "dataloading", "epochs", "debugger-rules"):
        assert f'id="{section}"' in html, section
    for rule in ("LowGPUUtilization", "CPUBottleneck", "IOBottleneck", "BatchSize", "StepOutlier",
                 "Dataloader", "LoadBalancing"):
        assert rule in html
    # Self-contained: every image is inline, nothing is fetched.
    images = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert len(images) >= 4 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(https?:)?//', html)


@pytest.mark.slow
def test_report_from_a_real_training_job(healthy_job, tmp_path):
    """`byoc report` on a real job: every rule, then the report that shows their results."""
    assert byoc(["report", "--job-dir", str(healthy_job.job_dir), "--run-dir", str(tmp_path)]) == 0
    path = healthy_job.output_data_dir / PROFILER_REPORT_FILE
    html = path.read_text()
    _check_report_sections(html)
    # The real job's numbers made it in: its training step count, Debugger results, epoch metrics.
    records = (healthy_job.output_data_dir / STEP_TIMINGS_FILE).read_text().splitlines()
    train_steps = sum(json.loads(r)["mode"] == "TRAIN" for r in records)
    assert train_steps > 0
    assert f'<div class="v">{train_steps}</div><div class="k">training steps' in html
    assert "ExplodingTensor" in html.split('id="debugger-rules"')[1]
    assert "valid_loss" in html          # per-epoch metrics from metrics.json
    # Time by phase: the phases cover the trainer process, start to end.
    data = load_profile(healthy_job.output_data_dir)
    seconds = data.phase_seconds()
    assert {"start-up", "data preparation", "model setup", "training", "validation", "artifact save"} <= set(seconds)
    assert list(seconds) == [p for p in PHASES if p in seconds]
    check_phases_cover_the_job(data)
    phases_html = html.split('id="phases"')[1].split('id="profiler-rules"')[0]
    assert all(f"<td>{name}</td>" in phases_html for name in seconds)


@pytest.mark.slow
@pytest.mark.browser
def test_report_renders_in_headless_chromium(healthy_job, tmp_path):
    report = build_profiler_report(healthy_job.output_data_dir, tmp_path / "report.html")
    image = screenshot(report, tmp_path / "profiler-report.png")
    assert image.size == (1280, 2000)
    assert_not_blank(image)
