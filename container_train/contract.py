"""What a training job promises to the outside world, defined once.

* Metric log lines: the trainer prints them with the ``format_*`` functions below, and tuning
  jobs (SageMaker ``MetricDefinitions`` and the local Optuna tuner) parse them with
  :data:`METRIC_DEFINITIONS`. Change a format here and every reader follows.
* Output data layout under ``SM_OUTPUT_DATA_DIR`` (metrics, profiler records, rule results).
* Checkpoint file name under the checkpoint dir.
"""

from __future__ import annotations

import re

# ---- metric log lines -------------------------------------------------------------------------
# One line per metric event, e.g.
#   #metric epoch=3 train_loss=0.512340
#   #metric epoch=3 valid_loss=0.601200 valid_acc=0.812500
#   #metric test_loss=0.633000 test_acc=0.797000
_NUM = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": "train:loss", "Regex": rf"#metric epoch=\d+ train_loss={_NUM}"},
    {"Name": "validation:loss", "Regex": rf"#metric epoch=\d+ valid_loss={_NUM}"},
    {"Name": "validation:accuracy", "Regex": rf"#metric epoch=\d+ valid_loss=\S+ valid_acc={_NUM}"},
    {"Name": "test:loss", "Regex": rf"#metric test_loss={_NUM}"},
    {"Name": "test:accuracy", "Regex": rf"#metric test_loss=\S+ test_acc={_NUM}"},
]
METRIC_REGEX: dict[str, str] = {d["Name"]: d["Regex"] for d in METRIC_DEFINITIONS}
EPOCH_REGEX = r"#metric epoch=(\d+) "
DEFAULT_OBJECTIVE = "validation:accuracy"


def format_train_metrics(epoch: int, train_loss: float) -> str:
    return f"#metric epoch={epoch} train_loss={train_loss:.6f}"


def format_valid_metrics(epoch: int, valid_loss: float, valid_acc: float) -> str:
    return f"#metric epoch={epoch} valid_loss={valid_loss:.6f} valid_acc={valid_acc:.6f}"


def format_test_metrics(test_loss: float, test_acc: float) -> str:
    return f"#metric test_loss={test_loss:.6f} test_acc={test_acc:.6f}"


def parse_metric(name: str, log_text: str) -> list[float]:
    """All values of metric ``name`` in ``log_text``, in order (what SageMaker would record)."""
    return [float(m) for m in re.findall(METRIC_REGEX[name], log_text)]


# ---- output data dir (SM_OUTPUT_DATA_DIR) -----------------------------------------------------
METRICS_FILE = "metrics.json"                  # {"history": [...per epoch...], "test": {...}, ...}
PROFILER_DIR = "profiler"
STEP_TIMINGS_FILE = "profiler/step_timings.jsonl"   # one JSON object per training/eval step
SYSTEM_METRICS_FILE = "profiler/system_metrics.jsonl"  # one JSON object per sample
RULES_DIR = "rules"                            # rule results, one JSON file per rule
RULE_RESULTS_FILE = "rules/rule_results.json"
PROFILER_REPORT_FILE = "profiler-report.html"

# Step timing record fields:
#   {"ts": unix_s, "epoch": int, "step": int, "mode": "TRAIN"|"EVAL", "batch_size": int,
#    "data_wait_s": float, "compute_s": float, "step_s": float}
# System sample fields:
#   {"ts": unix_s, "cpu_percent": float (0-100, all cores), "cpu_per_core": [float],
#    "mem_percent": float, "mem_used_mb": float, "proc_rss_mb": float,
#    "gpu": [{"index", "util_percent", "mem_used_mb", "mem_total_mb"}]  (empty without a GPU)}

# ---- checkpoints (/opt/ml/checkpoints, SageMaker syncs it to S3 for spot training) ------------
CHECKPOINT_FILE = "checkpoint.pth"
