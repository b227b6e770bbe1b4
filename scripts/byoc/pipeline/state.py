"""``<run dir>/state.json``: which pipeline steps finished, with their outputs.

A finished step is skipped when the pipeline runs again. A dry run keeps its state in memory only,
so printing the requests never marks a step done.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from byoc_common import durable

STATE_FILE = "state.json"


@dataclass
class PipelineState:
    path: Path | None                      # None: in memory only (dry run)
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, run_dir: Path, persist: bool = True) -> PipelineState:
        path = run_dir / STATE_FILE
        data = json.loads(path.read_text()) if persist and path.is_file() else {}
        data.setdefault("steps", {})
        return cls(path if persist else None, data)

    def save(self) -> None:
        if self.path is None:
            return
        durable.write_json(self.path, self.data, default=str)

    def step(self, name: str) -> dict:
        return self.data["steps"].setdefault(name, {})

    def done(self, name: str) -> bool:
        return self.data["steps"].get(name, {}).get("status") == "done"

    def outputs(self, name: str) -> dict:
        return self.data["steps"].get(name, {}).get("outputs", {})

    def forget_from(self, names: list[str], first: str) -> None:
        """Mark ``first`` and every step after it as not run."""
        for name in names[names.index(first):]:
            self.data["steps"].pop(name, None)
