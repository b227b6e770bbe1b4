"""The job's log, as SageMaker reads it: metric lines unprefixed, every other record on one line.

Tuning jobs regex-match the metric lines (:mod:`container_train.contract`); everything else goes
through :mod:`logging` with a timestamp prefix, and a message's line breaks are escaped, so no log
record can start a line that a metric regex would read.
"""

from __future__ import annotations

import logging
import sys

from container_train.contract import one_line


class OneLineFormatter(logging.Formatter):
    """Every log record is one line: line breaks in a message are escaped, so nothing a message
    carries (a file name, an exception text) can start a line of its own."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's own name
        return one_line(super().formatMessage(record))


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


_METRICS = {"printed_here": True}


def print_metrics_here(on: bool) -> None:
    """Whether this process prints the metric lines: in a distributed job rank 0 alone does (with
    values reduced over all ranks), so a tuning job reads one objective per epoch."""
    _METRICS["printed_here"] = on


def print_metric(line: str) -> None:
    """Metric lines go to stdout on their own, unprefixed, flushed: tuning jobs regex-match them."""
    if _METRICS["printed_here"]:
        print(line, flush=True)
