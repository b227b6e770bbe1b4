"""Where a trial's time went: waiting for another job's work, extracting features, training, the rest.

Read from the trial job's own phase records (``container_train.contract.PHASES_FILE``, written by the
trainer; every second of the job is in one phase: a ``waiting`` record's seconds are not also in the
``feature extraction`` record it happened in). A trial that
spends most of its time waiting or extracting is what issue 25 found (trial 1 idle 61 s while trial 0
ran the backbone); the tuning report shows the split for every trial so that stays visible.
"""

from __future__ import annotations

from pathlib import Path

from byoc_common.sagemaker_paths import OUTPUT_DATA_DIR
from container_train.contract import PHASES_FILE, read_json_lines

# leaderboard column -> the phases it sums (waiting is taken out of the extraction it lies in)
SPLIT_COLUMNS = ("waiting_s", "extraction_s", "training_s", "other_s")
_TRAINING_PHASES = ("training", "validation", "checkpoint", "test")


def phase_seconds(job_dir: str | Path) -> dict[str, float]:
    """Seconds by phase name of the job in ``job_dir`` (empty when it wrote no records)."""
    records, _ = read_json_lines(Path(job_dir) / OUTPUT_DATA_DIR / PHASES_FILE)
    totals: dict[str, float] = {}
    for record in records:
        if isinstance(record.get("phase"), str) and isinstance(record.get("seconds"), int | float):
            totals[record["phase"]] = totals.get(record["phase"], 0.0) + float(record["seconds"])
    return totals


def split(job_dir: str | Path, duration_s: float | None) -> dict[str, float | None]:
    """``SPLIT_COLUMNS`` for one trial: ``other_s`` is the trial's duration (as the tuner timed it, process
    or container start included) less the three named parts. All None when the job left no records."""
    phases = phase_seconds(job_dir) if job_dir else {}
    if not phases:
        return dict.fromkeys(SPLIT_COLUMNS)
    waiting = phases.get("waiting", 0.0)
    extraction = phases.get("feature extraction", 0.0)
    training = sum(phases.get(p, 0.0) for p in _TRAINING_PHASES)
    other = None if duration_s is None else max(0.0, duration_s - waiting - extraction - training)
    return {"waiting_s": round(waiting, 1), "extraction_s": round(extraction, 1), "training_s": round(training, 1),
            "other_s": None if other is None else round(other, 1)}


def figure(rows: list[dict], path: Path) -> Path | None:
    """One horizontal bar per trial (leaderboard rows with a split), stacked waiting / extraction /
    training / other; None when no trial has a split to draw."""
    import matplotlib.pyplot as plt

    timed = sorted((r for r in rows if r.get("training_s") is not None), key=lambda r: r["trial"])
    if not timed:
        return None
    colours = {"waiting_s": "#b42318", "extraction_s": "#f79009", "training_s": "#1f77b4", "other_s": "#98a2b3"}
    fig, ax = plt.subplots(figsize=(7, 1.4 + 0.35 * len(timed)))
    labels = [f"trial {r['trial']}" for r in timed]
    left = [0.0] * len(timed)
    for column, colour in colours.items():
        widths = [r.get(column) or 0.0 for r in timed]
        ax.barh(labels, widths, left=left, color=colour, label=column.removesuffix("_s"))
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("seconds (other: the job's start, imports, reading its channels, saving)")
    ax.set_title("Where each trial's time went")
    ax.legend(fontsize=8, ncols=4, loc="lower center", bbox_to_anchor=(0.5, 1.12), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
