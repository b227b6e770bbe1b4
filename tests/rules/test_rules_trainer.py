"""Rules on real training jobs: the project's trainer (byoc.local.training_job, process mode)
with the Debugger hook saving weights, gradients and biases at every step and the losses once per
epoch and mode (the epoch's mean training loss, the whole validation set's loss).

Why these parameters (tiny runs: 4 training steps per epoch, a few epochs):

* Healthy run: ResNet18 from random weights (no ImageNet weights offline), full-batch SGD at
  lr 0.003, 12 epochs of one training step (tests/helpers/training_jobs.py). Silent:
  ExplodingTensor, VanishingGradient, Overtraining (defaults), LossNotDecreasing in TRAIN mode
  with its default num_steps=10 (the default mode picks EVAL, which this run has too few steps
  of to compare at all -- "silent" would prove nothing; 12 TRAIN steps give one comparison,
  step 0 against step 10). Overfit and
  PoorWeightInitialization are left out: after a few steps from random weights, eval-mode BatchNorm
  gives a validation loss far above the training loss (Overfit correctly reports that), and
  layer4's gradients of a fresh ResNet are narrower than the 0.001 spread the rule demands.
* Exploding run: lr 50, SGD, no clipping -> the weights blow up within a few steps and the
  trainer ends the job at the first non-finite loss (its divergence guard) inside epoch 1, before
  any epoch loss is recorded: ExplodingTensor sees the NaN weights and gradients.
* Loss that cannot fall: pretrained EfficientNet-Lite0 with a frozen backbone (its BatchNorm
  stays in eval mode) and lr 1e-12, so the model does not change. LossNotDecreasing with
  SageMaker's defaults (EVAL mode, num_steps=10) compares the validation loss of epoch 1 (EVAL
  step 3, 4 validation steps an epoch) with epoch 4's (EVAL step 15): identical, 0% < diff_percent.
* StopTraining: the same cannot-learn job configured for 20 epochs, run by `byoc train --stop-on
  LossNotDecreasing` (the rule watched live). (An exploding job is a poor subject here: the trainer's
  own divergence guard ends it at the first NaN loss, racing the watcher.)
"""

from __future__ import annotations

import json

import pytest

from byoc.rules import ISSUES_FOUND, NO_ISSUES_FOUND, job_tensor_dir, rules_dir, run_rules
from container_train.contract import STEP_TIMINGS_FILE

pytestmark = pytest.mark.slow


def _by_rule(results):
    return {r.rule: r for r in results}


def test_healthy_job_keeps_the_rules_silent(healthy_job):
    tensors = job_tensor_dir(healthy_job.output_data_dir)
    results = _by_rule(run_rules(
        tensors,
        {"ExplodingTensor": {}, "VanishingGradient": {}, "Overtraining": {},
         "LossNotDecreasing": {"mode": "TRAIN"}},
        rules_dir(healthy_job.output_data_dir),
    ))
    for r in results.values():
        assert r.status == NO_ISSUES_FOUND, f"{r.rule} fired on the healthy run: {r.message}"
    assert results["ExplodingTensor"].steps_evaluated >= 12
    # LossNotDecreasing really compared something: there are more than num_steps=10 TRAIN steps.
    records = (healthy_job.output_data_dir / STEP_TIMINGS_FILE).read_text().splitlines()
    assert sum(json.loads(r)["mode"] == "TRAIN" for r in records) > 10
    assert (rules_dir(healthy_job.output_data_dir) / "rule_results.json").is_file()


def test_exploding_learning_rate_fires_exploding_tensor(tmp_path, dataset, trainer):
    job = trainer(tmp_path / "job", dataset, lr=50, optimizer="sgd", epochs=1)
    results = _by_rule(run_rules(job_tensor_dir(job.output_data_dir), ["ExplodingTensor"]))
    assert results["ExplodingTensor"].status == ISSUES_FOUND, results["ExplodingTensor"].message
    assert "NaN" in results["ExplodingTensor"].message


FROZEN_HP = {"arch": "efficientnet_lite0", "pretrained": "true", "freeze": "head", "lr": 1e-12}


def _valid_steps_per_epoch(dataset, batch_size=8) -> int:
    images = sum(1 for p in (dataset / "valid").rglob("*") if p.is_file())
    return -(-images // batch_size)


def test_model_that_cannot_learn_fires_loss_not_decreasing(tmp_path, dataset, trainer):
    job = trainer(tmp_path / "job", dataset, epochs=4, **FROZEN_HP)
    records = [json.loads(x) for x in (job.output_data_dir / STEP_TIMINGS_FILE).read_text().splitlines()]
    eval_steps_per_epoch = sum(r["mode"] == "EVAL" and r["epoch"] == 1 for r in records)
    assert eval_steps_per_epoch == _valid_steps_per_epoch(dataset) == 4
    result = run_rules(job_tensor_dir(job.output_data_dir), ["LossNotDecreasing"])[0]   # SageMaker's defaults
    assert result.status == ISSUES_FOUND, result.message
    assert "EVAL step 3 -> 15" in result.message and "fell only 0.000%" in result.message


def test_byoc_train_stop_on_ends_a_job_early(tmp_path, base_hp, dataset, capsys):
    """`byoc train --stop-on`: the local StopTraining action (a RuleWatcher on the job's tensors)."""
    from byoc.cli import main

    epochs = 20
    hps = {**base_hp, **FROZEN_HP, "epochs": epochs, "checkpoint": "true"}
    steps = _valid_steps_per_epoch(dataset)
    argv = ["train", "--data", str(dataset), "--job-dir", str(tmp_path / "job"), "--run-dir", str(tmp_path),
            "--stop-on", "LossNotDecreasing", "--rule-param", "LossNotDecreasing.mode=EVAL",
            "--rule-param", f"LossNotDecreasing.num_steps={steps}",
            *[a for k, v in hps.items() for a in ("--hp", f"{k}={v}")]]
    assert main(argv) == 0                                     # SIGTERM -> checkpoint, clean exit
    answer = json.loads(capsys.readouterr().out)
    assert "LossNotDecreasing fired" in answer["stopped_by_rule"]
    metrics = json.loads((tmp_path / "job" / "output" / "data" / "metrics.json").read_text())
    assert metrics["status"] == "stopped"
    assert metrics["epochs_completed"] < epochs
    saved = json.loads((tmp_path / "job" / "output" / "data" / "rules" / "LossNotDecreasing.json").read_text())
    assert saved["status"] == "IssuesFound"
