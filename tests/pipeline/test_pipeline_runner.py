"""The pipeline runner: finished steps are skipped, a failed step says what failed, where its log
is and how to resume, --from-step re-runs from there. (Steps replaced by small functions here; the
real steps run end to end in test_pipeline_tiny.py.)"""

from __future__ import annotations

import inspect
import json

import pytest

from byoc.backends.base import BackendError
from byoc.backends.local import LocalBackend
from byoc.backends.results import Invocation, TrainResult, TuneResult
from byoc.pipeline import page, runner, steps, summary
from byoc.pipeline.state import PipelineState
from byoc.settings import load_settings
from container_train.hyperparameters import Hyperparameters


@pytest.fixture
def fake_steps(monkeypatch):
    calls: list[str] = []
    fail = {"name": None}

    def make(name):
        def fn(ctx):
            calls.append(name)
            if fail["name"] == name:
                raise RuntimeError(f"{name} broke")
            return {"value": name}
        return fn

    fakes = [(n, make(n), n) for n in ("one", "two", "three")]
    monkeypatch.setattr(steps, "STEPS", fakes)
    monkeypatch.setattr(steps, "STEP_NAMES", [s[0] for s in fakes])
    monkeypatch.setattr(runner, "print_summary", lambda state, run_dir, page: None)
    return calls, fail


def _settings(tmp_path):
    return LocalBackend(load_settings(overrides={"run_dir": str(tmp_path / "run")}, environ={}))


def test_failure_then_resume_skips_finished_steps(tmp_path, fake_steps, capsys):
    calls, fail = fake_steps
    settings = _settings(tmp_path)
    fail["name"] = "two"
    assert runner.run_pipeline(settings, profile="tiny") == 1
    out = capsys.readouterr().out
    assert "step two failed" in out and "two broke" in out
    log = tmp_path / "run" / "logs" / "two.log"
    assert str(log) in out.replace("\n", "") and "RuntimeError: two broke" in log.read_text()
    assert f"byoc pipeline --run-dir {tmp_path / 'run'} --profile tiny" in out.replace("\n", "")
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["steps"]["one"]["status"] == "done" and state["steps"]["two"]["status"] == "failed"
    assert "three" not in state["steps"]

    fail["name"] = None
    calls.clear()
    assert runner.run_pipeline(settings, profile="tiny") == 0
    assert calls == ["two", "three"]
    assert "one: done earlier, skipped" in capsys.readouterr().out

    calls.clear()
    assert runner.run_pipeline(settings, profile="tiny") == 0
    assert calls == []
    assert runner.run_pipeline(settings, profile="tiny", from_step="two") == 0
    assert calls == ["two", "three"]


def test_profile_mismatch_and_restart(tmp_path, fake_steps):
    calls, _ = fake_steps
    settings = _settings(tmp_path)
    assert runner.run_pipeline(settings, profile="tiny") == 0
    with pytest.raises(BackendError, match="--restart"):
        runner.run_pipeline(settings, profile="demo")
    calls.clear()
    assert runner.run_pipeline(settings, profile="demo", restart=True) == 0
    assert calls == ["one", "two", "three"]


def test_unknown_from_step(tmp_path, fake_steps):
    with pytest.raises(BackendError, match="unknown step"):
        runner.run_pipeline(_settings(tmp_path), profile="tiny", from_step="nope")


def test_backend_results_survive_the_state_file_typed(tmp_path):
    """What a step records is a backend's typed result as plain data; a resumed run reads the same types
    back (nested results, validated hyperparameters), and a dry run is a field, not an empty answer."""
    hps = Hyperparameters.parse({"lr": "0.01", "pretrained": "false", "epochs": 2})
    tuned = TuneResult(out_dir="tune", best_hyperparameters=hps, best_value=0.9, best_trial=1,
                       final=TrainResult(job="final", model_data="final/output/model.tar.gz", test={"images": 3}))
    state = PipelineState.load(tmp_path)
    state.step("tune").update(status="done", outputs=tuned.to_dict())
    state.save()
    again = TuneResult.from_dict(PipelineState.load(tmp_path).outputs("tune"))
    assert again == tuned
    assert isinstance(again.best_hyperparameters, Hyperparameters) and again.best_hyperparameters["pretrained"] is False
    assert isinstance(again.final, TrainResult) and again.final.model_data.endswith("model.tar.gz")
    assert TrainResult.from_dict({"job": "j", "an_older_key": 1}) == TrainResult(job="j")   # older state files
    assert Invocation("application/json", b"{}").sent is True
    assert Invocation("", b"", sent=False).sent is False


def test_the_pipeline_never_asks_which_backend_runs():
    for module in (runner, steps, page, summary):
        assert "backend.name" not in inspect.getsource(module), module.__name__
