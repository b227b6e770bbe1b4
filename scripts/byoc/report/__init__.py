"""Profiler report: one self-contained HTML file from a training job's profiler records.

The local counterpart of SageMaker Debugger's ``ProfilerReport`` rule output
(``profiler-report.html``): utilisation over time, step-duration histogram and outliers,
data-loading share, per-epoch summary, the ProfilerReport rules with SageMaker's thresholds,
Debugger rule findings, and recommendations.

* :func:`build_profiler_report` -- ``(output_data_dir, out_path=None) -> Path``
* ``byoc report --job-dir DIR`` -- the command line for it.
"""

from .builder import build_profiler_report, per_epoch_summary, recommendations, render_report
from .checks import NOT_APPLICABLE, OK, TRIGGERED, ProfilerCheck, evaluate_all
from .data import ProfileData, ProfileDataError, load_profile

__all__ = [
    "NOT_APPLICABLE", "OK", "TRIGGERED", "ProfileData", "ProfileDataError", "ProfilerCheck",
    "build_profiler_report", "evaluate_all", "load_profile", "per_epoch_summary", "recommendations",
    "render_report",
]
