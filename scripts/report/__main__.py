"""``python -m scripts.report --job-output DIR [--out FILE]``: write a job's profiler report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .builder import build_profiler_report
from .data import ProfileDataError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.report", description=__doc__)
    ap.add_argument("--job-output", type=Path, required=True,
                    help="the job's output data dir (SM_OUTPUT_DATA_DIR, e.g. runs/job/output/data)")
    ap.add_argument("--out", type=Path, help="HTML file to write (default: <job-output>/profiler-report.html)")
    args = ap.parse_args(argv)
    try:
        path = build_profiler_report(args.job_output, args.out)
    except ProfileDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
