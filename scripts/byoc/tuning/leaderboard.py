"""The tuning leaderboard: every trial ranked by the objective, as a table, CSV, JSON.

Order: completed trials by objective (best first), then pruned trials (by their last reported
value), then failed and interrupted ones. Surplus trials (asked by a tuner that lost the study's last
slot to another one, :mod:`byoc.tuning.budget`; no job ran for them) are left out. Files written to the tuning output dir:

* ``leaderboard.csv`` / ``leaderboard.json``: one row per trial (``rank`` is 1-based);
* ``best_hyperparameters.json``: the full hyperparameter set of the best trial (static + tuned),
  ready for a final training job, plus the objective value and where its job ran (schema:
  :mod:`byoc.tuning.best`).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from byoc.tuning import trial_time
from byoc.tuning.best import write_best_hyperparameters
from byoc.tuning.budget import INTERRUPTED_ATTR, SURPLUS_ATTR
from byoc.tuning.spec import TuningSpec, trial_hyperparameters

LEADERBOARD_CSV = "leaderboard.csv"
LEADERBOARD_JSON = "leaderboard.json"

_STATUS_ORDER = {"complete": 0, "pruned": 1, "failed": 2, "interrupted": 3, "running": 4, "waiting": 5}


def trial_status(t: optuna.trial.FrozenTrial) -> str:
    if t.state == TrialState.FAIL and SURPLUS_ATTR in t.user_attrs:
        return "surplus"
    if t.state == TrialState.FAIL and t.user_attrs.get(INTERRUPTED_ATTR):
        return "interrupted"
    return {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
            TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}[t.state]


def _value(t: optuna.trial.FrozenTrial) -> float | None:
    if t.state == TrialState.COMPLETE:
        return t.value
    if t.intermediate_values:
        return t.intermediate_values[max(t.intermediate_values)]
    return None


def rows(study: optuna.Study, spec: TuningSpec) -> list[dict[str, Any]]:
    """One dict per trial, ranked."""
    sign = -1 if spec.objective.maximize else 1
    out = []
    for t in study.get_trials(deepcopy=False):
        if trial_status(t) == "surplus":
            continue
        value = _value(t)
        row: dict[str, Any] = {
            "trial": t.number,
            "status": trial_status(t),
            "objective": spec.objective.metric,
            "value": value,
            "epochs_reported": len(t.intermediate_values),
            **{p.name: t.params.get(p.name) for p in spec.parameters},
            "duration_s": round(t.user_attrs["duration_s"], 1) if "duration_s" in t.user_attrs else None,
            **trial_time.split(t.user_attrs.get("job_dir", ""), t.user_attrs.get("duration_s")),
            "job_dir": t.user_attrs.get("job_dir", ""),
            "failure_reason": t.user_attrs.get("failure_reason", ""),
        }
        out.append(row)
    out.sort(key=lambda r: (_STATUS_ORDER[r["status"]],
                            sign * r["value"] if r["value"] is not None and math.isfinite(r["value"]) else math.inf,
                            r["trial"]))
    for i, r in enumerate(out, 1):
        r["rank"] = i
    return [{"rank": r.pop("rank"), **r} for r in out]


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:            # no completed trial
        return None


def write(study: optuna.Study, spec: TuningSpec, out_dir: Path) -> dict[str, Path]:
    """Write the leaderboard files and best_hyperparameters.json; returns their paths."""
    out_dir = Path(out_dir)
    table = rows(study, spec)
    paths = {"csv": out_dir / LEADERBOARD_CSV, "json": out_dir / LEADERBOARD_JSON}
    columns = list(table[0]) if table else ["rank", "trial", "status", "objective", "value"]
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table)
    paths["json"].write_text(json.dumps({
        "objective": {"metric": spec.objective.metric, "direction": spec.objective.direction},
        "strategy": spec.strategy,
        "trials": table,
    }, indent=2))
    best = best_trial(study)
    if best is not None:
        paths["best"] = write_best_hyperparameters(
            out_dir, metric=spec.objective.metric, direction=spec.objective.direction, value=best.value,
            hyperparameters=trial_hyperparameters(spec, best.params), tuned=best.params, trial=best.number,
            job_dir=best.user_attrs.get("job_dir"))
    return paths


def render(table: list[dict[str, Any]], spec: TuningSpec, console=None, limit: int | None = None) -> None:
    """Print the leaderboard as a rich table."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    title = f"Tuning leaderboard: {spec.objective.metric} ({spec.objective.direction.lower()})"
    t = Table(title=title)
    for col in ("rank", "trial", "status", "value", *[p.name for p in spec.parameters], "epochs", "time"):
        t.add_column(col, justify="right" if col not in ("status",) else "left")
    t.add_column("note", overflow="fold", max_width=50)
    style = {"complete": "", "pruned": "yellow", "failed": "red", "interrupted": "magenta"}
    for r in table[:limit]:
        value = "" if r["value"] is None else f"{r['value']:.4f}"
        t.add_row(str(r["rank"]), str(r["trial"]), r["status"], value,
                  *[_fmt(r[p.name]) for p in spec.parameters], str(r["epochs_reported"]),
                  "" if r["duration_s"] is None else f"{r['duration_s']:.0f}s",
                  r["failure_reason"][:200], style=style.get(r["status"], ""))
    console.print(t)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
