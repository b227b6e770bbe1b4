"""A 2-host data-parallel job as two training containers on 127.0.0.1, playing algo-1 and algo-2.

``byoc.local.multi_host`` in container mode: one ``docker run --network host --add-host algo-1:127.0.0.1
--add-host algo-2:127.0.0.1`` per host, each with its own ``/opt/ml`` tree and resource config; the
image's launcher runs torchrun, master ``algo-1`` as on SageMaker, Gloo over the loopback interface.
The same job checks as the process-mode test (tests/helpers/distributed_jobs.py), on tiny data.
"""

from __future__ import annotations

import pytest

from byoc.datasets.synthetic import make_dataset
from byoc.local.multi_host import MultiHostJob
from byoc.local.training_job import TrainingJob
from container_train.contract import parse_metric
from tests.helpers.distributed_jobs import (
    FAST_FAULTS,
    HEAD_JOB,
    check_one_artifact_and_one_set_of_metric_lines,
    check_trains_like_one_host,
)

pytestmark = [pytest.mark.container, pytest.mark.slow]

JOB = {**HEAD_JOB, "epochs": 2}


@pytest.fixture
def data(tmp_path):
    """3 classes, 8 training, 6 validation and 2 test images each."""
    return make_dataset(tmp_path / "data", num_classes=3, per_class={"train": 8, "valid": 6, "test": 2}, size=40,
                        seed=1)


def test_two_training_containers_train_like_one_with_the_same_global_batch(train_image, data, tmp_path,
                                                                            give_back_to_user):
    for job_dir in ("two", "one"):
        give_back_to_user(train_image, tmp_path / job_dir)
    channels = {"training": data}
    two = MultiHostJob(tmp_path / "two", {**JOB, "batch-size": 4}, channels, 2, image=train_image, env=FAST_FAULTS)
    one = TrainingJob(tmp_path / "one", {**JOB, "batch-size": 8}, channels, image=train_image)
    try:   # the three containers run side by side: a container's start-up is most of its time here
        two.start()
        one.start()
        result, single = two.wait(timeout=600), one.wait(timeout=600)
    finally:
        two.kill()
        one.kill()
    assert result.ok, f"{result.failure_reason}\n{result.log_text[-4000:]}"
    assert single.ok, f"{single.failure_reason}\n{single.log_text[-4000:]}"

    # Each host ran the image's torchrun with algo-1 (its name resolving in the container) as master.
    for host in two.jobs:
        assert "torchrun --nnodes 2 --nproc_per_node 1 --master_addr algo-1" in host.log_text()
    assert "torchrun" not in single.log_text
    check_one_artifact_and_one_set_of_metric_lines(two, result, single)
    # Half of the 24 training images' features on each rank: extracted once over the job, not twice.
    assert "view 1/1: 12 images" in result.log_text and "view 1/1: 24 images" in single.log_text
    check_trains_like_one_host(result, single)


def test_stopping_one_training_container_stops_both_cleanly(train_image, data, tmp_path, give_back_to_user):
    """SageMaker's stop (SIGTERM to a container's PID 1) on algo-2: the image's entry point signals the rank
    under torchrun, the ranks agree to stop, rank 0 checkpoints and saves the model, and both containers
    exit 0 -- not torchrun's failed exit after being signalled itself."""
    give_back_to_user(train_image, tmp_path / "two")
    hp = {**JOB, "freeze": "none", "epochs": 50, "batch-size": 4, "checkpoint": True}
    two = MultiHostJob(tmp_path / "two", hp, {"training": data}, 2, image=train_image, env=FAST_FAULTS)
    try:
        two.start()
        assert two.main.wait_for(lambda: parse_metric("validation:accuracy", two.main.log_text()), timeout=300), \
            two.main.log_text()[-3000:]
        two.jobs[1].stop()
        results = two.wait_all(timeout=300)
    finally:
        two.kill()
    assert all(r.ok for r in results), [f"{r}\n{r.log_text[-3000:]}" for r in results]
    metrics = results[0].metrics
    assert metrics["status"] == "stopped" and metrics["epochs_completed"] < hp["epochs"], metrics
    assert (two.jobs[0].job_dir / "model" / "model.pth").is_file()
    assert "asking the trainer" in two.jobs[1].log_text()
