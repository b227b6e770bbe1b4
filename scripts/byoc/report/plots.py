"""The report's figures, rendered with matplotlib (Agg) and returned as ``data:image/png`` URIs
so the HTML file needs nothing beside itself."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import pandas as pd  # noqa: E402

from container_train.contract import PHASES  # noqa: E402

from .checks import step_outliers  # noqa: E402
from .data import ProfileData  # noqa: E402

_MODE_COLORS = {"TRAIN": "#1f77b4", "EVAL": "#ff7f0e", "EXTRACT": "#2ca02c"}
_PHASE_COLORS = dict(zip(PHASES, plt.get_cmap("tab10").colors, strict=False))


def _to_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def utilization_over_time(data: ProfileData) -> str | None:
    """CPU, memory (and each GPU's utilisation and memory) against seconds since start."""
    sysd = data.system
    if sysd.empty:
        return None
    t = sysd["ts"] - sysd["ts"].iloc[0]
    rows = 2 if data.has_gpu else 1
    fig, axes = plt.subplots(rows, 1, figsize=(10, 3.2 * rows), sharex=True, squeeze=False)
    ax = axes[0][0]
    ax.plot(t, sysd["cpu_percent"], label="CPU (all cores, whole machine)")
    if "proc_cpu_percent" in sysd and sysd["proc_cpu_percent"].notna().any():
        ax.plot(t, sysd["proc_cpu_percent"], label="CPU of the job's processes", color="black", linewidth=1.2)
    if sysd["cpu_core_max"].notna().any():
        ax.plot(t, sysd["cpu_core_max"], label="busiest core", alpha=0.5, linestyle="--")
    ax.plot(t, sysd["mem_percent"], label="system memory")
    _shade_phases(ax, data, origin=float(sysd["ts"].iloc[0]))
    ax.set_ylim(0, 105)
    ax.set_ylabel("%")
    ax.set_title(f"CPU and memory utilisation ({len(sysd)} samples); shaded: the job's phases")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    if data.has_gpu:
        ax = axes[1][0]
        for i in range(data.gpu_count):
            if f"gpu{i}_util" in sysd:
                ax.plot(t, sysd[f"gpu{i}_util"], label=f"GPU{i} util")
            if f"gpu{i}_mem_percent" in sysd:
                ax.plot(t, sysd[f"gpu{i}_mem_percent"], label=f"GPU{i} memory", linestyle="--")
        ax.set_ylim(0, 105)
        ax.set_ylabel("%")
        ax.set_title("GPU utilisation and memory")
        ax.legend(loc="upper right", fontsize=8)
    axes[-1][0].set_xlabel("seconds since the first sample")
    return _to_data_uri(fig)


def _shade_phases(ax, data: ProfileData, origin: float) -> None:
    """Each phase interval as a tinted band behind the curves, one legend entry per phase."""
    labelled = set()
    for row in data.phases.itertuples() if not data.phases.empty else []:
        label = None if row.phase in labelled else row.phase
        labelled.add(row.phase)
        ax.axvspan(row.start - origin, row.start - origin + row.seconds, color=_PHASE_COLORS.get(row.phase, "#ccc"),
                   alpha=0.15, lw=0, label=label)


def time_by_phase(data: ProfileData) -> str | None:
    """Seconds per phase as horizontal bars, each labelled with its share of the wall time."""
    seconds = data.phase_seconds()
    if not seconds:
        return None
    total = sum(seconds.values())
    names = list(seconds)[::-1]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(names) + 1.0))
    ax.barh(names, [seconds[n] for n in names], color=[_PHASE_COLORS.get(n) for n in names])
    for i, n in enumerate(names):
        ax.text(seconds[n], i, f" {seconds[n]:.1f}s ({100 * seconds[n] / total:.0f}%)", va="center", fontsize=9)
    ax.set_xlim(0, max(seconds.values()) * 1.25)
    ax.set_xlabel("seconds")
    ax.set_title(f"Time by phase ({total:.1f}s in all)")
    return _to_data_uri(fig)


def step_duration_histogram(data: ProfileData) -> str | None:
    if data.steps.empty:
        return None
    fig, ax = plt.subplots(figsize=(10, 3.2))
    for mode, group in data.steps.groupby("mode"):
        ax.hist(group["step_s"], bins=30, alpha=0.6, label=f"{mode} ({len(group)} steps)",
                color=_MODE_COLORS.get(mode))
    ax.set_xlabel("step duration (s)")
    ax.set_ylabel("steps")
    ax.set_title("Step duration histogram")
    ax.legend(fontsize=8)
    return _to_data_uri(fig)


def step_durations_over_time(data: ProfileData) -> str | None:
    """Each step's duration split into data wait and compute, outliers marked."""
    if data.steps.empty:
        return None
    steps = data.steps
    fig, ax = plt.subplots(figsize=(10, 3.2))
    idx = range(len(steps))
    ax.bar(idx, steps["compute_s"], width=1.0, label="compute", color="#1f77b4")
    ax.bar(idx, steps["data_wait_s"], width=1.0, bottom=steps["compute_s"], label="data wait", color="#d62728")
    outliers = pd.Series(False, index=steps.index)
    for _, group in steps.groupby("mode"):
        outliers |= step_outliers(group["step_s"]).reindex(steps.index, fill_value=False)
    if outliers.any():
        pos = [i for i, flag in zip(idx, outliers, strict=True) if flag]
        ax.scatter(pos, steps.loc[outliers, "step_s"] * 1.05, marker="v", color="black", label="outlier", zorder=3)
    ax.set_xlabel("step (in order, TRAIN and EVAL)")
    ax.set_ylabel("seconds")
    ax.set_title("Step time: compute vs waiting for data")
    ax.legend(fontsize=8)
    return _to_data_uri(fig)


def wait_shares(loading: pd.DataFrame) -> tuple[list[str], list[float], float]:
    """Bar labels, the share (%) of step time spent waiting for data per bar, and over all of
    ``loading``: per epoch for training steps, ten consecutive groups of an extraction's batches."""
    if (loading["mode"] == "TRAIN").all():
        groups = loading.groupby("epoch")
        labels = [f"epoch {e}" for e in groups.groups]
    else:
        chunk = max(1, -(-len(loading) // 10))
        groups = loading.groupby(pd.RangeIndex(len(loading)) // chunk)
        labels = [f"{i * chunk + 1}-{min((i + 1) * chunk, len(loading))}" for i in groups.groups]
    shares = [100 * g["data_wait_s"].sum() / max(g["step_s"].sum(), 1e-9) for _, g in groups]
    return labels, shares, 100 * loading["data_wait_s"].sum() / max(loading["step_s"].sum(), 1e-9)


def data_wait_share(loading: pd.DataFrame, what: str) -> str | None:
    """The share of the steps that read the dataset (``ProfileData.loading_steps``: the training
    steps, or the feature extraction's batches) spent waiting for data, with the overall share the
    report's text gives as a line: the text and the chart show the same steps and the same number."""
    if loading.empty:
        return None
    labels, shares, overall = wait_shares(loading)
    fig, ax = plt.subplots(figsize=(10, 3.0))
    ax.bar(labels, shares, color="#d62728")
    ax.axhline(overall, color="black", linewidth=1, linestyle="--", label=f"all of them: {overall:.1f}%")
    ax.set_ylim(0, 100)
    ax.set_xlabel("epoch" if (loading["mode"] == "TRAIN").all() else "batches, in order")
    ax.set_ylabel("% of step time")
    ax.set_title(f"Share of the {what}' time spent waiting for data")
    ax.legend(fontsize=8)
    return _to_data_uri(fig)
