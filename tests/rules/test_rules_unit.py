"""Rules against real smdebug output from the tiny training loop (tiny_training.py): each
purpose-built bad run makes its rule fire, the healthy run keeps every rule silent."""

from __future__ import annotations

import json

import pytest

from byoc.rules import (
    ISSUES_FOUND,
    NO_ISSUES_FOUND,
    RULES,
    RuleParameterError,
    TensorDirError,
    read_results,
    run_rules,
)


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    out = {}
    for kind in tiny.KINDS:
        d = tmp_path_factory.mktemp(f"tiny-{kind}") / "tensors"
        tiny.train(str(d), kind)
        out[kind] = d
    return out


def _by_rule(results):
    return {r.rule: r for r in results}


def test_healthy_run_keeps_every_rule_silent(runs):
    results = _by_rule(run_rules(runs["healthy"]))
    assert set(results) == set(RULES)
    for r in results.values():
        assert r.status == NO_ISSUES_FOUND, f"{r.rule} fired on the healthy run: {r.message}"
        assert r.steps_evaluated == 36          # 6 epochs x (4 TRAIN + 2 EVAL) steps


@pytest.mark.parametrize(("kind", "rule"), [
    ("exploding", "ExplodingTensor"),
    ("exploding", "LossNotDecreasing"),
    ("frozen", "LossNotDecreasing"),
    ("frozen", "Overtraining"),
    ("vanishing", "VanishingGradient"),
    ("zero_init", "PoorWeightInitialization"),
    ("overfit", "Overfit"),
])
def test_rule_fires_on_its_bad_run(runs, kind, rule):
    result = _by_rule(run_rules(runs[kind], [rule]))[rule]
    assert result.status == ISSUES_FOUND, result.message
    assert result.step is not None and result.findings and result.violations >= 1


def test_exploding_tensor_names_the_nan_tensors_and_the_first_bad_step(runs):
    r = run_rules(runs["exploding"], ["ExplodingTensor"])[0]
    assert "CrossEntropyLoss_output_0" in r.message
    # Every earlier step was finite: re-running on the steps before the first finding stays silent.
    assert r.step > 0 and all(f.step >= r.step for f in r.findings)


def test_only_nan_ignores_infinite_values(runs):
    r_all = run_rules(runs["exploding"], {"ExplodingTensor": {}})[0]
    r_nan = run_rules(runs["exploding"], {"ExplodingTensor": {"only_nan": "True"}})[0]
    assert r_nan.status == ISSUES_FOUND
    assert r_nan.step >= r_all.step       # inf shows up no later than NaN


def test_parameters_come_in_as_strings_like_sagemaker_passes_them(runs):
    r = run_rules(runs["healthy"], {"VanishingGradient": {"threshold": "10"}})[0]
    assert r.parameters == {"threshold": 10.0}
    assert r.status == ISSUES_FOUND        # every gradient is below 10


def test_unknown_parameter_and_bad_value_are_clear_errors(runs):
    with pytest.raises(RuleParameterError, match="has no parameter.*num_step"):
        run_rules(runs["healthy"], {"LossNotDecreasing": {"num_step": 3}})
    with pytest.raises(RuleParameterError, match="mode"):
        run_rules(runs["healthy"], {"LossNotDecreasing": {"mode": "TEST"}})
    with pytest.raises(KeyError, match="unknown rule"):
        run_rules(runs["healthy"], ["NoSuchRule"])


def test_missing_tensor_dir_fails_fast(tmp_path):
    with pytest.raises(TensorDirError, match="does not exist"):
        run_rules(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TensorDirError, match="no smdebug collections"):
        run_rules(tmp_path / "empty")


def test_results_json_per_rule_and_summary(runs, tmp_path):
    results = run_rules(runs["exploding"], ["ExplodingTensor", "VanishingGradient"], tmp_path / "rules")
    summary = json.loads((tmp_path / "rules" / "rule_results.json").read_text())
    assert [r["rule"] for r in summary["rules"]] == ["ExplodingTensor", "VanishingGradient"]
    one = json.loads((tmp_path / "rules" / "ExplodingTensor.json").read_text())
    assert one["status"] == "IssuesFound" and one["step"] == results[0].step
    assert one["parameters"] == {"collection_names": None, "tensor_regex": None, "only_nan": False}
    assert read_results(tmp_path / "rules")[1].status == "NoIssuesFound"


def test_results_are_written_with_their_parameters(runs, tmp_path):
    results = run_rules(runs["frozen"], {"LossNotDecreasing": {"mode": "TRAIN"}, "ExplodingTensor": {}}, tmp_path)
    assert {r.rule: r.status for r in results}["LossNotDecreasing"] == ISSUES_FOUND
    saved = json.loads((tmp_path / "LossNotDecreasing.json").read_text())
    assert saved["parameters"]["mode"] == "TRAIN" and saved["mode"] == "TRAIN"
