"""The ProfilerReport's rules, evaluated on our trainer's profiler records.

SageMaker's ``ProfilerReport`` rule runs BatchSize, CPUBottleneck, Dataloader, GPUMemoryIncrease,
IOBottleneck, LoadBalancing, LowGPUUtilization, MaxInitializationTime, OverallSystemUsage and
StepOutlier over the system and framework metrics Debugger collects. We evaluate the same rules,
with the same default thresholds (``smdebug_rulesconfig.profiler_rules``), on what our trainer
records. Where the inputs differ the rule says so in ``basis``:

* ``patience`` (SageMaker: skip the first 1000 datapoints, ~8 minutes at its 500 ms sampling)
  becomes "skip the first system sample": local runs last seconds to minutes.
* IOBottleneck: SageMaker measures the instance's I/O wait; we have the time each step waited
  for its batch (``data_wait_s``), so a step is "I/O bound" when waiting took more than
  ``io_threshold`` percent of it. The steps are those that read the dataset
  (:meth:`ProfileData.loading_steps`): the feature extraction's batches on a job that trained on
  cached features (its training steps read tensors already in memory), else the training steps.
* BatchSize and CPUBottleneck on a CPU-only job: there is no GPU, so system memory takes the
  place of GPU memory in BatchSize, and CPUBottleneck is not applicable.
* Dataloader compares the ``workers`` hyperparameter with the CPU count (as SageMaker does
  with the number of DataLoader processes); not applicable when no step read the dataset (a job
  whose features all came from the cache).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .data import ProfileData

TRIGGERED, OK, NOT_APPLICABLE = "Triggered", "OK", "Not applicable"


@dataclass
class ProfilerCheck:
    rule: str
    status: str                      # TRIGGERED / OK / NOT_APPLICABLE
    description: str                 # what the rule looks for
    finding: str                     # what it found on this job
    parameters: dict = field(default_factory=dict)
    recommendation: str = ""         # what to change (set when triggered)
    basis: str = ""                  # how our inputs differ from SageMaker's, if they do

    @property
    def triggered(self) -> bool:
        return self.status == TRIGGERED


JOB_CPU = "proc_cpu_percent"


def job_cpu_column(system: pd.DataFrame) -> tuple[str, str]:
    """The CPU figure a rule about the job should read, and the basis note: the job's own process
    tree when recorded (on a shared machine the machine's CPU includes other work, which made
    BatchSize say OK while the job itself idled), else the machine's."""
    if JOB_CPU in system and system[JOB_CPU].notna().any():
        return JOB_CPU, "CPU is the job's own processes, not the whole machine (which may run other work)"
    return "cpu_percent", ""


def _after_patience(system: pd.DataFrame) -> pd.DataFrame:
    return system.iloc[1:] if len(system) > 1 else system


def _gpu_columns(data: ProfileData, kind: str) -> list[str]:
    return [f"gpu{i}_{kind}" for i in range(data.gpu_count) if f"gpu{i}_{kind}" in data.system]


def low_gpu_utilization(data: ProfileData, threshold_p95=70, threshold_p5=10) -> ProfilerCheck:
    params = {"threshold_p95": threshold_p95, "threshold_p5": threshold_p5}
    desc = ("GPU under-used: 95th percentile of utilisation below threshold_p95, or fluctuating: "
            "p95 above threshold_p95 while p5 below threshold_p5.")
    cols = _gpu_columns(data, "util")
    if not cols:
        return ProfilerCheck("LowGPUUtilization", NOT_APPLICABLE, desc, "No GPU on this job.", params)
    sysd = _after_patience(data.system)
    low, fluct = [], []
    for col in cols:
        values = sysd[col].dropna()
        if values.empty:
            continue
        p5, p95 = np.percentile(values, [5, 95])
        if p95 < threshold_p95:
            low.append(f"{col.split('_')[0]} p95 {p95:.0f}%")
        elif p5 < threshold_p5:
            fluct.append(f"{col.split('_')[0]} p5 {p5:.0f}% / p95 {p95:.0f}%")
    if low or fluct:
        return ProfilerCheck(
            "LowGPUUtilization", TRIGGERED, desc, "; ".join(low + fluct), params,
            recommendation=("GPU is under-used: increase the batch size, use more DataLoader workers, "
                            "or move to a smaller/cheaper GPU instance. Fluctuating utilisation "
                            "points at a data-loading bottleneck."),
        )
    return ProfilerCheck("LowGPUUtilization", OK, desc, "GPU utilisation is high and steady.", params)


def cpu_bottleneck(data: ProfileData, threshold=50, gpu_threshold=10, cpu_threshold=90) -> ProfilerCheck:
    params = {"threshold": threshold, "gpu_threshold": gpu_threshold, "cpu_threshold": cpu_threshold}
    desc = ("GPU waiting on the CPU: share of samples with CPU > cpu_threshold% while GPU < "
            "gpu_threshold% above threshold%.")
    cols = _gpu_columns(data, "util")
    if not cols or data.system.empty:
        return ProfilerCheck("CPUBottleneck", NOT_APPLICABLE, desc,
                             "No GPU on this job: the CPU is the compute device.", params,
                             basis="CPU-only job")
    sysd = _after_patience(data.system)
    gpu_low = sysd[cols].max(axis=1) < gpu_threshold
    bottleneck = (sysd["cpu_percent"] > cpu_threshold) & gpu_low
    share = 100.0 * bottleneck.mean()
    finding = f"CPU bottleneck in {share:.0f}% of samples."
    if share > threshold:
        return ProfilerCheck("CPUBottleneck", TRIGGERED, desc, finding, params,
                             recommendation=("Move preprocessing off the critical path: more DataLoader "
                                             "workers, cache decoded/resized images, or a larger instance."))
    return ProfilerCheck("CPUBottleneck", OK, desc, finding, params)


def io_bottleneck(data: ProfileData, threshold=50, gpu_threshold=10, io_threshold=50) -> ProfilerCheck:
    params = {"threshold": threshold, "gpu_threshold": gpu_threshold, "io_threshold": io_threshold}
    desc = "Steps waiting on input: share of steps whose data wait exceeds io_threshold% of the step above threshold%."
    basis = "data_wait_s / step_s per step that reads the dataset stands in for I/O wait"
    loading = data.loading_steps()
    if loading.empty:
        return ProfilerCheck("IOBottleneck", NOT_APPLICABLE, desc, "No step read the dataset.", params, basis=basis)
    what = "feature-extraction batches" if data.metrics.get("feature_cache") else "training steps"
    share_per_step = 100.0 * loading["data_wait_s"] / loading["step_s"].clip(lower=1e-9)
    bound = 100.0 * (share_per_step > io_threshold).mean()
    finding = f"{bound:.0f}% of {what} spent more than {io_threshold}% of their time waiting for data."
    if bound > threshold:
        return ProfilerCheck("IOBottleneck", TRIGGERED, desc, finding, params, basis=basis,
                             recommendation=("Input pipeline is the bottleneck: raise `workers`, enable "
                                             "pin_memory, pre-resize or cache the images (e.g. the frozen-"
                                             "backbone feature cache), or use faster storage (FastFile/Pipe mode)."))
    return ProfilerCheck("IOBottleneck", OK, desc, finding, params, basis=basis)


def batch_size(data: ProfileData, cpu_threshold_p95=70, gpu_threshold_p95=70, gpu_memory_threshold_p95=70) -> ProfilerCheck:
    params = {"cpu_threshold_p95": cpu_threshold_p95, "gpu_threshold_p95": gpu_threshold_p95,
              "gpu_memory_threshold_p95": gpu_memory_threshold_p95}
    desc = "Batch too small: p95 of CPU, GPU and (GPU) memory utilisation all below their thresholds."
    if data.system.empty:
        return ProfilerCheck("BatchSize", NOT_APPLICABLE, desc, "No system samples.", params)
    sysd = _after_patience(data.system)
    cpu_column, cpu_basis = job_cpu_column(sysd)
    cpu95 = float(np.percentile(sysd[cpu_column].dropna(), 95))
    if data.has_gpu:
        gpu95 = max(float(np.percentile(sysd[c].dropna(), 95)) for c in _gpu_columns(data, "util"))
        mem95 = max(float(np.percentile(sysd[c].dropna(), 95)) for c in _gpu_columns(data, "mem_percent"))
        low = cpu95 < cpu_threshold_p95 and gpu95 < gpu_threshold_p95 and mem95 < gpu_memory_threshold_p95
        finding = f"p95: CPU {cpu95:.0f}%, GPU {gpu95:.0f}%, GPU memory {mem95:.0f}%."
        basis = cpu_basis
    else:
        mem95 = float(np.percentile(sysd["mem_percent"], 95))
        low = cpu95 < cpu_threshold_p95 and mem95 < gpu_memory_threshold_p95
        finding = f"p95: CPU {cpu95:.0f}%, system memory {mem95:.0f}% (no GPU)."
        basis = "; ".join(b for b in ("CPU-only job: system memory stands in for GPU memory", cpu_basis) if b)
    if low:
        return ProfilerCheck("BatchSize", TRIGGERED, desc, finding, params, basis=basis,
                             recommendation=("The machine is under-used: increase `batch-size` (scale `lr` "
                                             "with it), or run on a smaller, cheaper instance type."))
    return ProfilerCheck("BatchSize", OK, desc, finding, params, basis=basis)


def step_outlier(data: ProfileData, stddev=3, mode=None, n_outliers=10) -> ProfilerCheck:
    params = {"stddev": stddev, "mode": mode, "n_outliers": n_outliers}
    desc = "Step durations above mean + stddev x standard deviation (per mode); triggers beyond n_outliers."
    if data.steps.empty:
        return ProfilerCheck("StepOutlier", NOT_APPLICABLE, desc, "No steps recorded.", params)
    parts, total = [], 0
    for m, group in data.steps.groupby("mode"):
        if mode is not None and m != mode:
            continue
        outliers = step_outliers(group["step_s"], stddev)
        total += int(outliers.sum())
        if outliers.any():
            parts.append(f"{m}: {int(outliers.sum())} of {len(group)} steps "
                         f"(max {group['step_s'].max():.3f}s vs median {group['step_s'].median():.3f}s)")
    finding = "; ".join(parts) if parts else "No outlier steps."
    if total > n_outliers:
        return ProfilerCheck("StepOutlier", TRIGGERED, desc, finding, params,
                             recommendation=("Look at what happens at the outlier steps (first step / "
                                             "epoch boundaries: DataLoader worker start-up, checkpointing, "
                                             "evaluation); use persistent workers and checkpoint less often."))
    return ProfilerCheck("StepOutlier", OK, desc, finding, params)


def step_outliers(durations: pd.Series, stddev: float = 3) -> pd.Series:
    """Boolean mask: durations above mean + stddev * std (StepOutlier's definition)."""
    if len(durations) < 2:
        return pd.Series(False, index=durations.index)
    return durations > durations.mean() + stddev * durations.std(ddof=0)


def dataloader(data: ProfileData, min_threshold=70, max_threshold=200) -> ProfilerCheck:
    params = {"min_threshold": min_threshold, "max_threshold": max_threshold}
    desc = ("DataLoader workers as a percentage of CPU cores: below min_threshold% under-uses the "
            "CPU, above max_threshold% oversubscribes it.")
    workers = data.hyperparameters.get("workers")
    if data.loading_steps().empty and not data.steps.empty:
        return ProfilerCheck("Dataloader", NOT_APPLICABLE, desc,
                             "No step read the dataset (every feature came from the cache).", params)
    if workers is None:
        return ProfilerCheck("Dataloader", NOT_APPLICABLE, desc,
                             "The job's `workers` hyperparameter is unknown (no hyperparameters.json).", params)
    n = int(float(workers))
    pct = 100.0 * n / max(data.cpu_count, 1)
    finding = f"{n} worker(s) on {data.cpu_count} core(s) = {pct:.0f}%."
    if pct < min_threshold:
        return ProfilerCheck("Dataloader", TRIGGERED, desc, finding, params,
                             recommendation=f"Raise `workers` towards {data.cpu_count} (one per core).")
    if pct > max_threshold:
        return ProfilerCheck("Dataloader", TRIGGERED, desc, finding, params,
                             recommendation=f"Lower `workers` to about {data.cpu_count}: extra workers "
                             "compete with the training loop for CPU.")
    return ProfilerCheck("Dataloader", OK, desc, finding, params)


def load_balancing(data: ProfileData, threshold=0.5) -> ProfilerCheck:
    params = {"threshold": threshold}
    desc = "Multi-GPU jobs: distance between per-GPU utilisation histograms above threshold."
    cols = _gpu_columns(data, "util")
    if len(cols) < 2:
        return ProfilerCheck("LoadBalancing", NOT_APPLICABLE, desc, "Fewer than two GPUs.", params)
    sysd = _after_patience(data.system)
    bins = np.linspace(0, 100, 11)
    hists = [np.histogram(sysd[c].dropna(), bins=bins)[0] for c in cols]
    hists = [h / h.sum() if h.sum() else h for h in hists]
    worst = max(0.5 * np.abs(a - b).sum() for i, a in enumerate(hists) for b in hists[i + 1:])
    finding = f"Largest total-variation distance between GPU utilisation histograms: {worst:.2f}."
    if worst > threshold:
        return ProfilerCheck("LoadBalancing", TRIGGERED, desc, finding, params,
                             recommendation="Balance the work across GPUs (equal per-device batch, DDP).")
    return ProfilerCheck("LoadBalancing", OK, desc, finding, params)


def max_initialization_time(data: ProfileData, threshold=20) -> ProfilerCheck:
    params = {"threshold": threshold}
    desc = "Time from the first system sample to the first training step above threshold minutes."
    if data.steps.empty or data.system.empty:
        return ProfilerCheck("MaxInitializationTime", NOT_APPLICABLE, desc, "Not enough records.", params)
    start = float(data.system["ts"].iloc[0])
    first_step = float(data.steps["ts"].iloc[0] - data.steps["step_s"].iloc[0])
    minutes = max(first_step - start, 0.0) / 60.0
    finding = f"First step started {minutes * 60:.1f}s after profiling began."
    if minutes > threshold:
        return ProfilerCheck("MaxInitializationTime", TRIGGERED, desc, finding, params,
                             recommendation="Start-up is slow: cache the dataset/model locally, use FastFile mode.")
    return ProfilerCheck("MaxInitializationTime", OK, desc, finding, params)


ALL_CHECKS = (low_gpu_utilization, cpu_bottleneck, io_bottleneck, batch_size, step_outlier,
              dataloader, load_balancing, max_initialization_time)


def evaluate_all(data: ProfileData) -> list[ProfilerCheck]:
    return [check(data) for check in ALL_CHECKS]
