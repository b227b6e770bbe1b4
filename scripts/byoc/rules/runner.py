"""Run rules over a finished job's Debugger tensors (the local stand-in for SageMaker's rule jobs)."""

from __future__ import annotations

import logging
from pathlib import Path

from smdebug.rules.rule_invoker import invoke_rule
from smdebug.trials import create_trial

from byoc.errors import ByocError
from container_train.debugger import TENSORS_DIR

from .base import LocalRule
from .catalog import RuleSelection, make_rule, normalize_selection
from .results import ERROR, ISSUES_FOUND, NO_ISSUES_FOUND, RuleResult, write_results

log = logging.getLogger(__name__)


class TensorDirError(ByocError, FileNotFoundError):
    """The directory holds no smdebug output."""


def check_tensor_dir(tensor_dir: str | Path) -> Path:
    """Fail clearly (instead of smdebug waiting forever) when ``tensor_dir`` has no hook output."""
    path = Path(tensor_dir)
    if not path.is_dir():
        raise TensorDirError(f"Debugger tensor directory {path} does not exist")
    if not any((path / "collections").glob("*/*collections.json")):
        raise TensorDirError(
            f"{path} holds no smdebug collections file (collections/*/*collections.json); "
            "was the job run with the Debugger hook (hyperparameter debugger=true)?"
        )
    return path


def job_tensor_dir(output_data_dir: str | Path) -> Path:
    """Where the trainer's local hook writes tensors for a job whose output data dir is given:
    ``<base>/output/tensors`` next to ``<base>/output/data`` (see container_train.debugger)."""
    return Path(output_data_dir).parent / TENSORS_DIR


def result_of(rule: LocalRule) -> RuleResult:
    """A finished rule's findings as a :class:`RuleResult`."""
    name = type(rule).__name__
    params = rule.parameters_for_report()
    if rule.findings:
        first = rule.findings[0]
        return RuleResult(
            rule=name, status=ISSUES_FOUND, parameters=params, message=first.message,
            step=first.step, mode=first.mode, mode_step=first.mode_step,
            steps_evaluated=rule.steps_evaluated, findings=list(rule.findings),
            violations=rule.violations, notes=list(rule.notes),
        )
    message = f"No issues found in {rule.steps_evaluated} evaluated step(s)"
    return RuleResult(rule=name, status=NO_ISSUES_FOUND, parameters=params, message=message,
                      steps_evaluated=rule.steps_evaluated, notes=list(rule.notes))


def error_result(name: str, parameters: dict, error: BaseException) -> RuleResult:
    return RuleResult(rule=name, status=ERROR, parameters=dict(parameters),
                      message=f"{type(error).__name__}: {error}")


def run_rules(tensor_dir: str | Path, rules: RuleSelection = None,
              out_dir: str | Path | None = None) -> list[RuleResult]:
    """Evaluate ``rules`` (see :mod:`byoc.rules.catalog`) at every saved step of the job whose
    smdebug output is ``tensor_dir``; write ``<Rule>.json`` + ``rule_results.json`` to
    ``out_dir`` (normally ``<output-data>/rules``) when given.

    Bad rule names or parameters raise at once (they are the caller's mistake); a rule that
    crashes while evaluating becomes an ``Error`` result, as on SageMaker.
    """
    selection = normalize_selection(rules)
    trial = create_trial(str(check_tensor_dir(tensor_dir)))
    steps = trial.steps()
    rule_objs = {name: make_rule(name, trial, params) for name, params in selection.items()}
    results = []
    for name, rule in rule_objs.items():
        try:
            if steps:
                invoke_rule(rule, start_step=steps[0], end_step=steps[-1] + 1)
            results.append(result_of(rule))
        except Exception as e:   # noqa: BLE001 - reported per rule, like SageMaker's rule status
            log.exception("rule %s failed", name)
            results.append(error_result(name, rule.parameters_for_report(), e))
    if out_dir is not None:
        write_results(results, out_dir)
    return results
