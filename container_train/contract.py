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
#
# How SageMaker applies them: a MetricDefinitions ``Regex`` is "a regular expression that searches
# the output of a training job" (API reference, MetricDefinition), i.e. the container's stdout and
# stderr ("Define metrics and environment variables" in the SageMaker developer guide), and the first
# group is the value. That output reaches the service line by line: the sagemaker-training
# toolkit's ``process.watch`` prints each line of the user script's output on its own and
# CloudWatch Logs stores one event per line. The documentation says nothing about multi-line
# flags, so the regexes rely on nothing but a plain ``^``: anchored at the start of the searched
# line, only a line the trainer printed with :func:`format_train_metrics` and friends can match,
# never a log line that merely contains the text (a file named ``#metric ... valid_acc=0.999.jpg``
# logged as unreadable). The readers below search line by line, as SageMaker does; the trainer's
# logging keeps every other record on one line and quotes paths (:func:`quote_path`).
_NUM = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": "train:loss", "Regex": rf"^#metric epoch=\d+ train_loss={_NUM}"},
    {"Name": "validation:loss", "Regex": rf"^#metric epoch=\d+ valid_loss={_NUM}"},
    {"Name": "validation:accuracy", "Regex": rf"^#metric epoch=\d+ valid_loss=\S+ valid_acc={_NUM}"},
    {"Name": "test:loss", "Regex": rf"^#metric test_loss={_NUM}"},
    {"Name": "test:accuracy", "Regex": rf"^#metric test_loss=\S+ test_acc={_NUM}"},
]
METRIC_REGEX: dict[str, str] = {d["Name"]: d["Regex"] for d in METRIC_DEFINITIONS}
EPOCH_REGEX = r"^#metric epoch=(\d+) "
DEFAULT_OBJECTIVE = "validation:accuracy"

# Characters that end a line for str.splitlines() (and so for the readers below); a log record
# must not contain any of them, or its tail would start a line of its own.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def quote_path(path) -> str:
    """A path as the trainer logs it: quoted, with line breaks and other unprintable characters
    escaped (``repr``), so a file name can never start a log line of its own."""
    return repr(str(path))


def one_line(text: str) -> str:
    """``text`` with every line break escaped: what the trainer's log formatter does to a message."""
    return _LINE_BREAKS.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def format_train_metrics(epoch: int, train_loss: float) -> str:
    return f"#metric epoch={epoch} train_loss={train_loss:.6f}"


def format_valid_metrics(epoch: int, valid_loss: float, valid_acc: float) -> str:
    return f"#metric epoch={epoch} valid_loss={valid_loss:.6f} valid_acc={valid_acc:.6f}"


def format_test_metrics(test_loss: float, test_acc: float) -> str:
    return f"#metric test_loss={test_loss:.6f} test_acc={test_acc:.6f}"


def parse_metric(name: str, log_text: str) -> list[float]:
    """All values of metric ``name`` in ``log_text``, in order (what SageMaker would record)."""
    return [value for _, value in metric_series(name, log_text)]


def metric_series(name: str, log_text: str) -> list[tuple[int | None, float]]:
    """``(epoch, value)`` for every line metric ``name``'s regex matches, in order; the epoch is
    ``None`` for the end-of-job test metrics. The one reader of the metric log: the local tuner,
    the progress display and the benchmarks all go through it. Each line is searched on its own,
    so the ``^`` of the regexes anchors at the start of a line (see above)."""
    regex, epoch_regex = re.compile(METRIC_REGEX[name]), re.compile(EPOCH_REGEX)
    series = []
    for line in log_text.splitlines():
        m = regex.search(line)
        if m:
            e = epoch_regex.search(line)
            series.append((int(e.group(1)) if e else None, float(m.group(1))))
    return series


def completed_epochs(log_text: str) -> list[int]:
    """Epochs whose validation line is in the log (the trainer prints it when an epoch ends)."""
    return sorted({epoch for epoch, _ in metric_series("validation:loss", log_text) if epoch is not None})


# ---- feature-extraction progress ----------------------------------------------------------------
# The trainer logs where a feature extraction stands (it can take minutes before the first epoch):
#   [extract] 3200/10000 images 21.3 img/s elapsed 0:02:30 ETA 0:05:24
# at most every EXTRACT_PROGRESS_INTERVAL_S (and at the end); the operator side draws its bars from the
# last such line of the job log.
EXTRACT_PROGRESS_INTERVAL_S = 10.0
_EXTRACT_PROGRESS_RE = re.compile(r"\[extract\] (\d+)/(\d+) images ([0-9.]+) img/s elapsed \S+ ETA (\S+)")


def format_extract_progress(done: int, total: int, elapsed_s: float) -> str:
    rate = done / max(elapsed_s, 1e-9)
    eta = _hms((total - done) / rate) if rate > 0 else "?"
    return f"[extract] {done}/{total} images {rate:.1f} img/s elapsed {_hms(elapsed_s)} ETA {eta}"


def extract_progress(log_text: str) -> tuple[int, int, float, str] | None:
    """The last extraction progress of a log: ``(done, total, images per second, ETA h:mm:ss)``."""
    found = _EXTRACT_PROGRESS_RE.findall(log_text)
    if not found:
        return None
    done, total, rate, eta = found[-1]
    return int(done), int(total), float(rate), eta


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


# ---- dataset layout -----------------------------------------------------------------------------
# An ImageFolder per split, one folder per class (the dogImages layout). The ``training`` channel
# may hold all three splits as sub-folders; SageMaker channels map to splits as below.
SPLITS = ("train", "valid", "test")
SPLIT_FOLDER_ALIASES = {"train": ("train",), "valid": ("valid", "validation", "val"), "test": ("test",)}
CHANNEL_SPLITS = {"training": "train", "validation": "valid", "test": "test"}   # channel -> split folder
_CLASS_FOLDER_PREFIX = re.compile(r"^\d+[._-](.+)$")


def class_name_from_folder(folder: str) -> str:
    """``001.Affenpinscher`` -> ``Affenpinscher``; names without a numeric prefix stay as they are. The
    model's class names (classes.json) are its class folders' names through this, so the operator side
    compares an answer with an image's folder through it too."""
    m = _CLASS_FOLDER_PREFIX.match(folder)
    return m.group(1) if m else folder


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# ---- output data dir (SM_OUTPUT_DATA_DIR) -----------------------------------------------------
METRICS_FILE = "metrics.json"                  # {"history": [...per epoch...], "test": {...}, ...}
STEP_TIMINGS_FILE = "profiler/step_timings.jsonl"   # one JSON object per training/eval step
SYSTEM_METRICS_FILE = "profiler/system_metrics.jsonl"  # one JSON object per sample
PHASES_FILE = "profiler/phases.jsonl"          # one JSON object per timed interval of a phase
RULES_DIR = "rules"                            # rule results, one JSON file per rule
RULE_RESULTS_FILE = "rules/rule_results.json"
PROFILER_REPORT_FILE = "profiler-report.html"

# Step timing record fields:
#   {"ts": unix_s, "epoch": int, "step": int, "mode": "TRAIN"|"EVAL"|"EXTRACT", "batch_size": int,
#    "data_wait_s": float, "compute_s": float, "step_s": float}
# (EXTRACT: a batch of the feature-cache extraction, epoch 0: images loaded, backbone forward.)
# Phase record fields: {"phase": one of PHASES, "start": unix_s, "seconds": float, "epoch": int (some)}
# The phases cover the trainer process from its start to its end, one after another, so they sum to its
# wall time. "waiting" (for another process's feature-cache lock) happens inside a "feature extraction"
# block; its seconds are taken out of that block's record, so no second counts twice.
PHASES = ("start-up", "data preparation", "model setup", "feature extraction", "waiting", "training",
          "validation", "checkpoint", "test", "artifact save")
# System sample fields:
#   {"ts": unix_s, "cpu_percent": float (0-100, all cores), "cpu_per_core": [float],
#    "mem_percent": float, "mem_used_mb": float, "proc_rss_mb": float,
#    "proc_cpu_percent": float (the job's process tree, same 0-100 scale as cpu_percent),
#    "gpu": [{"index", "util_percent", "mem_used_mb", "mem_total_mb"}]  (empty without a GPU)}

# ---- the feature cache shared between jobs ------------------------------------------------------
# A folder several jobs on one machine share (the local tuner's trials): set by the operator side,
# read by container_train.feature_cache.
FEATURE_CACHE_DIR_ENV = "BYOC_FEATURE_CACHE_DIR"
# The cache's folder name: under a job's checkpoint dir (the default), and in a local run or tuning dir.
FEATURE_CACHE_DIR = "feature-cache"
# The version of what decides and holds a backbone's features (feature_cache.FeatureSpec, the cache files,
# a features channel): 2 added the dtype the backbone ran in. The operator's key for reusing an earlier
# extraction job (byoc.tuning.features_flow.features_key) includes it, so a newer trainer never gets
# an older job's features.
FEATURE_FORMAT_VERSION = 2

# ---- features as a dataset (container_train.features_dataset) -----------------------------------
# A task=extract-features job writes the backbone's features of every split as its model artifact;
# a later job given that artifact as its FEATURES_CHANNEL trains the head on them without the images.
TASK_TRAIN, TASK_EXTRACT_FEATURES = "train", "extract-features"
TASKS = (TASK_TRAIN, TASK_EXTRACT_FEATURES)
FEATURES_CHANNEL = "features"
FEATURES_MANIFEST = "features.json"
# Hyperparameters that decide the features (the fingerprint's inputs): a features-channel job must
# use the extraction job's values (the trainer checks the fingerprint itself; the operator side
# passes these through unchanged and never tunes them on a features channel).
FEATURE_HYPERPARAMETERS = ("arch", "pretrained", "pretrained-weights", "image-size", "resize-size",
                           "feature-cache-views", "amp")      # amp: the dtype the backbone runs in

# ---- checkpoints (/opt/ml/checkpoints, SageMaker syncs it to S3 for spot training) ------------
CHECKPOINT_FILE = "checkpoint.pth"
PREVIOUS_CHECKPOINT_FILE = "checkpoint.previous.pth"   # the one before, kept for a corrupt latest


def read_json_lines(path) -> tuple[list[dict], int]:
    """The records of one of the profiler's JSON-lines files (phases, step timings, system samples) and
    how many lines could not be read: a torn last line (the job was killed mid-write) is skipped, counted."""
    import json
    from pathlib import Path

    path = Path(path)
    records, bad = [], 0
    if not path.is_file():
        return records, bad
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    return records, bad
