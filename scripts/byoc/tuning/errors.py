"""The tuning package's user-facing errors; both are :class:`byoc.errors.ByocError`, so the CLI
prints their message as one line without a traceback."""

from __future__ import annotations

from byoc.errors import ByocError


class SpecError(ByocError):
    """The tuning spec is invalid; the message lists every problem, one per line."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid tuning spec {source}:\n{lines}")


class TuningError(ByocError):
    """A tuning run cannot start or continue, or its results cannot be read; the message says why."""
