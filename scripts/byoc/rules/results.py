"""What a rule evaluation produces, and how it is written to disk.

The status names are SageMaker's ``RuleEvaluationStatus`` values (``DescribeTrainingJob`` ->
``DebugRuleEvaluationStatuses``), so a local result reads like the one a SageMaker job reports.

On disk (``container_train.contract``): one ``<RuleName>.json`` per rule plus
``rule_results.json`` (all rules) in ``<output-data>/rules/``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from container_train.contract import RULE_RESULTS_FILE, RULES_DIR

NO_ISSUES_FOUND = "NoIssuesFound"
ISSUES_FOUND = "IssuesFound"
ERROR = "Error"
STATUSES = (NO_ISSUES_FOUND, ISSUES_FOUND, ERROR)

RESULTS_FILE_NAME = Path(RULE_RESULTS_FILE).name
MAX_FINDINGS_KEPT = 50   # a rule that fires at every step would otherwise bloat the JSON


@dataclass
class Finding:
    """One step at which a rule's condition held."""

    step: int                 # global step (smdebug's step numbering across all modes)
    mode: str | None          # TRAIN / EVAL / GLOBAL ...
    mode_step: int | None
    message: str


@dataclass
class RuleResult:
    rule: str
    status: str                               # one of STATUSES
    parameters: dict[str, Any]
    message: str = ""
    step: int | None = None                   # first global step at which the rule fired
    mode: str | None = None
    mode_step: int | None = None
    steps_evaluated: int = 0
    findings: list[Finding] = field(default_factory=list)   # first MAX_FINDINGS_KEPT firings
    violations: int = 0                       # how many steps fired in total
    notes: list[str] = field(default_factory=list)           # deviations / what was not checkable

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuleResult:
        data = dict(data)
        data["findings"] = [Finding(**f) for f in data.get("findings", [])]
        return cls(**data)


def rules_dir(output_data_dir: str | Path) -> Path:
    """Where a job's rule results live: ``<output-data>/rules``."""
    return Path(output_data_dir) / RULES_DIR


def write_results(results: list[RuleResult], out_dir: str | Path) -> Path:
    """Write ``<Rule>.json`` per rule and ``rule_results.json``; returns the latter's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for result in results:
        (out / f"{result.rule}.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    summary = out / RESULTS_FILE_NAME
    summary.write_text(json.dumps({"rules": [r.to_dict() for r in results]}, indent=2) + "\n")
    return summary


def read_results(path: str | Path) -> list[RuleResult]:
    """Read ``rule_results.json`` (or the rules dir holding it)."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE_NAME
    data = json.loads(p.read_text())
    return [RuleResult.from_dict(r) for r in data["rules"]]
