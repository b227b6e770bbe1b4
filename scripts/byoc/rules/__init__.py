"""Local SageMaker Debugger rules on the open-source ``smdebug`` trial/rule API.

The open-source ``smdebug`` package ships the rule framework (``Rule``, ``invoke_rule``,
trials) but none of SageMaker's built-in rule implementations; this package provides the ones
our training jobs are configured with -- VanishingGradient, ExplodingTensor, LossNotDecreasing,
Overfit, Overtraining, PoorWeightInitialization -- with SageMaker's parameter names and defaults,
results in SageMaker's status vocabulary, and the StopTraining action for local jobs.

* :func:`run_rules` -- evaluate rules over a finished job's tensors, write JSON results.
* :class:`RuleWatcher` -- evaluate rules while a job runs and stop it when a ``stop_on`` rule fires
  (``byoc train --stop-on RULE``).
* ``byoc report --job-dir DIR`` -- the command line for them.
"""

from .base import LocalRule, RuleParameterError
from .catalog import RULE_NAMES, RULES, make_rule, normalize_selection
from .loss_rules import LossNotDecreasing, Overfit, Overtraining
from .results import (
    ERROR,
    ISSUES_FOUND,
    NO_ISSUES_FOUND,
    Finding,
    RuleResult,
    read_results,
    rules_dir,
    write_results,
)
from .runner import TensorDirError, job_tensor_dir, run_rules
from .tensor_rules import ExplodingTensor, PoorWeightInitialization, VanishingGradient
from .watcher import RuleWatcher

__all__ = [
    "RULES", "RULE_NAMES", "ERROR", "ISSUES_FOUND", "NO_ISSUES_FOUND", "ExplodingTensor", "Finding",
    "LocalRule", "LossNotDecreasing", "Overfit", "Overtraining", "PoorWeightInitialization",
    "RuleParameterError", "RuleResult", "RuleWatcher", "TensorDirError", "VanishingGradient",
    "job_tensor_dir", "make_rule", "normalize_selection", "read_results", "rules_dir", "run_rules",
    "write_results",
]
