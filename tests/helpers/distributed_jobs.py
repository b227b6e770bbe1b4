"""What a 2-host data-parallel job on 127.0.0.1 must show, whether its hosts are processes
(tests/train/test_train_distributed.py) or training containers (tests/containers/test_containers_distributed.py).

The comparison job: ``freeze=head`` on a randomly initialised, frozen resnet18. Each rank extracts the
features of its shard once, then the head trains on them; DDP averages the gradients of the two
halves of every global batch, which is what one host computes on the whole batch, so two hosts with
``batch-size`` b and one host with 2b give the same figures up to float rounding.
"""

from __future__ import annotations

import re

import pytest

from container_train.contract import CHECKPOINT_FILE, METRICS_FILE

# Short bounds, so a broken fault path fails the test instead of hanging it; healthy runs never wait on them.
FAST_FAULTS = {"BYOC_COLLECTIVE_TIMEOUT_S": "60", "BYOC_RENDEZVOUS_TIMEOUT_S": "30"}
HEAD_JOB = {"arch": "resnet18", "pretrained": False, "freeze": "head", "epochs": 3, "image-size": 32,
            "workers": 0, "lr": 0.05, "log-interval-s": 1, "debugger": False, "seed": 3}
METRIC_LINE = re.compile(r"^#metric ", re.M)


def check_one_artifact_and_one_set_of_metric_lines(two, result, one) -> None:
    """``two`` (a MultiHostJob) ended as ``result``; ``one`` is the 1-host run's result. Rank 0 (algo-1)
    alone wrote the artifact, metrics.json and checkpoints and printed the metric lines, one per epoch
    as the 1-host run did; algo-2 printed none."""
    host1, host2 = (job.job_dir for job in two.jobs)
    assert (host1 / "model" / "model.pth").is_file() and not any((host2 / "model").iterdir())
    assert (host1 / "output" / "data" / METRICS_FILE).is_file()
    assert not (host2 / "output" / "data" / METRICS_FILE).exists()
    assert not (host2 / "checkpoints" / CHECKPOINT_FILE).exists()
    assert result.metrics["world_size"] == 2 and one.metrics["world_size"] == 1
    epochs = one.metrics["epochs_completed"]
    assert result.metrics["epochs_completed"] == epochs
    assert len(METRIC_LINE.findall(result.log_text)) == len(METRIC_LINE.findall(one.log_text)) == 2 * epochs + 1
    assert not METRIC_LINE.search(two.jobs[1].log_text())


def check_trains_like_one_host(result, one) -> None:
    """Per epoch the same validation accuracy (every image counted once over the ranks) and the same
    training loss up to float rounding of the split batch, and the same test images."""
    for a, b in zip(result.metrics["history"], one.metrics["history"], strict=True):
        assert a["valid_acc"] == pytest.approx(b["valid_acc"], abs=1e-6), (a, b)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3), (a, b)
    assert result.metrics["test"]["images"] == one.metrics["test"]["images"]
