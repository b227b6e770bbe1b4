"""RuleWatcher on a live run of the tiny training loop (a real subprocess writing real tensors)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from byoc.rules import ISSUES_FOUND, RuleWatcher


def _start(tiny_path, out_dir, kind, epochs, sleep=0.05):
    return subprocess.Popen(
        [sys.executable, str(tiny_path), str(out_dir), "--kind", kind, "--epochs", str(epochs),
         "--sleep", str(sleep)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _train_steps(output: str) -> int:
    return int(output.rsplit("train_steps=", 1)[1].split()[0])


@pytest.fixture
def tiny_path(tiny):
    return tiny.__file__


def test_stop_training_sends_sigterm_when_the_rule_fires(tmp_path, tiny_path):
    epochs = 300                                  # 1200 training steps if nobody stops it
    proc = _start(tiny_path, tmp_path / "tensors", "exploding", epochs)
    with RuleWatcher(tmp_path / "tensors", proc, rules=["ExplodingTensor", "VanishingGradient"],
                     stop_on=["ExplodingTensor"], out_dir=tmp_path / "rules", poll_interval_s=0.3) as w:
        output, _ = proc.communicate(timeout=300)
    assert w.error is None
    assert w.stopped_training and w.stop_reason.startswith("ExplodingTensor fired at step")
    assert proc.returncode == 0                  # the loop handled SIGTERM and closed its hook
    assert _train_steps(output) < epochs * 4
    results = {r.rule: r for r in w.results}
    assert results["ExplodingTensor"].status == ISSUES_FOUND
    saved = json.loads((tmp_path / "rules" / "rule_results.json").read_text())
    assert {r["rule"] for r in saved["rules"]} == {"ExplodingTensor", "VanishingGradient"}


def test_watcher_leaves_a_healthy_run_alone(tmp_path, tiny_path):
    proc = _start(tiny_path, tmp_path / "tensors", "healthy", epochs=3, sleep=0.0)
    with RuleWatcher(tmp_path / "tensors", proc, rules=["ExplodingTensor", "LossNotDecreasing"],
                     stop_on=["ExplodingTensor", "LossNotDecreasing"], poll_interval_s=0.3) as w:
        output, _ = proc.communicate(timeout=300)
    assert not w.stopped_training, w.stop_reason
    assert _train_steps(output) == 3 * 4         # ran to the end
    # Every saved step was evaluated after the process ended (3 epochs x (4 TRAIN + 2 EVAL)).
    assert all(r.steps_evaluated == 18 for r in w.results)


def test_stop_on_must_name_a_selected_rule(tmp_path):
    with pytest.raises(ValueError, match="not selected"):
        RuleWatcher(tmp_path, None, rules=["VanishingGradient"], stop_on=["ExplodingTensor"])
