"""Assemble the profiler report: load records, evaluate the profiler rules, plot, render HTML."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from container_train.contract import PROFILER_REPORT_FILE

from . import plots
from .checks import ProfilerCheck, evaluate_all, step_outliers
from .data import ProfileData, load_profile
from .template import TEMPLATE

# What to do when a Debugger rule fires (SageMaker's report lists the same kind of advice).
DEBUGGER_ADVICE = {
    "ExplodingTensor": "NaN/inf in the tensors: lower `lr`, add gradient clipping or warmup "
                       "(`warmup-epochs`), check the input normalisation.",
    "VanishingGradient": "Gradients vanish: use pretrained weights, a higher `lr`, or unfreeze fewer "
                         "layers; check that the loss is connected to the trained parameters.",
    "LossNotDecreasing": "Loss is not falling: raise `lr` if it is tiny, lower it if the loss rises; "
                         "check labels and that the right layers are trainable (`freeze`).",
    "Overfit": "Validation loss runs away from training loss: add augmentation or `weight-decay`, "
               "`label-smoothing`, freeze more layers, or stop earlier (`early-stopping-patience`).",
    "Overtraining": "Losses stopped improving: train fewer `epochs` or set `early-stopping-patience`.",
    "PoorWeightInitialization": "Start from pretrained weights (`pretrained=true`) or use a standard "
                                "initialisation (Kaiming/Xavier).",
}


def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def _usage_table(data: ProfileData) -> list[dict[str, str]]:
    sysd = data.system
    if sysd.empty:
        return []
    cols = [("machine CPU % (all cores, every process)", "cpu_percent"),
            ("job CPU % (its own processes, same scale)", "proc_cpu_percent"), ("busiest core %", "cpu_core_max"),
            ("system memory %", "mem_percent"), ("job RSS (MB)", "proc_rss_mb")]
    for i in range(data.gpu_count):
        cols += [(f"GPU{i} util %", f"gpu{i}_util"), (f"GPU{i} memory %", f"gpu{i}_mem_percent")]
    rows = []
    for label, col in cols:
        if col not in sysd or sysd[col].dropna().empty:
            continue
        v = sysd[col].dropna().astype(float)
        p5, p50, p95 = np.percentile(v, [5, 50, 95])
        rows.append({"metric": label, "p5": _fmt(p5, 1), "p50": _fmt(p50, 1), "p95": _fmt(p95, 1),
                     "max": _fmt(v.max(), 1)})
    return rows


def _phase_table(data: ProfileData) -> list[dict[str, str]]:
    seconds = data.phase_seconds()
    total = sum(seconds.values())
    return [{"phase": name, "seconds": _fmt(value, 2), "share": f"{100 * value / total:.1f}%"}
            for name, value in seconds.items()]


def _step_table(data: ProfileData) -> list[dict[str, Any]]:
    rows = []
    for mode, g in data.steps.groupby("mode") if not data.steps.empty else []:
        s = g["step_s"]
        rows.append({"mode": mode, "steps": len(g), "mean": _fmt(s.mean()), "p50": _fmt(s.median()),
                     "p95": _fmt(s.quantile(0.95)), "max": _fmt(s.max()),
                     "outliers": int(step_outliers(s).sum())})
    return rows


def per_epoch_summary(data: ProfileData) -> pd.DataFrame:
    """One row per epoch: steps, time, data-wait share, throughput (training steps only)."""
    if data.steps.empty:
        return pd.DataFrame()
    train = data.steps[data.steps["mode"] == "TRAIN"]
    if train.empty:
        return pd.DataFrame()
    g = train.groupby("epoch")
    out = pd.DataFrame({
        "epoch": g.size().index,
        "train_steps": g.size().values,
        "train_time_s": g["step_s"].sum().values,
        "mean_step_s": g["step_s"].mean().values,
        "data_wait_share": (g["data_wait_s"].sum() / g["step_s"].sum().clip(lower=1e-9)).values,
        "images_per_s": (g["batch_size"].sum() / g["step_s"].sum().clip(lower=1e-9)).values,
    })
    return out


def _epoch_rows(per_epoch: pd.DataFrame, metrics: dict) -> tuple[list[str], list[dict[str, str]]]:
    history = {int(h["epoch"]): h for h in metrics.get("history", []) if isinstance(h, dict) and "epoch" in h}
    if per_epoch.empty and not history:
        return [], []
    epochs = sorted(set(per_epoch["epoch"].astype(int)) if not per_epoch.empty else set()) or sorted(history)
    extra = sorted({k for h in history.values() for k, v in h.items()
                    if k != "epoch" and isinstance(v, int | float)})
    headers = ["epoch", "train steps", "train time (s)", "mean step (s)", "data wait", "images/s", *extra]
    rows = []
    by_epoch = {int(r.epoch): r for r in per_epoch.itertuples()} if not per_epoch.empty else {}
    for e in sorted(set(epochs) | set(history)):
        r = by_epoch.get(e)
        row = {"epoch": str(e),
               "train steps": str(r.train_steps) if r else "",
               "train time (s)": _fmt(r.train_time_s, 2) if r else "",
               "mean step (s)": _fmt(r.mean_step_s) if r else "",
               "data wait": f"{r.data_wait_share * 100:.0f}%" if r else "",
               "images/s": _fmt(r.images_per_s, 1) if r else ""}
        for k in extra:
            v = history.get(e, {}).get(k)
            row[k] = _fmt(float(v), 4) if isinstance(v, int | float) else ""
        rows.append(row)
    return headers, rows


NOT_EVALUATED, PARTLY_EVALUATED = "Not evaluated", "No issues in the checks that ran"


def shown_rule_status(result: dict) -> str:
    """What the report shows for a Debugger rule: its status, except that "no issues" is only green
    when something was checked. A rule that evaluated no step is "Not evaluated"; one whose notes
    say some of its checks were skipped (no tensors for them) says so instead of a plain OK."""
    status = result.get("status", "")
    if status != "NoIssuesFound":
        return status
    if not result.get("steps_evaluated"):
        return NOT_EVALUATED
    if any("skipped" in note for note in result.get("notes") or []):
        return PARTLY_EVALUATED
    return status


def recommendations(checks: list[ProfilerCheck], rule_results: list[dict]) -> list[dict[str, str]]:
    recs = [{"source": c.rule, "text": f"{c.finding} {c.recommendation}"} for c in checks if c.triggered]
    for r in rule_results:
        if r.get("status") == "IssuesFound":
            advice = DEBUGGER_ADVICE.get(r.get("rule", ""), "")
            recs.append({"source": f"Debugger {r.get('rule')}", "text": f"{r.get('message', '')}. {advice}"})
    return recs


def _cards(data: ProfileData, checks: list[ProfilerCheck]) -> list[dict[str, str]]:
    steps = data.steps
    cards = []
    wall = data.wall_seconds()
    if wall is not None:
        cards.append({"label": "job wall time (all phases)", "value": f"{wall:.1f}s"})
    cards.append({"label": "system samples", "value": str(len(data.system))})
    if not steps.empty:
        cards.append({"label": "training steps", "value": str(int((steps["mode"] == "TRAIN").sum()))})
        cards.append({"label": "epochs", "value": str(int(steps["epoch"].nunique()))})
    cards.append({"label": "CPU cores / GPUs", "value": f"{data.cpu_count} / {data.gpu_count}"})
    cards.append({"label": "profiler rules triggered", "value": str(sum(c.triggered for c in checks))})
    issues = sum(r.get("status") == "IssuesFound" for r in data.rule_results)
    unchecked = sum(shown_rule_status(r) == NOT_EVALUATED for r in data.rule_results)
    cards.append({"label": "Debugger rules with issues" + (f" ({unchecked} not evaluated)" if unchecked else ""),
                  "value": f"{issues} of {len(data.rule_results)}"})
    return cards


def render_report(data: ProfileData) -> str:
    checks = evaluate_all(data)
    per_epoch = per_epoch_summary(data)
    headers, epoch_rows = _epoch_rows(per_epoch, data.metrics)
    loading = data.loading_steps()
    share = f"{plots.wait_shares(loading)[2]:.1f}%" if not loading.empty else "n/a (no step read the dataset)"
    loading_what = "feature-extraction batches" if data.metrics.get("feature_cache") else "training steps"
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(TEMPLATE).render(
        job_name=data.output_data_dir.name,
        output_dir=str(data.output_data_dir),
        generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cards=_cards(data, checks),
        recommendations=recommendations(checks, data.rule_results),
        checks=checks,
        plots={
            "phases": plots.time_by_phase(data),
            "utilization": plots.utilization_over_time(data),
            "histogram": plots.step_duration_histogram(data),
            "timeline": plots.step_durations_over_time(data),
            "data_wait": plots.data_wait_share(loading, loading_what),
        },
        usage_table=_usage_table(data),
        step_table=_step_table(data),
        data_wait_share=share,
        loading_what=loading_what,
        phase_table=_phase_table(data),
        epoch_headers=headers,
        epoch_table=epoch_rows,
        rule_results=[{"step": None, "mode": None, "mode_step": None, "notes": [], "parameters": {},
                       "message": "", **r, "shown": shown_rule_status(r)} for r in data.rule_results],
        skipped_lines=data.skipped_lines,
    )


def build_profiler_report(output_data_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """Write the self-contained HTML report for a job; default path
    ``<output-data>/profiler-report.html`` (``contract.PROFILER_REPORT_FILE``)."""
    data = load_profile(output_data_dir)
    target = Path(out_path) if out_path is not None else Path(output_data_dir) / PROFILER_REPORT_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_report(data), encoding="utf-8")
    return target
