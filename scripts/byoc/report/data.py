"""Read what a training job left in its output data dir for the profiler report.

Files and record fields are defined in :mod:`container_train.contract`:

* ``profiler/step_timings.jsonl`` -> :attr:`ProfileData.steps` (one row per TRAIN/EVAL step)
* ``profiler/system_metrics.jsonl`` -> :attr:`ProfileData.system` (one row per sample, GPUs
  flattened to ``gpu<i>_util`` / ``gpu<i>_mem_percent`` columns)
* ``profiler/phases.jsonl`` -> :attr:`ProfileData.phases` (one row per timed interval of a phase)
* ``rules/rule_results.json`` -> :attr:`ProfileData.rule_results` (Debugger rules, may be absent)
* ``metrics.json`` -> :attr:`ProfileData.metrics` (per-epoch history, may be absent)
* ``<base>/input/config/hyperparameters.json`` -> :attr:`ProfileData.hyperparameters` when the
  output data dir sits in a SageMaker-style tree (``<base>/output/data``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from byoc.errors import ByocError
from container_train.contract import (
    METRICS_FILE,
    PHASES,
    PHASES_FILE,
    RULE_RESULTS_FILE,
    STEP_TIMINGS_FILE,
    SYSTEM_METRICS_FILE,
    read_json_lines,
)


class ProfileDataError(ByocError, FileNotFoundError):
    """The output data dir has no profiler records to report on."""


@dataclass
class ProfileData:
    output_data_dir: Path
    steps: pd.DataFrame
    system: pd.DataFrame
    gpu_count: int
    cpu_count: int
    phases: pd.DataFrame = field(default_factory=pd.DataFrame)
    rule_results: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, str] = field(default_factory=dict)
    skipped_lines: int = 0

    @property
    def has_gpu(self) -> bool:
        return self.gpu_count > 0

    def phase_seconds(self) -> dict[str, float]:
        """Seconds per phase, in the trainer's order (``contract.PHASES``), phases that ran only."""
        if self.phases.empty:
            return {}
        totals = self.phases.groupby("phase")["seconds"].sum()
        return {name: float(totals[name]) for name in PHASES if name in totals}

    def wall_seconds(self) -> float | None:
        """The trainer process's wall time: from the start of its first phase to the end of its last."""
        if self.phases.empty:
            return None
        return float((self.phases["start"] + self.phases["seconds"]).max() - self.phases["start"].min())

    def loading_steps(self) -> pd.DataFrame:
        """The steps that read the dataset: feature extraction (``EXTRACT``) when the job trained
        on cached features, else its training steps."""
        if self.steps.empty:
            return self.steps
        mode = "EXTRACT" if self.metrics.get("feature_cache") else "TRAIN"
        return self.steps[self.steps["mode"] == mode]


def _flatten_system(records: list[dict]) -> tuple[pd.DataFrame, int]:
    rows, gpu_count = [], 0
    for r in records:
        row = {k: v for k, v in r.items() if k not in ("gpu", "cpu_per_core")}
        per_core = r.get("cpu_per_core") or []
        row["cores"] = len(per_core)
        row["cpu_core_max"] = max(per_core) if per_core else None
        for g in r.get("gpu") or []:
            i = int(g.get("index", 0))
            gpu_count = max(gpu_count, i + 1)
            row[f"gpu{i}_util"] = g.get("util_percent")
            total = g.get("mem_total_mb") or 0
            row[f"gpu{i}_mem_percent"] = 100.0 * g.get("mem_used_mb", 0) / total if total else None
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values("ts").reset_index(drop=True)
    return df, gpu_count


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def load_profile(output_data_dir: str | Path) -> ProfileData:
    out = Path(output_data_dir)
    step_records, bad1 = read_json_lines(out / STEP_TIMINGS_FILE)
    system_records, bad2 = read_json_lines(out / SYSTEM_METRICS_FILE)
    if not step_records and not system_records:
        raise ProfileDataError(
            f"no profiler records in {out} (expected {STEP_TIMINGS_FILE} and {SYSTEM_METRICS_FILE}); "
            "is this a training job's output data dir?"
        )
    steps = pd.DataFrame(step_records)
    if not steps.empty:
        steps = steps.sort_values("ts").reset_index(drop=True)
    system, gpu_count = _flatten_system(system_records)
    phase_records, bad3 = read_json_lines(out / PHASES_FILE)
    cores = int(system["cores"].max()) if not system.empty and system["cores"].max() else (os.cpu_count() or 1)

    rules = _read_json(out / RULE_RESULTS_FILE) or {}
    metrics = _read_json(out / METRICS_FILE) or {}
    hp_file = out.parent.parent / "input" / "config" / "hyperparameters.json"
    hyperparameters = _read_json(hp_file) or {}
    return ProfileData(
        output_data_dir=out, steps=steps, system=system, gpu_count=gpu_count, cpu_count=cores,
        phases=pd.DataFrame(phase_records),
        rule_results=list(rules.get("rules", [])), metrics=metrics if isinstance(metrics, dict) else {},
        hyperparameters={k: str(v) for k, v in hyperparameters.items()} if isinstance(hyperparameters, dict) else {},
        skipped_lines=bad1 + bad2 + bad3,
    )
