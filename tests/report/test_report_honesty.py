"""What the profiler report claims matches what it measured (issue 25): BatchSize reads the job's own
CPU on a machine busy with other work, a Debugger rule that checked nothing is "Not evaluated" (never
green), and the data-loading text and chart are about the same steps."""

from __future__ import annotations

import json
import re

from byoc.report import OK, TRIGGERED, build_profiler_report, evaluate_all, load_profile, plots
from container_train.contract import METRICS_FILE, RULE_RESULTS_FILE
from tests.report.test_report import _profile, _write_jsonl


def _with_job_cpu(data_dir, job_cpu: float) -> None:
    path = data_dir / "profiler" / "system_metrics.jsonl"
    if not path.exists():
        path = next(data_dir.rglob("system_metrics.jsonl"))
    records = [json.loads(line) for line in path.read_text().splitlines()]
    _write_jsonl(path, [{**r, "proc_cpu_percent": job_cpu} for r in records])


def _check(data_dir, rule):
    return next(c for c in evaluate_all(load_profile(data_dir)) if c.rule == rule)


def test_batch_size_reads_the_jobs_cpu_not_the_machines(tmp_path):
    """The machine is 95% busy (other people's work), the job's processes use 8%: the batch is too small."""
    data_dir = _profile(tmp_path / "shared", cpu=95, mem=20, data_wait=0.001, compute=0.2, workers=4)
    assert _check(data_dir, "BatchSize").status == OK              # without the job's figure: fooled
    _with_job_cpu(data_dir, 8.0)
    check = _check(data_dir, "BatchSize")
    assert check.status == TRIGGERED and "CPU 8%" in check.finding and "job's own processes" in check.basis
    html = build_profiler_report(data_dir).read_text()
    usage = html.split('id="utilization"')[1].split('id="steps"')[0]
    assert re.search(r"<td>job CPU % \(its own processes, same scale\)</td><td>8\.0</td>", usage)
    assert re.search(r"<td>machine CPU % \(all cores, every process\)</td><td>95\.0</td>", usage)


def _rules(data_dir, *results) -> None:
    path = data_dir / RULE_RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rules": list(results)}))


def test_a_debugger_rule_that_checked_nothing_is_not_evaluated(tmp_path):
    data_dir = _profile(tmp_path, cpu=95, mem=85, data_wait=0.001, compute=0.2, workers=4)
    _rules(data_dir,
           {"rule": "Overfit", "status": "NoIssuesFound", "parameters": {}, "steps_evaluated": 0,
            "message": "No issues found in 0 evaluated step(s)"},
           {"rule": "PoorWeightInitialization", "status": "NoIssuesFound", "parameters": {}, "steps_evaluated": 4,
            "notes": ["activation-variance check skipped: no tensors match ['.*relu_input']"]},
           {"rule": "ExplodingTensor", "status": "NoIssuesFound", "parameters": {}, "steps_evaluated": 9})
    html = build_profiler_report(data_dir).read_text()
    table = html.split('id="debugger-rules"')[1]
    rows = {m[0]: (m[1], m[2]) for m in re.findall(r'<tr><td>(\w+)</td><td class="status (\w*)">([^<]+)</td>', table)}
    assert rows["Overfit"] == ("Notevaluated", "Not evaluated")
    assert rows["PoorWeightInitialization"] == ("Noissuesinthechecksthatran", "No issues in the checks that ran")
    assert rows["ExplodingTensor"] == ("NoIssuesFound", "NoIssuesFound")        # green only when it checked
    assert "Debugger rules with issues (1 not evaluated)" in html


def test_data_loading_text_and_chart_are_about_the_extraction_when_the_head_trained_on_cached_features(tmp_path):
    data_dir = _profile(tmp_path, cpu=50, mem=50, data_wait=0.0, compute=0.2, workers=4)
    steps_file = next(data_dir.rglob("step_timings.jsonl"))
    train = [json.loads(line) for line in steps_file.read_text().splitlines()]
    extract = [{"ts": 1_699_999_000.0 + i, "epoch": 0, "step": i, "mode": "EXTRACT", "batch_size": 32,
                "data_wait_s": 0.3, "compute_s": 0.1, "step_s": 0.4} for i in range(40)]
    _write_jsonl(steps_file, extract + train)
    (data_dir / METRICS_FILE).write_text(json.dumps({"feature_cache": {"hits": 0}}))
    html = build_profiler_report(data_dir).read_text()
    loading = html.split('id="dataloading"')[1].split('id="epochs"')[0]
    assert "feature-extraction batches spent waiting for the next batch: <b>75.0%</b>" in loading
    assert "alt=\"share of the feature-extraction batches' time spent waiting for data\"" in html.replace("&#39;", "'")
    labels, shares, overall = plots.wait_shares(load_profile(data_dir).loading_steps())   # what the chart draws
    assert overall == 75.0 and shares == [75.0] * 10 and labels[0] == "1-4"
