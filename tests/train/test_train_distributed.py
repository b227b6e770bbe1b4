"""Data-parallel jobs on 127.0.0.1: two hosts (two toolkit + torchrun processes, Gloo) play algo-1 and algo-2.

What must hold: one artifact and one set of metric lines (algo-1's), the same result as one host
with the same global batch, a stopped job restarting every rank from the same checkpoint, a dead rank
or a host that never joins failing the job with a reason instead of hanging it, and a host with GPUs
but no usable CUDA refusing to train on CPU. (The same job as two containers:
tests/containers/test_containers_distributed.py; the checks both share: tests/helpers/distributed_jobs.py.)
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import psutil
import pytest
import torch

from byoc.local.multi_host import MultiHostJob, local_training_job
from byoc.local.training_job import run_training_job
from container_train import checkpointing, distributed, launch
from container_train.contract import EPOCH_REGEX, PHASES_FILE, STEP_TIMINGS_FILE, parse_metric
from container_train.errors import TrainingError
from container_train.feature_cache import FeatureBatches
from container_train.feature_extraction import FeatureSet
from container_train.job_env import LAUNCHER_MODULE
from tests.helpers.distributed_jobs import (
    FAST_FAULTS,
    HEAD_JOB,
    METRIC_LINE,
    check_one_artifact_and_one_set_of_metric_lines,
    check_trains_like_one_host,
)
from tests.train.train_helpers import FAST_HP

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

REPO = Path(__file__).resolve().parents[2]


def _channels(data: Path) -> dict:
    return {"training": data}


# ---- pieces --------------------------------------------------------------------------------------

def test_the_launcher_picks_torchrun_for_more_than_one_host_or_gpu_or_when_asked():
    one = launch.plan_launch(["algo-1"], "algo-1", 0, {})
    assert not one.distributed and one.world_size == 1
    assert launch.plan_launch(["algo-1", "algo-2"], "algo-2", 0, {}).world_size == 2
    assert launch.plan_launch(["algo-1"], "algo-1", 4, {}).world_size == 4
    assert launch.plan_launch(["algo-1"], "algo-1", 0, {"sagemaker_torch_distributed_enabled": "true"}).distributed
    assert not launch.plan_launch(["algo-1"], "algo-1", 1, {"sagemaker_torch_distributed_enabled": False}).distributed
    # The image hands the toolkit this launcher (one definition, in job_env).
    assert f"SAGEMAKER_TRAINING_MODULE={LAUNCHER_MODULE}" in (REPO / "docker" / "train.Dockerfile").read_text()


def test_rank_shards_of_cached_features_cover_every_image_once_per_epoch():
    fs = FeatureSet(torch.arange(11.0).reshape(1, 11, 1), torch.arange(11))
    for shuffle in (True, False):
        shards = [FeatureBatches(fs, 2, shuffle=shuffle, seed=5, rank=r, world_size=3) for r in range(3)]
        seen = [int(x) for s in shards for b in s for x in b.labels]
        assert set(seen) == set(range(11))
        # Training pads to equal steps on every rank (DDP needs them); evaluation counts each image once.
        assert len(seen) == (12 if shuffle else 11)
        if shuffle:
            assert len({len(s) for s in shards}) == 1


def test_gpu_host_without_usable_cuda_fails_with_the_reason(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("CUDA works here")
    monkeypatch.setenv("SM_NUM_GPUS", "1")
    with pytest.raises(TrainingError, match=r"1 GPU\(s\).*CUDA is unusable.*TORCH_INDEX_URL"):
        distributed.choose_device(distributed.SINGLE)
    monkeypatch.setenv("SM_NUM_GPUS", "0")
    assert distributed.choose_device(distributed.SINGLE).type == "cpu"


# ---- whole jobs ----------------------------------------------------------------------------------

def test_two_hosts_train_like_one_host_with_the_same_global_batch(cache_data, tmp_path):
    """freeze=head: each rank extracts half the features and trains on half of every global batch;
    DDP's averaged gradients then equal one host's on the whole batch, so the figures match."""
    two = MultiHostJob(tmp_path / "two", {**HEAD_JOB, "batch-size": 5}, _channels(cache_data), 2, env=FAST_FAULTS)
    result = two.start().wait(timeout=600)
    assert result.ok, f"{result.failure_reason}\n{result.log_text[-4000:]}"
    one = run_training_job(tmp_path / "one", {**HEAD_JOB, "batch-size": 10}, _channels(cache_data), timeout=600)
    assert one.ok, one.failure_reason

    check_one_artifact_and_one_set_of_metric_lines(two, result, one)
    # The features were computed once, half on each rank (30 training images, 18 validation).
    assert "view 1/1: 15 images" in result.log_text and "view 1/1: 30 images" not in result.log_text
    check_trains_like_one_host(result, one)


def test_two_hosts_fine_tune_the_whole_network(tiny_dataset, tmp_path):
    hp = {**FAST_HP, "epochs": 2, "batch-size": 8, "debugger": False}
    result = MultiHostJob(tmp_path / "job", hp, _channels(tiny_dataset), 2, env=FAST_FAULTS).start().wait(timeout=600)
    assert result.ok, f"{result.failure_reason}\n{result.log_text[-4000:]}"
    metrics = result.metrics
    assert metrics["world_size"] == 2 and metrics["epochs_completed"] == 2
    # Every image counted once over both ranks (32 train, 16 valid images).
    assert [h["train_images_per_s"] > 0 for h in metrics["history"]] == [True, True]
    assert metrics["images"]["train"] == 32 and metrics["test"]["images"] == 16
    assert len(result.metric("validation:accuracy")) == 2


def _trainer_of(job) -> psutil.Process | None:
    """The rank's own process: torchrun's child running train.py."""
    for p in psutil.Process(job.pid).children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "train.py" in cmd and "torchrun" not in cmd and "torch.distributed.run" not in cmd:
            return p
    return None


def test_a_dead_rank_fails_every_host_with_a_reason(cache_data, tmp_path):
    hp = {**FAST_HP, "epochs": 200, "debugger": False, "checkpoint": False, "batch-size": 4}
    job = MultiHostJob(tmp_path / "job", hp, _channels(cache_data), 2, env=FAST_FAULTS).start()
    try:
        assert job.main.wait_for(lambda: "[train] epoch 1/200 step 1/" in job.main.log_text(), timeout=300), \
            job.main.log_text()[-3000:]
        victim = _trainer_of(job.jobs[1])
        assert victim is not None
        victim.send_signal(signal.SIGKILL)
        results = job.wait_all(timeout=120)       # a generous bound: the peer's death is seen at once
    finally:
        job.kill()
    assert all(not r.ok and not r.timed_out for r in results), [str(r) for r in results]
    survivor, killed = results
    assert "another rank of this distributed job failed" in survivor.failure_reason, survivor.failure_reason
    assert killed.failure_reason, "the killed host's toolkit reports its rank's exit"
    assert not METRIC_LINE.search(killed.log_text)


def _records(host_dir: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (host_dir / "output" / "data" / name).read_text().splitlines()]


def _training_epochs_per_run(host_dir: Path) -> list[list[int]]:
    """The epochs each run of this host trained, from its phases (the file grows across restarts;
    every run of the trainer begins with a "start-up" record)."""
    runs: list[list[int]] = []
    for record in _records(host_dir, PHASES_FILE):
        if record["phase"] == "start-up":
            runs.append([])
        elif record["phase"] == "training":
            runs[-1].append(record["epoch"])
    return runs


def _metric_epochs(log_text: str) -> list[int]:
    return [int(e) for e in re.findall(EPOCH_REGEX, log_text, re.M)]


def test_a_stopped_two_host_job_resumes_every_rank_from_the_same_checkpoint(tiny_dataset, tmp_path):
    """SIGTERM reaches algo-2's rank alone (a spot interruption of one host) once epoch 1 is done: the
    ranks agree to stop at the same step, rank 0 checkpoints, both exit 0. The same job restarted on the
    same trees resumes both ranks after the checkpoint's epoch and ends with one artifact."""
    epochs = 3
    hp = {**FAST_HP, "epochs": epochs, "batch-size": 8, "debugger": False, "seed": 5}
    env = {**FAST_FAULTS, "TRAINING_JOB_NAME": "resume-two-hosts"}   # a restart keeps the job's name

    def start():
        return MultiHostJob(tmp_path / "job", hp, _channels(tiny_dataset), 2, env=env).start()

    job = start()
    try:
        epoch_1_done = job.main.wait_for(lambda: parse_metric("validation:accuracy", job.main.log_text()),
                                         timeout=300)
        assert epoch_1_done, job.main.log_text()[-3000:]
        # algo-2's stop, as SageMaker stops one host: the signal goes past the toolkit's torchrun
        # to the rank (container_train.toolkit_processes), and torchrun,
        # which was not signalled itself, exits 0 once its rank has stopped cleanly.
        assert _trainer_of(job.jobs[1]) is not None
        job.jobs[1].stop()
        stopped = job.wait_all(timeout=300)
    finally:
        job.kill()
    assert all(r.ok for r in stopped), [f"{r}\n{r.log_text[-3000:]}" for r in stopped]
    host1, host2 = (j.job_dir for j in job.jobs)
    first = stopped[0].metrics
    assert first["status"] == "stopped" and "another host" in first["stopped_by"], first
    done = first["epochs_completed"]
    assert 1 <= done < epochs
    assert checkpointing.load_checkpoint(host1 / "checkpoints")["epoch"] == done
    assert _metric_epochs(stopped[0].log_text) == [e for e in range(1, done + 1) for _ in ("train", "valid")]
    assert not stopped[0].metric("test:accuracy")

    restarted = start()
    try:
        resumed = restarted.wait(timeout=600)
    finally:
        restarted.kill()
    assert resumed.ok, f"{resumed.failure_reason}\n{resumed.log_text[-4000:]}"
    assert re.search(rf"resumed from checkpoint \S+: {done} of {epochs} epochs done", resumed.log_text)
    # Both ranks trained the same epochs in each run, the second run from the one after the checkpoint's.
    runs = _training_epochs_per_run(host1)
    assert len(runs) == 2 and runs == _training_epochs_per_run(host2), (runs, _training_epochs_per_run(host2))
    assert runs[1] == list(range(done + 1, epochs + 1))
    steps = [[(r["epoch"], r["step"]) for r in _records(h, STEP_TIMINGS_FILE) if r["mode"] == "TRAIN"]
             for h in (host1, host2)]
    assert steps[0] == steps[1]                 # ... and stopped at the same step
    # The metric lines carry on where the stopped run's ended: every epoch once over the two runs.
    assert _metric_epochs(resumed.log_text) == [e for e in range(done + 1, epochs + 1) for _ in ("train", "valid")]
    assert len(resumed.metric("test:accuracy")) == 1 and not METRIC_LINE.search(restarted.jobs[1].log_text())
    final = resumed.metrics
    assert final["status"] == "completed" and final["resumed_from_epoch"] == done
    assert [h["epoch"] for h in final["history"]] == list(range(1, epochs + 1))
    assert final["world_size"] == 2 and final["test"]["images"] == 16
    assert (host1 / "model" / "model.pth").is_file() and not any((host2 / "model").iterdir())
    assert not (host2 / "checkpoints" / "checkpoint.pth").exists()


def test_a_host_that_never_joins_fails_the_job_after_the_rendezvous_timeout(tiny_dataset, tmp_path):
    job = MultiHostJob(tmp_path / "job", {**FAST_HP, "debugger": False}, _channels(tiny_dataset), 2,
                       env={**FAST_FAULTS, "BYOC_RENDEZVOUS_TIMEOUT_S": "10"})
    result = job.main.start().wait(timeout=300)           # algo-2 is never started
    assert not result.ok and not result.timed_out
    assert result.failure_reason and re.search(r"timed? ?out|timeout", result.failure_reason, re.I), \
        result.failure_reason


def test_one_host_through_the_launcher_is_a_world_of_one(tiny_dataset, tmp_path):
    hp = {**FAST_HP, "epochs": 1, "debugger": False}
    result = local_training_job(tmp_path / "job", hp, _channels(tiny_dataset), 1, "torch_distributed").start().wait(
        timeout=600)
    assert result.ok, f"{result.failure_reason}\n{result.log_text[-3000:]}"
    assert "torchrun --nnodes 1 --nproc_per_node 1" in result.log_text
    assert result.metrics["world_size"] == 1 and len(result.metric("validation:accuracy")) == 1
