"""The local tuner with real training jobs on generated data (tiny: resnet18 from random weights,
32 px images, a few steps per epoch)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from byoc.datasets.synthetic import make_dataset
from byoc.errors import ByocError
from byoc.tuning import search
from byoc.tuning.best import read_best_hyperparameters
from byoc.tuning.local_tuner import TuningError, channels_from_data_dir, run_local_tuning
from byoc.tuning.spec import parse_spec
from container_train.contract import FEATURE_CACHE_DIR, quote_path

REPO = Path(__file__).resolve().parents[2]
TINY = {"arch": "resnet18", "pretrained": False, "freeze": "none", "image-size": 32, "workers": 0,
        "debugger": False, "batch-size": 8, "log-interval-s": 60}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tune-data")
    make_dataset(root, num_classes=3, per_class=8, size=32, seed=1)
    return root


def spec_of(metric="validation:accuracy", direction="Maximize", **fields):
    raw = {"objective": {"metric": metric, "direction": direction},
           "max_parallel_jobs": 2, "early_stopping": "Off", "random_seed": 0, **fields}
    return parse_spec(raw)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_local_tuning_runs_trials_in_parallel_and_ranks_them(data_dir, tmp_path):
    static = {k: v for k, v in TINY.items() if k != "batch-size"}
    spec = spec_of("validation:loss", "Minimize", strategy="Bayesian", max_jobs=4,
                   parameters={"lr": {"type": "continuous", "min": 0.003, "max": 0.05, "scaling": "log"},
                               "batch-size": {"type": "categorical", "values": [8, 12]}},
                   static={**static, "epochs": 1})
    result = run_local_tuning(spec, channels_from_data_dir(data_dir), tmp_path / "tune", progress=False)

    assert result.counts["complete"] == 4, result.leaderboard
    assert sorted(r["trial"] for r in result.leaderboard) == [0, 1, 2, 3]
    values = [r["value"] for r in result.leaderboard]
    assert values == sorted(values)              # Minimize: lowest validation loss first
    assert len(set(values)) > 1
    assert [r["rank"] for r in result.leaderboard] == [1, 2, 3, 4]
    # Each trial was its own training job; the objective is the last validation:loss in its log.
    for row in result.leaderboard:
        log = (Path(row["job_dir"]) / "training.log").read_text()
        assert row["value"] == pytest.approx(float(log.split("valid_loss=")[-1].split()[0]))
    # Two jobs ran at the same time (max_parallel_jobs=2): their lifetimes overlap.
    starts = sorted((Path(r["job_dir"]) / "input").stat().st_mtime for r in result.leaderboard)
    ends = sorted((Path(r["job_dir"]) / "training.log").stat().st_mtime for r in result.leaderboard)
    assert starts[1] < ends[0]

    # The tuning report: the optimization history and where each trial's time went, inline; no importances
    # from 4 trials of 2 parameters (byoc.tuning.report.TRIALS_PER_PARAMETER: a forest fitted to 4 points
    # ranks noise), and it says why.
    assert set(result.plots) == {"history", "trial_time"}
    assert result.plots["history"].read_bytes().startswith(b"\x89PNG")
    assert result.plots["history"].stat().st_size > 5000
    assert all(r["training_s"] > 0 and r["waiting_s"] == 0 for r in result.leaderboard)
    page = result.report.read_text()
    assert page.count('src="data:image/png;base64,') == 2 and "Leaderboard" in page
    assert "need 6 completed trials for 2 tuned parameter(s) (3 each), and 4 completed" in page

    with open(result.leaderboard_csv) as f:
        csv_rows = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in csv_rows] == [r["trial"] for r in result.leaderboard]
    doc = json.loads(result.leaderboard_json.read_text())
    assert doc["objective"] == {"metric": "validation:loss", "direction": "Minimize"}
    assert [t["trial"] for t in doc["trials"]] == [r["trial"] for r in result.leaderboard]
    best = json.loads(result.best_hyperparameters_path.read_text())
    assert best["trial"] == result.leaderboard[0]["trial"] == result.best_trial
    assert best["objective"]["value"] == pytest.approx(values[0])
    assert best["hyperparameters"]["arch"] == "resnet18"
    assert set(best["tuned"]) == {"lr", "batch-size"}
    assert best["job_dir"] == result.leaderboard[0]["job_dir"] and best["training_job"] is None
    # What `byoc train --from-tuning` reads: the best trial's full set, SageMaker strings in the file,
    # typed again when read.
    final = read_best_hyperparameters(result.out_dir)
    assert final == result.best_hyperparameters
    assert final["pretrained"] is False and str(final["lr"]) == best["tuned"]["lr"]


# The tuner in a process of its own, so that the test can SIGKILL it.
RUN_TUNER = ("import sys; from byoc.tuning.local_tuner import channels_from_data_dir, run_local_tuning; "
             "run_local_tuning(sys.argv[1], channels_from_data_dir(sys.argv[2]), sys.argv[3], progress=False)")


def _trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    if not (out / "study.db").exists():
        return []
    try:
        study = optuna.load_study(study_name="tuning", storage=search.storage_url(out))
    except Exception:  # noqa: BLE001 - the study may not be created yet
        return []
    return study.get_trials()


def _finished_trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    return [t for t in _trials(out) if t.state.is_finished()]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_tuner_resumes_without_repeating_finished_trials(data_dir, tmp_path):
    out = tmp_path / "tune"
    spec_file = tmp_path / "grid.yaml"
    spec_file.write_text(json.dumps({
        "objective": {"metric": "validation:accuracy", "direction": "Maximize"},
        "strategy": "Grid", "max_parallel_jobs": 1, "early_stopping": "Off",
        "parameters": {"lr": {"type": "categorical", "values": [0.01, 0.02]},
                       "batch-size": {"type": "categorical", "values": [8, 12]}},
        "static": {**{k: v for k, v in TINY.items() if k != "batch-size"}, "epochs": 1},
    }))
    cmd = [sys.executable, "-c", RUN_TUNER, str(spec_file), str(data_dir), str(out)]
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The signal: a trial finished and the next one's job has started. Its job (a process group)
        # is frozen at once, so with one trial at a time nothing can finish before the kill: the
        # tuner dies with 1 to 3 trials done and one running, whatever this machine's speed.
        deadline = time.monotonic() + 600
        while True:
            trials = _trials(out)
            running = [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("pid")]
            if running and any(t.state.is_finished() for t in trials):
                break
            assert first.poll() is None, "the tuner ended before it could be killed"
            assert time.monotonic() < deadline, f"no trial finished within 600 s: {trials}"
            time.sleep(0.2)
        os.killpg(running[0].user_attrs["pid"], signal.SIGSTOP)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    frozen = next(t for t in _trials(out) if t.number == running[0].number)
    assert not frozen.state.is_finished()       # stopped before it could finish: at most 3 are done
    before = {t.number: (t.params, (Path(t.user_attrs["job_dir"]) / "training.log").stat().st_mtime)
              for t in _finished_trials(out)}
    assert 1 <= len(before) < 4

    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "continuing the study" in second.stdout

    study = optuna.load_study(study_name="tuning", storage=search.storage_url(out))
    trials = study.get_trials()
    counted = [t for t in trials if t.state.is_finished() and not t.user_attrs.get("interrupted")]
    # The grid has 4 points; each was trained exactly once across the two runs.
    assert len(counted) == 4
    assert sorted((t.params["lr"], t.params["batch-size"]) for t in counted) == [
        (0.01, 8), (0.01, 12), (0.02, 8), (0.02, 12)]
    assert all(t.state == TrialState.COMPLETE for t in counted)
    for number, (params, mtime) in before.items():
        t = trials[number]
        assert t.params == params and t.state == TrialState.COMPLETE
        # Its job was not run again: the log is untouched.
        assert (Path(t.user_attrs["job_dir"]) / "training.log").stat().st_mtime == mtime
    interrupted = [t for t in trials if t.user_attrs.get("interrupted")]
    retries = [t for t in trials if "retry_of" in t.user_attrs]
    assert sorted(t.user_attrs["retry_of"] for t in retries) == sorted(t.number for t in interrupted)
    # No training job of the killed run is left behind.
    for t in interrupted:
        pid = t.user_attrs.get("pid")
        if pid:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    leaderboard = json.loads((out / "leaderboard.json").read_text())["trials"]
    complete = [r for r in leaderboard if r["status"] == "complete"]
    assert [r["value"] for r in complete] == sorted((r["value"] for r in complete), reverse=True)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tuning_with_torch_distributed_runs_each_trial_through_the_launcher(data_dir, tmp_path):
    """``byoc tune --distribution torch_distributed``: every trial starts as SageMaker would start it,
    through the image's launcher (torchrun), and its objective is read as for any trial."""
    spec = spec_of("validation:loss", "Minimize", strategy="Grid", max_parallel_jobs=1,
                   distribution="torch_distributed",
                   parameters={"lr": {"type": "categorical", "values": [0.01]}}, static={**TINY, "epochs": 1})
    result = run_local_tuning(spec, channels_from_data_dir(data_dir), tmp_path / "tune", progress=False)
    assert result.counts["complete"] == 1, result.leaderboard
    log = (Path(result.leaderboard[0]["job_dir"]) / "training.log").read_text()
    assert "torchrun --nnodes 1 --nproc_per_node 1" in log


ENDLESS = 1_000_000          # epochs: a job that cannot end by itself while the test runs


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_auto_early_stopping_prunes_a_diverging_trial(data_dir, tmp_path):
    # Two healthy trials first, then a learning rate that makes the loss explode, in a job that
    # cannot finish by itself: its first-epoch training loss is far above the median of the healthy
    # ones. The pruner is asked after every epoch in log order, so the verdict at epoch 1 does not
    # depend on when the tuner reads the log, and only that verdict can end the job (the trial
    # timeout only turns a missed prune into a failed trial instead of a hung test).
    spec = spec_of("train:loss", "Minimize", strategy="Random", max_jobs=3, max_parallel_jobs=1, early_stopping="Auto",
                   parameters={"lr": {"type": "categorical", "values": [0.01, 50.0]},
                               "epochs": {"type": "categorical", "values": [2, ENDLESS]}},
                   static={**TINY, "lr-scheduler": "none"})
    healthy = {"lr": 0.01, "epochs": 2}
    result = run_local_tuning(spec, channels_from_data_dir(data_dir), tmp_path / "tune", progress=False,
                              trial_timeout_s=300, enqueue=[healthy, healthy, {"lr": 50.0, "epochs": ENDLESS}])
    by_trial = {r["trial"]: r for r in result.leaderboard}
    assert [by_trial[i]["status"] for i in range(3)] == ["complete", "complete", "pruned"], result.leaderboard
    bad = by_trial[2]
    assert bad["lr"] == 50.0 and bad["epochs_reported"] == 1
    log = (Path(bad["job_dir"]) / "training.log").read_text()
    assert "#metric epoch=1 " in log
    metrics = json.loads((Path(bad["job_dir"]) / "output" / "data" / "metrics.json").read_text())
    assert (metrics["status"], metrics["stopped_by"]) == ("stopped", "SIGTERM")   # the prune's stop
    assert result.best_params == healthy


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_trials_share_one_feature_cache(data_dir, tmp_path):
    # Head-only trials: the first computes the frozen backbone's features into <out>/feature-cache,
    # the second loads them from there instead of running the backbone again.
    spec = spec_of("validation:loss", "Minimize", strategy="Grid", max_parallel_jobs=1,
                   parameters={"lr": {"type": "categorical", "values": [0.01, 0.02]}},
                   static={**TINY, "freeze": "head", "epochs": 1})
    result = run_local_tuning(spec, channels_from_data_dir(data_dir), tmp_path / "tune", progress=False)
    assert result.counts["complete"] == 2, result.leaderboard
    cache = tmp_path / "tune" / FEATURE_CACHE_DIR
    assert sorted(p.name.split("-")[0] for p in cache.glob("*.pt")) == ["train", "valid"]
    logs = {r["trial"]: (Path(r["job_dir"]) / "training.log").read_text() for r in result.leaderboard}
    assert all(f"feature cache on ({quote_path(cache)})" in log for log in logs.values())
    assert "feature cache: wrote" in logs[0] and "feature cache: hit" not in logs[0]
    assert logs[1].count("feature cache: hit") == 2 and "feature cache: wrote" not in logs[1]
    # one trial at a time: it gets every core as torch threads (thread_share)
    assert f"({len(os.sched_getaffinity(0))} intra-op threads)" in logs[0]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_failed_training_jobs_are_recorded_not_fatal(data_dir, tmp_path):
    empty = tmp_path / "empty-validation"
    empty.mkdir()
    channels = {"training": str(data_dir / "train"), "validation": str(empty)}
    spec = spec_of(strategy="Random", max_jobs=2, parameters={"lr": {"type": "categorical",
                                                                     "values": [0.01, 0.02]}},
                   static={**TINY, "epochs": 1})
    result = run_local_tuning(spec, channels, tmp_path / "tune", progress=False)
    assert result.counts["failed"] == 2 and result.best_trial is None
    assert result.best_hyperparameters_path is None
    for row in result.leaderboard:
        assert row["status"] == "failed"
        assert row["failure_reason"].startswith("training job exited with code")


def test_missing_data_is_a_clear_error(tmp_path):
    assert issubclass(TuningError, ByocError)
    with pytest.raises(TuningError, match="has no train/ folder"):
        channels_from_data_dir(tmp_path)
    spec = spec_of(strategy="Random", max_jobs=1, parameters={"lr": {"type": "categorical", "values": [0.1]}})
    with pytest.raises(TuningError, match="channel training: .* is not a directory"):
        run_local_tuning(spec, {"training": str(tmp_path / "nope")}, tmp_path / "out", progress=False)


def test_output_dir_of_another_search_is_refused(tmp_path, data_dir):
    spec = spec_of(strategy="Random", max_jobs=0 + 1, parameters={"lr": {"type": "categorical",
                                                                         "values": [0.1]}})
    study = search.open_study(spec, tmp_path)
    study.set_user_attr("spec", {"something": "else"})
    with pytest.raises(TuningError, match="holds a study for a different search"):
        run_local_tuning(spec, channels_from_data_dir(data_dir), tmp_path, progress=False)
