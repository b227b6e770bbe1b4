"""``python -m scripts.rules --tensors DIR --out DIR``: run Debugger rules over a finished job.

    python -m scripts.rules --tensors runs/job/output/tensors --out runs/job/output/data/rules \\
        --rules LossNotDecreasing,ExplodingTensor --param LossNotDecreasing.num_steps=5

Or point at a job's output data dir and let the paths follow the contract:

    python -m scripts.rules --job-output runs/job/output/data

Exit status: 0 when no rule found issues, 1 when one did (with --fail-on-issues), 2 on errors.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .catalog import BUILTIN_RULES
from .results import ERROR, ISSUES_FOUND, rules_dir
from .runner import TensorDirError, job_tensor_dir, run_rules


def _parse_params(items: list[str], names: list[str]) -> dict[str, dict[str, str]]:
    selection: dict[str, dict[str, str]] = {n: {} for n in names}
    for item in items:
        key, sep, value = item.partition("=")
        rule, dot, param = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--param {item!r}: expected Rule.parameter=value")
        if rule not in selection:
            raise SystemExit(f"--param {item!r}: rule {rule} is not selected (--rules)")
        selection[rule][param] = value
    return selection


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.rules", description=__doc__.splitlines()[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--tensors", type=Path, help="smdebug output dir of the job (…/output/tensors)")
    where.add_argument("--job-output", type=Path, help="the job's output data dir (…/output/data)")
    ap.add_argument("--out", type=Path, help="where to write <Rule>.json + rule_results.json "
                    "(default: <job-output>/rules with --job-output, else nothing is written)")
    ap.add_argument("--rules", default=",".join(BUILTIN_RULES),
                    help=f"comma-separated rule names (default: all: {', '.join(BUILTIN_RULES)})")
    ap.add_argument("--param", action="append", default=[], metavar="Rule.name=value",
                    help="override a rule parameter (repeatable)")
    ap.add_argument("--fail-on-issues", action="store_true", help="exit 1 when a rule found issues")
    ap.add_argument("--verbose", action="store_true", help="show smdebug's own log lines")
    args = ap.parse_args(argv)
    if not args.verbose:
        logging.getLogger("smdebug").setLevel(logging.WARNING)

    names = [n.strip() for n in args.rules.split(",") if n.strip()]
    unknown = [n for n in names if n not in BUILTIN_RULES]
    if unknown:
        ap.error(f"unknown rule(s) {', '.join(unknown)}; built-in rules: {', '.join(BUILTIN_RULES)}")
    selection = _parse_params(args.param, names)
    tensor_dir = args.tensors or job_tensor_dir(args.job_output)
    out = args.out or (rules_dir(args.job_output) if args.job_output else None)
    try:
        results = run_rules(tensor_dir, selection, out)
    except (TensorDirError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    width = max(len(r.rule) for r in results)
    for r in results:
        where = f" at step {r.step} ({r.mode} {r.mode_step})" if r.step is not None else ""
        print(f"{r.rule:<{width}}  {r.status:<13}{where}  {r.message}")
        for note in r.notes:
            print(f"{'':<{width}}  note: {note}")
    if out is not None:
        print(f"results: {out}")
    if any(r.status == ERROR for r in results):
        return 2
    if args.fail_on_issues and any(r.status == ISSUES_FOUND for r in results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
