"""The real trainer, run through the sagemaker-training toolkit against a temporary /opt/ml tree."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from byoc.local.training_job import TrainingJob, run_training_job
from byoc_common.artifact import load_model_artifact
from byoc_common.cpu_features import cpu_has_bf16
from container_train import contract
from tests.train.train_helpers import FAST_HP, add_odd_images

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]   # smdebug's generated protobuf code

STEP_FIELDS = {"ts", "epoch", "step", "mode", "batch_size", "data_wait_s", "compute_s", "step_s"}
SYSTEM_FIELDS = {"ts", "cpu_percent", "cpu_per_core", "mem_percent", "mem_used_mb", "proc_rss_mb", "gpu"}


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory):
    """One complete job: odd and unreadable images in train, DataLoader workers, tensors every step."""
    from byoc.datasets.synthetic import make_dataset

    root = tmp_path_factory.mktemp("job")
    data = make_dataset(root / "data", num_classes=4, per_class={"train": 8, "valid": 4, "test": 4}, size=48)
    add_odd_images(data / "train" / "001.Class_a")
    hp = {**FAST_HP, "workers": 1, "debugger-save-interval": 1}
    return run_training_job(root / "job", hp, {"training": data}, timeout=600)


def test_job_succeeds_and_writes_the_model_artifact(finished_job):
    r = finished_job
    assert r.ok, r.log_text[-3000:]
    assert r.failure_reason is None
    assert (r.job_dir / "output" / "success").is_file()       # written by the toolkit
    model, classes, config = load_model_artifact(r.model_dir)
    assert classes == ["Class_a", "Class_b", "Class_c", "Class_d"]
    assert config.arch == "resnet18" and config.image_size == 32 and config.num_classes == 4
    state = torch.load(r.model_dir / "model.pth", weights_only=True)
    assert state["fc.weight"].shape == (4, 512)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 4)


def test_amp_default_trains_in_bf16_where_the_cpu_has_it_and_says_so(finished_job):
    """FAST_HP leaves ``amp`` at its default (true): on a CPU with AVX-512 BF16 or AMX the job's log
    names bfloat16 autocast; elsewhere it says why it stayed float32. The artifact is float32 either way."""
    r = finished_job
    if cpu_has_bf16():
        assert "mixed precision: bfloat16 autocast and channels-last memory" in r.log_text
    else:
        assert "float32: this CPU has no bfloat16 arithmetic" in r.log_text
    state = torch.load(r.model_dir / "model.pth", weights_only=True)
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float32}


def test_metric_lines_match_the_metric_definitions(finished_job):
    r = finished_job
    assert len(r.metric("train:loss")) == 2
    assert len(r.metric("validation:loss")) == 2
    accuracies = r.metric("validation:accuracy")
    assert len(accuracies) == 2 and all(0 <= a <= 1 for a in accuracies)
    assert len(r.metric("test:loss")) == 1 and len(r.metric("test:accuracy")) == 1
    epoch_regex = re.compile(contract.EPOCH_REGEX)
    assert [int(m.group(1)) for m in map(epoch_regex.search, r.log_text.splitlines()) if m] == [1, 1, 2, 2]


def test_metrics_json(finished_job):
    m = finished_job.metrics
    assert m["status"] == "completed" and m["epochs_completed"] == 2
    assert [h["epoch"] for h in m["history"]] == [1, 2]
    assert m["best_valid_accuracy"] == max(h["valid_acc"] for h in m["history"])
    assert m["test"]["accuracy"] == pytest.approx(finished_job.metric("test:accuracy")[0], abs=1e-6)
    assert m["model_weights"] == "best_validation"
    assert m["hyperparameters"]["arch"] == "resnet18" and m["hyperparameters"]["workers"] == 1


def test_unreadable_images_are_skipped_and_counted(finished_job):
    m = finished_job.metrics
    assert m["skipped_images"] == 2
    assert sorted(p.rsplit("/", 1)[-1] for p in m["skipped_files"]) == ["notes.jpg", "truncated.jpg"]
    assert m["images"]["train"] == 32 + 7        # the 5 odd-mode images are used, the 2 broken ones not
    assert "skipping unreadable image" in finished_job.log_text


def test_debugger_tensors_are_readable_with_create_trial(finished_job):
    from smdebug import modes
    from smdebug.trials import create_trial

    trial = create_trial(str(finished_job.job_dir / "output" / "tensors"))
    losses = trial.tensor_names(collection="losses")
    gradients = trial.tensor_names(collection="gradients")
    assert losses and gradients
    assert any("fc.weight" in g for g in gradients)
    assert losses == ["EpochLoss_output_0"]       # one value per epoch and mode, not per batch
    loss = trial.tensor(losses[0])
    assert loss.steps(mode=modes.TRAIN) == [2, 5]  # the last of 3 training steps in each of 2 epochs
    assert len(loss.steps(mode=modes.EVAL)) == 2   # one validation loss per epoch
    train_values = [float(loss.value(s, mode=modes.TRAIN)) for s in loss.steps(mode=modes.TRAIN)]
    valid_values = [float(loss.value(s, mode=modes.EVAL)) for s in loss.steps(mode=modes.EVAL)]
    # They are the epoch means the trainer printed as metrics.
    assert train_values == pytest.approx(finished_job.metric("train:loss"), abs=1e-5)
    assert valid_values == pytest.approx(finished_job.metric("validation:loss"), abs=1e-5)
    grad = trial.tensor(next(g for g in gradients if "fc.weight" in g))
    assert grad.value(grad.steps(mode=modes.TRAIN)[0], mode=modes.TRAIN).shape == (4, 512)


def test_profiler_records(finished_job):
    out = finished_job.output_data_dir
    steps = [json.loads(line) for line in (out / contract.STEP_TIMINGS_FILE).read_text().splitlines()]
    assert {s["mode"] for s in steps} == {"TRAIN", "EVAL"}
    assert all(STEP_FIELDS <= set(s) for s in steps)
    assert all(s["data_wait_s"] >= 0 and s["compute_s"] > 0 for s in steps)
    train_steps = [s for s in steps if s["mode"] == "TRAIN"]
    assert sum(s["batch_size"] for s in train_steps) == 2 * 37      # 2 epochs of the readable images
    samples = [json.loads(line) for line in (out / contract.SYSTEM_METRICS_FILE).read_text().splitlines()]
    assert samples and all(SYSTEM_FIELDS <= set(s) for s in samples)
    assert 0 <= samples[-1]["cpu_percent"] <= 100 and samples[-1]["proc_rss_mb"] > 50


def test_progress_lines_are_throttled(finished_job):
    progress = [line for line in finished_job.log_text.splitlines() if "[train] epoch" in line]
    assert progress and all(re.search(r"img/s .*ETA", line) for line in progress)
    assert len(progress) <= 2 * 3        # at most first, last and timed lines per epoch here


def test_killed_job_resumes_from_its_checkpoint(tiny_dataset, tmp_path):
    hp = {**FAST_HP, "epochs": 8, "debugger": False}
    checkpoints = tmp_path / "s3-checkpoints"
    first = TrainingJob(tmp_path / "job1", hp, {"training": tiny_dataset}, checkpoint_dir=checkpoints).start()
    assert first.wait_for(lambda: (checkpoints / contract.CHECKPOINT_FILE).exists(), timeout=300, poll_s=0.05)
    first.kill()                                          # spot instance gone: no chance to clean up
    killed = first.wait(timeout=60)
    assert killed.returncode != 0
    done_before = torch.load(checkpoints / contract.CHECKPOINT_FILE, weights_only=True)["epoch"]
    assert 1 <= done_before < 8, "the job must be killed mid-way for this test to mean anything"

    second = run_training_job(tmp_path / "job2", hp, {"training": tiny_dataset}, checkpoint_dir=checkpoints,
                              timeout=600)
    assert second.ok, second.log_text[-3000:]
    # The trainer sees the checkpoint dir where SageMaker puts it: <base>/checkpoints.
    assert f"resumed from checkpoint '{second.job_dir}/checkpoints/{contract.CHECKPOINT_FILE}': " \
        f"{done_before} of 8 epochs done" in second.log_text
    epochs_run = sorted({int(e) for e in re.findall(r"#metric epoch=(\d+) train_loss", second.log_text)})
    assert epochs_run == list(range(done_before + 1, 9))
    m = second.metrics
    assert m["resumed_from_epoch"] == done_before and m["epochs_completed"] == 8
    assert [h["epoch"] for h in m["history"]] == list(range(1, 9))   # history carried over


def test_sigterm_stops_early_saves_the_model_and_a_restart_finishes(tiny_dataset, tmp_path):
    hp = {**FAST_HP, "epochs": 8, "debugger-save-interval": 1}
    job = TrainingJob(tmp_path / "job", hp, {"training": tiny_dataset}).start()
    assert job.wait_for(lambda: (job.checkpoint_dir / contract.CHECKPOINT_FILE).exists(), timeout=300, poll_s=0.05)
    job.stop()
    r = job.wait(timeout=120)
    assert r.ok, r.log_text[-3000:]                      # a stopped job still succeeds and uploads its model
    assert r.stopped_early and r.metrics["stopped_by"] == "SIGTERM"
    assert "stopped early (SIGTERM)" in r.log_text
    assert r.metrics["epochs_completed"] < 8
    load_model_artifact(r.model_dir)
    state = torch.load(r.checkpoint_dir / contract.CHECKPOINT_FILE, weights_only=True)
    assert state["epoch"] == r.metrics["epochs_completed"]

    again = run_training_job(tmp_path / "job", hp, {"training": tiny_dataset}, timeout=600)
    assert again.ok, again.log_text[-3000:]
    assert again.metrics["status"] == "completed" and again.metrics["epochs_completed"] == 8
    # The first run's tensors were moved aside; the new run's are readable on their own.
    assert list((tmp_path / "job" / "output").glob("tensors-before-epoch-*"))
    from smdebug.trials import create_trial

    assert create_trial(str(tmp_path / "job" / "output" / "tensors")).tensor_names(collection="losses")


# ---- bad inputs: non-zero exit and a clear failure file -------------------------------------------

def _break_classes(data):
    shutil.rmtree(data / "valid" / "002.Class_b")


def _empty_valid_split(data):
    for d in (data / "valid").iterdir():
        shutil.rmtree(d)
        d.mkdir()


BAD_INPUTS = {
    "missing training channel": (lambda d, t: {"validation": d / "valid"}, {}, "'training' channel is missing"),
    "empty training channel": (lambda d, t: {"training": t}, {}, "'training' channel is empty"),
    "class mismatch": (lambda d, t: (_break_classes(d), {"training": d})[1], {},
                       "missing from valid: 002.Class_b"),
    "split without images": (lambda d, t: (_empty_valid_split(d), {"training": d})[1], {},
                             "valid split has no images"),
    "unknown hyperparameter": (lambda d, t: {"training": d}, {"learning_rate": "0.1"},
                               "unknown hyperparameter(s): learning_rate"),
    "negative lr": (lambda d, t: {"training": d}, {"lr": "-1"}, "lr='-1' must be > 0"),
    "batch-size not a number": (lambda d, t: {"training": d}, {"batch-size": "abc"},
                                "batch-size='abc' is not an integer"),
    "unknown arch": (lambda d, t: {"training": d}, {"arch": "vgg16"}, "arch='vgg16' is not one of"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_with_a_clear_reason(case, dataset_copy, tmp_path):
    make_channels, extra_hp, expected = BAD_INPUTS[case]
    empty = tmp_path / "empty"
    empty.mkdir()
    channels = make_channels(dataset_copy, empty)
    r = run_training_job(tmp_path / "job", {**FAST_HP, **extra_hp}, channels, timeout=300)
    assert r.returncode != 0
    assert r.failure_reason is not None and expected in r.failure_reason, r.failure_reason
    assert len(r.failure_reason.splitlines()) == 1                  # one clear line, no traceback
    assert expected in r.log_text
    assert not (r.model_dir / "model.pth").exists()


def test_pretrained_download_failure_explains_the_alternatives(tiny_dataset, tmp_path):
    # A closed local port as proxy: the download fails the same way with or without internet.
    env = {"TORCH_HOME": str(tmp_path / "torch-home"), "HTTPS_PROXY": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9"}
    r = run_training_job(tmp_path / "job", {**FAST_HP, "pretrained": True, "freeze": "layer4"},
                         {"training": tiny_dataset}, env=env, timeout=300)
    assert r.returncode != 0
    assert "could not download ImageNet weights for resnet18" in r.failure_reason
    assert "'pretrained' input channel" in r.failure_reason and "pretrained=false" in r.failure_reason


def test_pretrained_channel_weights_are_used(tiny_dataset, tmp_path):
    from byoc_common.architectures import build_backbone

    weights = tmp_path / "pretrained"
    weights.mkdir()
    backbone = build_backbone("resnet18")
    torch.nn.init.constant_(backbone.conv1.weight, 0.01)
    torch.save(backbone.state_dict(), weights / "resnet18-imagenet.pth")
    hp = {**FAST_HP, "pretrained": True, "freeze": "head", "epochs": 1}
    r = run_training_job(tmp_path / "job", hp, {"training": tiny_dataset, "pretrained": weights}, timeout=300)
    assert r.ok, r.log_text[-3000:]
    assert "from pretrained channel ('resnet18-imagenet.pth')" in r.log_text
    model, _, _ = load_model_artifact(r.model_dir)
    assert torch.allclose(model.conv1.weight, torch.full_like(model.conv1.weight, 0.01))  # frozen, loaded
